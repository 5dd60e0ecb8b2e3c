"""GX suites on real PostgreSQL: pass on good data, fail (or warn) on broken data."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest

from pipeline.config import DEFAULT_CONFIG, load_file_config
from pipeline.steps.transform import DbtProject
from pipeline.steps.validate import SuiteConfigError, load_suite_file, render_suite, run_validation
from tests.support.dbt import execute, fresh_settings, load_events, read_events

pytestmark = pytest.mark.timeout(600)

MEASURE_UNIT_MODELS = "base_measure_unit stg_measure_unit dim_measure_unit"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    settings = fresh_settings("bi_validate", tmp_path_factory.mktemp("data"))
    load_events(settings, "product", read_events("product_sqlserver.jsonl"))
    load_events(settings, "product", read_events("product_postgres.jsonl"))
    load_events(settings, "measure_unit", read_events("measure_unit_sqlserver.jsonl"))  # unit 1 active, 2 deleted
    assert (
        DbtProject(settings)
        .run(f"base_product stg_product dim_product {MEASURE_UNIT_MODELS}", full_refresh=True)
        .success
    )
    t = settings.file.thresholds
    t.min_active_products = 1
    t.min_multilingual_coverage = 0.5  # fixtures: 3 of 6 active products are 'Complete'
    t.is_for_sale_share_max = 0.5
    return settings


def rebuild(settings):
    assert DbtProject(settings).run("base_product stg_product dim_product", full_refresh=True).success


def find(result, suite, check=None, type_=None, column=None):
    found = [
        e
        for e in result.suite(suite).expectations
        if (check is None or e.check == check)
        and (type_ is None or e.type == type_)
        and (column is None or e.column == column)
    ]
    assert found, (suite, check, type_, column)
    return found


def test_all_suites_pass_on_good_data(good):
    lines: list[str] = []
    result = run_validation(good, "product", log=lines.append)
    assert [s.name for s in result.suites] == ["product_bronze", "product_staging", "product_marts"]
    assert result.success, [
        (s.name, [(e.type, e.column, e.observed_value, e.exception) for e in s.failed], s.error) for s in result.suites
    ]
    assert all(s.success and s.gx_success for s in result.suites)
    assert result.counts["failed"] == 0 and result.counts["warnings"] == 0 and result.counts["expectations"] == 21
    rows = find(result, "product_marts", type_="expect_table_row_count_to_be_between")[0]
    assert rows.observed_value == 6 and rows.severity == "error"
    coverage = find(result, "product_marts", check="multilingual_coverage")[0]
    assert coverage.observed_value["unexpected_percent"] == 50.0
    recon = find(result, "product_staging", check="reconciliation")[0]
    assert recon.success and recon.observed_value == 0
    assert {e.severity for e in find(result, "product_marts", check="business_flags")} == {"warning"}
    # Results JSON and Data Docs under data_dir/validation, without the password.
    latest = Path(good.data_dir) / "validation" / "product-latest.json"
    data = json.loads(latest.read_text())
    assert data["success"] is True and data["counts"]["expectations"] == result.counts["expectations"]
    assert Path(result.results_path).is_file()
    docs = Path(result.data_docs_path)
    assert docs.name == "index.html" and docs.is_file() and docs.parent.parent == latest.parent
    for path in latest.parent.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".html"):
            assert good.pg_password not in path.read_text(errors="ignore"), path
    assert any("product_marts: passed" in line for line in lines)


def test_deleted_marts_row_fails_reconciliation(good):
    execute(good, "delete from marts.dim_product where product_id = 1001")
    try:
        result = run_validation(good, "product", build_docs=False)
        assert not result.success
        marts = result.suite("product_marts")
        assert not marts.success
        recon = find(result, "product_marts", check="reconciliation")[0]
        assert not recon.success and recon.observed_value == 1 and recon.severity == "error"
        assert result.suite("product_staging").success and result.suite("product_bronze").success
    finally:
        rebuild(good)


def test_malformed_bronze_event_is_a_bronze_warning(good):
    # Values staging must skip: an unknown op, and a schema-wrapped update without its row.
    bad = [
        {
            "topic": "cord.ConcordDb.dbo.Product",
            "partition": 9,
            "offset": 1,
            "key": {"ID": 77},
            "value": {"op": "x", "after": {"ID": 77}},
        },
        {
            "topic": "cord.ConcordDb.dbo.Product",
            "partition": 9,
            "offset": 2,
            "key": {"ID": 78},
            "value": {"schema": {"type": "struct"}, "payload": {"op": "u", "after": None}},
        },
    ]
    assert load_events(good, "product", bad) == 2
    try:
        result = run_validation(good, "product", suites=["product_bronze"], build_docs=False)
        bronze = result.suite("product_bronze")
        assert bronze.success and not bronze.failed  # a warning: reported, not failing the suite
        (warning,) = bronze.warnings
        assert warning.type == "unexpected_rows_expectation" and warning.observed_value == 2
    finally:
        execute(good, "delete from bronze.product_cdc where kafka_partition = 9")


def test_broken_staging_fails_reconciliation_with_bronze(good):
    # A transform that silently drops a product.
    execute(good, "alter view staging_staging.stg_product rename to stg_product_good")
    execute(
        good,
        "create view staging_staging.stg_product as "
        "select * from staging_staging.stg_product_good where product_id <> 2002",
    )
    try:
        result = run_validation(good, "product", suites=["product_staging"], build_docs=False)
        recon = find(result, "product_staging", check="reconciliation")[0]
        assert not recon.success and recon.observed_value == 1
        assert not result.success
    finally:
        execute(good, "drop view staging_staging.stg_product")
        execute(good, "alter view staging_staging.stg_product_good rename to stg_product")


def test_duplicate_key_and_bad_category_fail(good):
    execute(good, "update marts.dim_product set net_uid = 'dup' where product_id in (1001, 1003)")
    execute(good, "update marts.dim_product set weight_category = 'Huge' where product_id = 1004")
    try:
        result = run_validation(good, "product", suites=["product_marts"], build_docs=False)
        failed = {(e.type, e.column) for e in result.suite("product_marts").failed}
        assert ("expect_column_values_to_be_unique", "net_uid") in failed
        assert ("expect_column_values_to_be_in_set", "weight_category") in failed
    finally:
        rebuild(good)


def test_thresholds_coverage_error_share_warning_freshness(good):
    t = good.file.thresholds
    saved = (t.min_multilingual_coverage, t.is_for_sale_share_max)
    t.min_multilingual_coverage, t.is_for_sale_share_max = 1.0, 0.1
    execute(good, "update marts.dim_product set ingested_timestamp = now() - interval '3 hours'")
    try:
        result = run_validation(good, "product", suites=["product_marts"], build_docs=False)
        marts = result.suite("product_marts")
        assert not marts.success
        failed_checks = {e.check for e in marts.failed}
        assert failed_checks == {"multilingual_coverage", "load_recency"}
        share = [e for e in marts.warnings if e.check == "business_flags"]
        assert len(share) == 1 and share[0].column == "is_for_sale" and share[0].severity == "warning"
        assert share[0].observed_value["unexpected_percent"] == pytest.approx(100 * 2 / 6)
        assert result.counts["warnings"] == 1
    finally:
        t.min_multilingual_coverage, t.is_for_sale_share_max = saved
        rebuild(good)


def test_share_warning_alone_does_not_fail_the_suite(good):
    t = good.file.thresholds
    saved = t.is_for_sale_share_max
    t.is_for_sale_share_max = 0.1
    try:
        result = run_validation(good, "product", suites=["product_marts"], build_docs=False)
        marts = result.suite("product_marts")
        assert marts.success and marts.gx_success is False and len(marts.warnings) == 1
        assert result.success
    finally:
        t.is_for_sale_share_max = saved


def test_missing_relation_and_missing_suite(good, tmp_path):
    execute(good, "alter table marts.dim_product rename to dim_product_away")
    try:
        result = run_validation(good, "product", suites=["product_marts"], build_docs=False)
        assert not result.success and "does not exist" in result.suite("product_marts").error
    finally:
        execute(good, "alter table marts.dim_product_away rename to dim_product")
    with pytest.raises(SuiteConfigError):
        run_validation(good, "product", suites=["no_such_suite"])
    # A table configured without suites and without a source contract (an empty dbt dir):
    # the run does not fail, and nothing says it passed.
    unsuited = run_validation(good, good.table("measure_unit").model_copy(update={"suites": []}), dbt_dir=tmp_path)
    assert unsuited.success and unsuited.verdict == "not covered"


def test_measure_unit_suite_passes_then_fails_on_a_duplicate_and_on_a_lost_unit(good):
    result = run_validation(good, "measure_unit", build_docs=False)
    assert [s.name for s in result.suites] == ["measure_unit_marts"] and result.verdict == "passed", [
        (e.type, e.column, e.observed_value) for s in result.suites for e in s.failed
    ]
    assert good.table("measure_unit").suites == ["measure_unit_marts"]
    try:
        execute(
            good, "insert into marts.dim_measure_unit select * from marts.dim_measure_unit where measure_unit_id = 1"
        )
        result = run_validation(good, "measure_unit", build_docs=False)
        assert result.verdict == "FAILED"
        assert {e.column for e in result.suite("measure_unit_marts").failed} == {"measure_unit_id", "net_uid"}
        execute(good, "delete from marts.dim_measure_unit")
        result = run_validation(good, "measure_unit", build_docs=False)
        (lost,) = result.suite("measure_unit_marts").failed
        assert lost.check == "reconciliation" and lost.observed_value == 1, lost
    finally:
        assert DbtProject(good).run(MEASURE_UNIT_MODELS, full_refresh=True).success


def test_no_shipped_threshold_or_expectation_passes_by_construction(good):
    """A share bound at 0 or 1, a `mostly` of 0 or a row count of at least 1 passes on any data."""
    shipped = load_file_config(DEFAULT_CONFIG)
    bounds = {
        name: value
        for name, value in shipped.thresholds.model_dump().items()
        if name.endswith(("_share_min", "_share_max"))
    }
    assert bounds == {"is_for_sale_share_max": 0.5, "is_for_web_share_min": 0.5}
    settings = good.model_copy(update={"file": shipped})
    conn = psycopg2.connect(**good.pg_dsn())
    try:
        for table in shipped.tables:
            for name in table.suites:
                for expectation in render_suite(load_suite_file(name), settings, table, conn)["expectations"]:
                    kwargs = expectation["kwargs"]
                    if "mostly" in kwargs:
                        assert 0 < kwargs["mostly"] <= 1, (name, expectation)
                    if expectation["type"] == "expect_table_row_count_to_be_between":
                        assert kwargs["min_value"] > 1, (name, expectation)
    finally:
        conn.close()


def test_an_emptied_bronze_fails_the_staging_reconciliation(good):
    # What bronze's dropped `row count >= 1` stood for: the staging suite's reconciliation
    # names every product staging holds that bronze no longer has: 1001-1006, 2001 and 2002.
    execute(good, "alter table bronze.product_cdc rename to product_cdc_kept")
    execute(good, "create table bronze.product_cdc (like bronze.product_cdc_kept including all)")
    try:
        result = run_validation(good, "product", suites=["product_staging"], build_docs=False)
        recon = find(result, "product_staging", check="reconciliation")[0]
        assert not recon.success and recon.observed_value == 8 and recon.severity == "error"
        assert not result.success
    finally:
        execute(good, "drop table bronze.product_cdc")
        execute(good, "alter table bronze.product_cdc_kept rename to product_cdc")


def test_staging_keys_are_unique_by_the_index_not_by_a_suite(good):
    # product_staging no longer checks product_id for duplicates: the table under the view refuses them.
    with pytest.raises(psycopg2.errors.UniqueViolation):
        execute(
            good,
            "insert into staging_staging.base_product select * from staging_staging.base_product "
            "where product_id = 1001",
        )


def test_the_for_web_lower_bound_and_the_for_sale_upper_bound_warn(good):
    # The two share bounds left: each warns once the share crosses it (fixtures: 2 of 6 for sale).
    t = good.file.thresholds
    saved = (t.is_for_web_share_min, t.is_for_sale_share_max)
    execute(good, "update marts.dim_product set is_for_web = false where product_id in (1001, 1003, 1004, 2001)")
    try:
        result = run_validation(good, "product", suites=["product_marts"], build_docs=False)
        (web,) = [e for e in result.suite("product_marts").warnings if e.check == "business_flags"]
        assert web.column == "is_for_web" and web.observed_value["unexpected_percent"] == pytest.approx(100 * 4 / 6)
        t.is_for_web_share_min, t.is_for_sale_share_max = 0.3, 0.3
        result = run_validation(good, "product", suites=["product_marts"], build_docs=False)
        (sale,) = [e for e in result.suite("product_marts").warnings if e.check == "business_flags"]
        assert sale.column == "is_for_sale" and sale.observed_value["unexpected_percent"] == pytest.approx(100 * 2 / 6)
    finally:
        t.is_for_web_share_min, t.is_for_sale_share_max = saved
        rebuild(good)
