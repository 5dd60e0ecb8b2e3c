"""The suite made from a table's source contract, run by GX on real PostgreSQL: it passes on
a staging relation of the contract's types and fails on a duplicated key, a null key and a
column of the wrong type.

The staging relation is made here by hand with the PostgreSQL types of the staging macros'
type map (cdc_type_map() in dbt/macros/type_map.sql), written out per column below."""

from __future__ import annotations

import pytest

from pipeline.checks import monitoring, probes, rules
from pipeline.config import TableConfig
from pipeline.config.contracts import contract_from_ddl, write_contract
from pipeline.steps.contract_suite import contract_suite_name
from pipeline.steps.validate import run_validation
from tests.support.dbt import connect, execute, fresh_settings

pytestmark = pytest.mark.timeout(600)

PRICING_DDL = """
CREATE TABLE dbo.ProductPricing (
    ProductID   bigint            NOT NULL,
    PricingID   int               NOT NULL,
    Price       decimal(18, 2)    NOT NULL,
    ListPrice   money             NULL,
    Discount    smallmoney        NULL,
    ValidFrom   datetime2(7)      NOT NULL,
    ChangedAt   datetimeoffset(7) NULL,
    Day         date              NULL,
    At          time(3)           NULL,
    Tier        tinyint           NULL,
    Ratio       float             NULL,
    Half        real              NULL,
    NetUID      uniqueidentifier  NOT NULL,
    Note        nvarchar(max)     NULL,
    Stamp       rowversion        NOT NULL,
    Active      bit               NOT NULL,
    CONSTRAINT PK_ProductPricing PRIMARY KEY (ProductID, PricingID)
);
"""
STAGING = """
create table staging_staging.stg_product_pricing (
    product_id bigint, pricing_id integer, price numeric, list_price numeric, discount numeric,
    valid_from timestamp, changed_at timestamptz, day date, at time, tier smallint,
    ratio double precision, half real, net_uid text, note text, stamp bytea, active boolean,
    deleted boolean default false, cdc_operation text, source_timestamp timestamptz
)
"""
ROWS = """
insert into staging_staging.stg_product_pricing
    (product_id, pricing_id, price, list_price, discount, valid_from, changed_at, day, at, tier,
     ratio, half, net_uid, note, stamp, active, cdc_operation)
values
    (1, 1, 10.50, 12.0000, 0.5000, '2026-01-01 10:00:00.1234567', '2026-01-01 10:00+02', '2026-01-01', '10:00:00.123',
     1, 0.25, 0.5, '6f1c0a4e-0000-4000-8000-000000000001', 'first', '\\x00000000000007d1', true, 'r'),
    (1, 2, 11.00, null, null, '2026-01-02', null, null, null, null, null, null,
     '6f1c0a4e-0000-4000-8000-000000000002', null, '\\x00000000000007d2', false, 'u'),
    (2, 1, 99.99, null, null, '2026-01-03', null, null, null, 255, null, null,
     '6f1c0a4e-0000-4000-8000-000000000003', 'deleted at the source', '\\x00000000000007d3', true, 'd')
"""
KEYS = ["product_id", "pricing_id"]
TYPES = {  # the column, and the PostgreSQL type (as GX names it) the staging macros give its SQL Server type
    "product_id": "BIGINT",
    "pricing_id": "INTEGER",
    "price": "NUMERIC",
    "list_price": "NUMERIC",
    "discount": "NUMERIC",
    "valid_from": "TIMESTAMP WITHOUT TIME ZONE",
    "changed_at": "TIMESTAMP WITH TIME ZONE",
    "day": "DATE",
    "at": "TIME WITHOUT TIME ZONE",
    "tier": "SMALLINT",
    "ratio": "DOUBLE PRECISION",
    "half": "REAL",
    "net_uid": "TEXT",
    "note": "TEXT",
    "stamp": "BYTEA",
    "active": "BOOLEAN",
}


@pytest.fixture(scope="module")
def pricing(tmp_path_factory):
    settings = fresh_settings("bi_contract_suite", tmp_path_factory.mktemp("data"))
    dbt_dir = tmp_path_factory.mktemp("dbt")
    write_contract(dbt_dir, "product_pricing", contract_from_ddl(PRICING_DDL, "product_pricing"))
    table = TableConfig(
        name="product_pricing",
        source_table="ProductPricing",
        key_columns=["ProductID", "PricingID"],
        topic="cord.ConcordDb.dbo.ProductPricing",
        raw_prefix="product_pricing/raw",
        bronze_table="product_pricing_cdc",
        staging_relation="stg_product_pricing",
    )
    execute(settings, "create schema if not exists staging_staging")
    execute(settings, STAGING)
    execute(settings, ROWS)
    return settings, table, dbt_dir


def validate(pricing):
    settings, table, dbt_dir = pricing
    return run_validation(settings, table, build_docs=False, dbt_dir=dbt_dir).suite(contract_suite_name(table))


def test_the_contract_suite_passes_on_staging_of_the_contract_types(pricing):
    settings, table, dbt_dir = pricing
    result = run_validation(settings, table, build_docs=False, dbt_dir=dbt_dir)
    assert [s.name for s in result.suites] == ["product_pricing_staging_contract"]
    (suite,) = result.suites
    assert suite.layer == "staging" and suite.relation == "staging_staging.stg_product_pricing"
    assert result.verdict == "passed", [(e.type, e.column, e.observed_value, e.exception) for e in suite.failed]
    keys = {(e.type, e.column) for e in suite.expectations if e.check == "keys"}
    assert keys == {  # GX reports them in its own order
        ("expect_column_values_to_not_be_null", "product_id"),
        ("expect_column_values_to_not_be_null", "pricing_id"),
        ("expect_compound_columns_to_be_unique", "product_id,pricing_id"),
    }
    types = {e.column: e.observed_value for e in suite.expectations if e.type == "expect_column_values_to_be_of_type"}
    assert types == TYPES
    assert len(suite.expectations) == 3 + 16


def test_a_duplicated_key_fails_the_suite(pricing):
    settings = pricing[0]
    execute(
        settings,
        "insert into staging_staging.stg_product_pricing (product_id, pricing_id, price, valid_from, net_uid, stamp,"
        " active) values (1, 2, 1, now(), 'x', '\\x00', true)",
    )
    try:
        suite = validate(pricing)
        assert not suite.success
        (failed,) = suite.failed
        assert failed.type == "expect_compound_columns_to_be_unique" and failed.column == "product_id,pricing_id"
        assert failed.observed_value["unexpected_count"] == 2  # both rows of the key (1, 2)
    finally:
        execute(settings, "delete from staging_staging.stg_product_pricing where net_uid = 'x'")
    assert validate(pricing).success


def test_a_null_key_fails_the_suite(pricing):
    settings = pricing[0]
    execute(
        settings,
        "insert into staging_staging.stg_product_pricing (product_id, pricing_id, price, valid_from, net_uid, stamp,"
        " active) values (3, null, 1, now(), 'null key', '\\x00', true)",
    )
    try:
        suite = validate(pricing)
        assert [(e.type, e.column) for e in suite.failed] == [("expect_column_values_to_not_be_null", "pricing_id")]
    finally:
        execute(settings, "delete from staging_staging.stg_product_pricing where net_uid = 'null key'")


def test_a_column_of_the_wrong_type_fails_the_suite_and_the_check(pricing):
    # A price decoded as text (a staging model that forgot to cast), and a datetimeoffset
    # that lost its zone.
    settings, table, dbt_dir = pricing
    execute(settings, "alter table staging_staging.stg_product_pricing alter column price type text")
    execute(
        settings,
        "alter table staging_staging.stg_product_pricing alter column changed_at type timestamp without time zone",
    )
    try:
        suite = validate(pricing)
        assert not suite.success
        assert {(e.column, e.observed_value) for e in suite.failed} == {
            ("price", "TEXT"),
            ("changed_at", "TIMESTAMP WITHOUT TIME ZONE"),
        }
        # --check and the Quality view read the same suite through gx_checks: one check per suite.
        collector = monitoring.Collector()
        monitoring.gx_checks(settings, table, collector, dbt_dir=dbt_dir)
        (check,) = collector.results
        assert check.name == "gx:product_pricing_staging_contract" and check.status == "fail"
        assert "expect_column_values_to_be_of_type(price) observed TEXT" in check.evidence
    finally:
        execute(
            settings,
            "alter table staging_staging.stg_product_pricing alter column price type numeric using price::numeric",
        )
        execute(settings, "alter table staging_staging.stg_product_pricing alter column changed_at type timestamptz")
    collector = monitoring.Collector()
    monitoring.gx_checks(settings, table, collector, dbt_dir=dbt_dir)
    assert [(c.name, c.status) for c in collector.results] == [("gx:product_pricing_staging_contract", "pass")]


def test_a_table_with_no_suite_and_no_contract_is_not_covered(pricing, tmp_path):
    settings, table, _ = pricing
    result = run_validation(settings, table, build_docs=False, dbt_dir=tmp_path)
    assert result.verdict == "not covered"
    collector = monitoring.Collector()
    monitoring.gx_checks(settings, table, collector, dbt_dir=tmp_path)
    assert [(c.name, c.status) for c in collector.results] == [("gx:product_pricing", "warn")]


def test_layer_counts_of_a_staging_only_table_without_a_deleted_flag(pricing):
    # ProductImage has no Deleted column, so its staging has no `deleted`: a row is active
    # unless its latest event is a delete. Its marts are not modelled, not missing.
    settings = pricing[0]
    image = TableConfig(
        name="product_image",
        source_table="ProductImage",
        topic="cord.ConcordDb.dbo.ProductImage",
        raw_prefix="product_image/raw",
        bronze_table="product_image_cdc",
        staging_relation="stg_product_image",
    )
    execute(settings, "create table staging_staging.stg_product_image (product_image_id bigint, cdc_operation text)")
    execute(settings, "insert into staging_staging.stg_product_image values (1, 'r'), (2, 'u'), (3, 'd')")
    try:
        with connect(settings) as conn:
            counts = probes.layer_counts(conn, settings, image)
            priced = probes.layer_counts(conn, settings, pricing[1])
        assert (counts.staging_all, counts.staging_active, counts.marts, counts.marts_modelled) == (3, 2, None, False)
        assert (priced.staging_all, priced.staging_active) == (3, 3)  # its `deleted` flag says none is deleted
        assert "marts not modelled" in rules.reconciliation(counts).evidence
    finally:
        execute(settings, "drop table staging_staging.stg_product_image")
