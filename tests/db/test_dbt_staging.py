"""dbt on real PostgreSQL: Debezium events in bronze -> exact typed values in staging and marts."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipeline.steps.transform import DbtProject
from tests.support.dbt import fresh_settings, load_events, query, read_events

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    settings = fresh_settings("bi_dbt_staging", tmp_path_factory.mktemp("data"))
    load_events(settings, "product", read_events("product_sqlserver.jsonl"), "product/raw/batch=1.jsonl")
    load_events(settings, "product", read_events("product_postgres.jsonl"), "product/raw/batch=2.jsonl")
    load_events(settings, "measure_unit", read_events("measure_unit_sqlserver.jsonl"))
    lines: list[str] = []
    project = DbtProject(settings, log=lines.append)
    result = project.run(None, full_refresh=True)
    assert result.success, result.error or result.output[-3000:]
    return settings, project, result, lines


def stg(settings, pid):
    rows = query(settings, "select * from staging_staging.stg_product where product_id = %s", (pid,))
    assert len(rows) == 1, rows
    return rows[0]


def test_run_result_reports_nodes_timings_and_log_lines(built):
    _, _, result, lines = built
    assert result.counts == {"success": 12, "total": 12}
    names = {n.name: n for n in result.nodes}
    assert set(names) == {
        "base_product",
        "stg_product",
        "dim_product",
        "base_measure_unit",
        "stg_measure_unit",
        "dim_measure_unit",
        "base_product_pricing",
        "stg_product_pricing",
        "base_product_availability",
        "stg_product_availability",
        "base_product_image",
        "stg_product_image",
    }
    assert names["dim_product"].relation == '"bi_dbt_staging"."marts"."dim_product"'
    assert names["stg_product"].relation == '"bi_dbt_staging"."staging_staging"."stg_product"'
    assert all(n.status == "success" and n.execution_time > 0 and "execute" in n.timing for n in result.nodes)
    assert names["dim_product"].rows_affected == 6
    assert result.elapsed > 0
    assert any("Completed successfully" in line for line in lines)
    assert not any(result.nodes[0].relation and "password" in line.lower() for line in lines)


def test_schemas_are_exactly_the_contract_names(built):
    settings = built[0]
    rels = query(
        settings,
        """select table_schema, table_name, table_type from information_schema.tables
                             where table_schema not in ('pg_catalog', 'information_schema', 'bronze', 'bi_console')
                             order by 1, 2""",
    )
    assert [(r["table_schema"], r["table_name"], r["table_type"]) for r in rels] == [
        ("marts", "dim_measure_unit", "BASE TABLE"),
        ("marts", "dim_product", "BASE TABLE"),
        ("staging_staging", "base_measure_unit", "BASE TABLE"),
        ("staging_staging", "base_product", "BASE TABLE"),
        ("staging_staging", "base_product_availability", "BASE TABLE"),
        ("staging_staging", "base_product_image", "BASE TABLE"),
        ("staging_staging", "base_product_pricing", "BASE TABLE"),
        ("staging_staging", "stg_measure_unit", "VIEW"),
        ("staging_staging", "stg_product", "VIEW"),
        ("staging_staging", "stg_product_availability", "VIEW"),
        ("staging_staging", "stg_product_image", "VIEW"),
        ("staging_staging", "stg_product_pricing", "VIEW"),
    ]


def test_stg_product_has_54_columns_in_contract_order(built):
    settings = built[0]
    cols = [
        r["column_name"]
        for r in query(
            settings,
            """select column_name from information_schema.columns
        where table_schema = 'staging_staging' and table_name = 'stg_product' order by ordinal_position""",
        )
    ]
    assert len(cols) == 54
    assert cols[:6] == ["product_id", "net_uid", "created", "updated", "deleted", "name"]
    assert "name_pl" in cols and "name_ua" in cols and "ucgfea" in cols and "source_amg_id" in cols
    assert cols[-5:] == ["cdc_operation", "source_timestamp", "is_snapshot", "kafka_offset", "ingested_at"]
    types = {
        r["column_name"]: r["data_type"]
        for r in query(
            settings,
            """select column_name, data_type
        from information_schema.columns where table_schema = 'staging_staging' and table_name = 'stg_product'""",
        )
    }
    assert types["product_id"] == "bigint"
    assert types["created"] == "timestamp without time zone"
    assert types["weight"] == "double precision"
    assert types["is_for_sale"] == "boolean"
    assert types["source_amg_id"] == "bytea"
    assert types["source_timestamp"] == "timestamp with time zone"


def test_one_row_per_product_tombstones_skipped(built):
    settings = built[0]
    rows = query(settings, "select product_id, deleted from staging_staging.stg_product order by product_id")
    assert [(r["product_id"], r["deleted"]) for r in rows] == [
        (1001, False),
        (1002, True),
        (1003, False),
        (1004, False),
        (1005, True),
        (1006, False),
        (2001, False),
        (2002, False),
    ]


def test_sqlserver_snapshot_then_update_exact_values(built):
    r = stg(built[0], 1001)
    assert r["name"] == "Пневмоподушка 1001 v2"
    assert r["net_uid"] == "6f9619ff-8b86-d011-b42d-0000000003e9"  # uppercase GUID lowercased
    assert r["created"] == datetime(2023, 11, 14, 22, 13, 20, 123000)  # datetime: epoch ms
    assert r["updated"] == datetime(2023, 11, 14, 23, 13, 20)  # datetime2(7): epoch ns
    assert r["deleted"] is False
    assert r["weight"] == 0.35
    assert bytes(r["source_amg_id"]) == bytes(range(1, 17))  # varbinary: base64
    assert r["source_fenix_id"] is None
    assert r["source_amg_code"] == 501001
    assert r["measure_unit_id"] == 1
    assert r["name_pl"] == "Resor pneumatyczny 1001" and r["name_ua"] == "Пневмоподушка UA 1001"
    assert (
        r["has_analogue"],
        r["has_image"],
        r["is_for_sale"],
        r["is_for_web"],
        r["is_for_zero_sale"],
        r["has_component"],
    ) == (True, False, False, True, False, False)
    assert r["ucgfea"] == "8708809900"
    assert r["cdc_operation"] == "u" and r["is_snapshot"] is False and r["kafka_offset"] == 1
    assert r["source_timestamp"] == datetime(2023, 11, 14, 23, 13, 20, tzinfo=timezone.utc)


def test_datetime2_nanoseconds_truncate_to_microseconds(built):
    r = stg(built[0], 1003)  # never updated: Updated = 1700000000123456789 ns
    assert r["updated"] == datetime(2023, 11, 14, 22, 13, 20, 123456)


def test_hard_delete_keeps_before_values(built):
    r = stg(built[0], 1002)
    assert r["deleted"] is True and r["cdc_operation"] == "d" and r["kafka_offset"] == 3
    assert r["vendor_code"] == "SABO-77" and r["weight"] == 5.0
    assert bytes(r["parent_amg_id"]) == b"\x00\xff\x10\x80"
    assert r["source_fenix_code"] == 77


def test_snapshot_row_and_json_null_tombstone(built):
    r = stg(built[0], 1003)
    assert r["cdc_operation"] == "r" and r["is_snapshot"] is True and r["kafka_offset"] == 5
    assert r["net_uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert r["name_pl"] is None and r["weight"] is None and r["is_for_sale"] is True


def test_latest_event_by_source_position_not_kafka_order(built):
    assert stg(built[0], 1004)["name"] == "newer by LSN"
    r = stg(built[0], 1006)  # streamed change beats a snapshot record of the same position
    assert r["name"] == "streamed" and r["is_snapshot"] is False and r["kafka_offset"] == 11


def test_soft_delete(built):
    r = stg(built[0], 1005)
    assert r["deleted"] is True and r["cdc_operation"] == "u"


def test_postgres_source_microseconds(built):
    r = stg(built[0], 2001)
    assert r["created"] == datetime(2023, 11, 14, 22, 13, 20, 123456)
    assert r["updated"] == datetime(2023, 11, 14, 22, 13, 20, 654321)
    assert r["net_uid"] == "d4f1a7c2-3b5e-4c6d-8e9f-0a1b2c3d4e5f"
    assert bytes(r["source_amg_id"]) == b"\xde\xad\xbe\xef"
    assert r["is_snapshot"] is True and r["cdc_operation"] == "r"
    r = stg(built[0], 2002)
    assert r["created"] == datetime(2023, 11, 14, 22, 13, 19)
    assert r["cdc_operation"] == "u" and r["kafka_offset"] == 102 and r["name_ua"] is None


def test_dim_product_active_only_with_computed_columns(built):
    settings = built[0]
    rows = query(
        settings,
        """select product_id, supplier_name, multilingual_status, weight_category,
        is_for_sale, last_modified_in_source, days_since_created, ingested_timestamp is not null as has_ingest
        from marts.dim_product order by product_id""",
    )
    got = [
        (r["product_id"], r["supplier_name"], r["multilingual_status"], r["weight_category"], r["is_for_sale"])
        for r in rows
    ]
    assert got == [
        (1001, "SEM1", "Complete", "Light (<1kg)", False),
        (1003, "Unknown", "Partial", "Missing", True),
        (1004, "WBR0", "Complete", "Heavy (>10kg)", False),
        (1006, "0340", "Missing", "Medium (1-10kg)", False),
        (2001, "RL35", "Complete", "Light (<1kg)", False),
        (2002, "9025", "Partial", "Light (<1kg)", True),
    ]
    first = rows[0]
    assert first["last_modified_in_source"] == datetime(2023, 11, 14, 23, 13, 20)
    today = query(settings, "select current_date as d")[0]["d"]
    assert first["days_since_created"] == (today - datetime(2023, 11, 14).date()).days
    assert all(r["has_ingest"] for r in rows)
    ncols = query(
        settings,
        """select count(*) as n from information_schema.columns
                              where table_schema = 'marts' and table_name = 'dim_product'""",
    )[0]["n"]
    assert 28 <= ncols <= 36


def test_measure_unit_generic_path(built):
    settings = built[0]
    rows = query(
        settings,
        "select measure_unit_id, net_uid, deleted, name, created from staging_staging.stg_measure_unit order by 1",
    )
    assert [(r["measure_unit_id"], r["deleted"]) for r in rows] == [(1, False), (2, True)]
    assert rows[0]["net_uid"] == "11111111-2222-3333-4444-000000000001"
    assert rows[0]["created"] == datetime(2020, 9, 13, 12, 26, 40)
    assert [r["measure_unit_id"] for r in query(settings, "select measure_unit_id from marts.dim_measure_unit")] == [1]


def test_dbt_tests_pass_on_good_data(built):
    _, project, _, _ = built
    result = project.test("base_product stg_product dim_product")
    assert result.success, [(n.name, n.status, n.message) for n in result.failed]
    assert result.counts.get("pass", 0) >= 20 and result.counts.get("fail", 0) == 0
    assert all(n.resource_type == "test" for n in result.nodes)


def test_debug_returns_output_text(built):
    _, project, _, _ = built
    result = project.debug()
    assert result.success
    assert "Connection test: [OK connection ok]" in result.output
    assert built[0].pg_password not in result.output
