"""A table added by `table add` has staging only: its marts are "not modelled", never a
missing layer and never a crash; its suite comes from its contract. Hand-written figures."""

from __future__ import annotations

import pytest

from pipeline.checks import rules
from pipeline.checks.probes import LayerCounts, SourceState, marts_relation
from pipeline.config import ConfigError, TableConfig
from pipeline.config.contracts import contract_from_ddl, write_contract
from pipeline.steps.contract_suite import contract_suite, staging_type, suite_names
from pipeline.steps.validate import SuiteConfigError, layer_relation
from pipeline.stores.queries import relations
from tests.support.settings import make_settings
from tests.support.shared import shared_file


def staging_only(**fields) -> TableConfig:
    return TableConfig.model_validate(
        {
            "name": "product_photo",
            "source_table": "ProductImage",
            "topic": "cord.ConcordDb.dbo.ProductImage",
            "raw_prefix": "product_photo/raw",
            "bronze_table": "product_photo_cdc",
            "staging_relation": "stg_product_photo",
            **fields,
        }
    )


def test_a_table_without_marts_or_selector_gets_its_staging_models():
    table = staging_only()
    assert table.marts_relation is None
    assert table.dbt_selector == "base_product_photo stg_product_photo"
    with_marts = staging_only(marts_relation="dim_product_photo")
    assert with_marts.dbt_selector == "base_product_photo stg_product_photo dim_product_photo"
    assert staging_only(dbt_selector="tag:images").dbt_selector == "tag:images"  # a configured one is kept
    with pytest.raises(ConfigError, match="tables.marts_relation='dim-x' is not a plain SQL identifier"):
        staging_only(marts_relation="dim-x")


def test_layers_of_a_staging_only_table(tmp_path):
    settings = make_settings(tmp_path)
    table = staging_only()
    assert relations(settings.file, table) == {
        "bronze": ("bronze", "product_photo_cdc"),
        "staging": ("staging_staging", "stg_product_photo"),
    }
    with pytest.raises(ConfigError, match="'product_photo' has no marts layer"):
        marts_relation(settings, table)
    with pytest.raises(SuiteConfigError, match="'product_photo' has no marts layer"):
        layer_relation(settings, table, "marts")


def test_reconciliation_of_a_staging_only_table_leaves_the_marts_out():
    good = rules.reconciliation(LayerCounts("product_photo", 40, 10, 10, 9, None, marts_modelled=False))
    assert good.status == "pass"
    assert good.evidence == (
        "Bronze CDC 40, Bronze (distinct keys) 10, Staging (All) 10, Staging (Active) 9, marts not modelled"
    )
    bad = rules.reconciliation(LayerCounts("product_photo", 40, 10, 8, 7, None, marts_modelled=False))
    assert bad.status == "fail" and "Staging (All) 8" in bad.evidence
    # A modelled marts relation that is missing is still a failure.
    missing = rules.reconciliation(LayerCounts("product", 40, 10, 10, 9, None))
    assert missing.status == "fail" and "a layer is missing" in missing.evidence
    assert LayerCounts("product_photo", 40, 10, 10, 9, None, marts_modelled=False).mismatches() == set()
    staged = rules.source_reconciliation(SourceState(9, None), 9, "staging")
    assert staged.status == "pass" and staged.evidence == "source 9 active row(s), staging 9"
    assert rules.not_modelled(staging_only()).status == "skip"


def test_the_suite_of_a_product_contract():
    contract = contract_from_ddl(shared_file("contract/concord_product.sqlserver.sql").read_text(), "product")
    suite = contract_suite(contract)
    assert suite["layer"] == "staging"
    first = [(e["type"], e["kwargs"]) for e in suite["expectations"][:2]]
    assert first == [
        ("expect_column_values_to_not_be_null", {"column": "product_id"}),
        ("expect_column_values_to_be_unique", {"column": "product_id"}),
    ]
    types = {e["kwargs"]["column"]: e["kwargs"]["type_"] for e in suite["expectations"][2:]}
    assert len(types) == 49
    assert {k: types[k] for k in ("product_id", "net_uid", "created", "deleted", "weight", "source_amg_id")} == {
        "product_id": "BIGINT",
        "net_uid": "TEXT",
        "created": "TIMESTAMP WITHOUT TIME ZONE",
        "deleted": "BOOLEAN",
        "weight": "DOUBLE PRECISION",
        "source_amg_id": "BYTEA",
    }


@pytest.mark.parametrize(
    ("source_type", "postgres"),
    [
        ("float(24)", "REAL"),
        ("float(53)", "DOUBLE PRECISION"),
        ("decimal(18, 2)", "NUMERIC"),
        ("DATETIMEOFFSET(7)", "TIMESTAMP WITH TIME ZONE"),
        ("sql_variant", None),
    ],
)
def test_staging_types(source_type, postgres):
    assert staging_type(source_type) == postgres


def test_a_type_the_macros_do_not_know_is_checked_only_to_exist():
    contract = contract_from_ddl("CREATE TABLE t (ID int PRIMARY KEY, V sql_variant)", "t")
    (last,) = [e for e in contract_suite(contract)["expectations"] if e["kwargs"].get("column") == "v"]
    assert last["type"] == "expect_column_to_exist"


def test_a_table_is_validated_by_its_suites_else_by_its_contract(tmp_path):
    table = staging_only()
    assert suite_names(table, tmp_path) == []
    write_contract(tmp_path, "product_photo", contract_from_ddl("CREATE TABLE t (ID int PRIMARY KEY)", "product_photo"))
    assert suite_names(table, tmp_path) == ["product_photo_staging_contract"]
    assert suite_names(staging_only(suites=["mine"]), tmp_path) == ["mine"]


def test_a_contract_validated_table_gets_its_staging_dataset_only(tmp_path):
    from pipeline.superset.provision import dataset_names, managed_tables

    settings = make_settings(tmp_path)
    image = staging_only()
    settings.file.tables.append(image)
    dbt_dir = tmp_path / "dbt"
    assert [t.name for t in managed_tables(settings, dbt_dir)] == ["product", "measure_unit"]
    write_contract(dbt_dir, "product_photo", contract_from_ddl("CREATE TABLE t (ID int PRIMARY KEY)", "product_photo"))
    assert [t.name for t in managed_tables(settings, dbt_dir)] == ["product", "measure_unit", "product_photo"]
    assert dataset_names(settings, [image]) == [("staging_staging", "stg_product_photo")]  # no marts to chart


def test_the_shipped_configs_new_tables_each_get_their_staging_dataset(tmp_path):
    """The three tables added by configuration are validated by their contract suites, so
    Superset gets a dataset of each one's staging relation (no marts to chart yet)."""
    from pipeline.superset.provision import dataset_names

    settings = make_settings(tmp_path / "data", tables=None)
    assert dataset_names(settings) == [
        ("marts", "dim_product"),
        ("staging_staging", "stg_product"),
        ("marts", "dim_measure_unit"),
        ("staging_staging", "stg_measure_unit"),
        ("staging_staging", "stg_product_pricing"),
        ("staging_staging", "stg_product_availability"),
        ("staging_staging", "stg_product_image"),
    ]
