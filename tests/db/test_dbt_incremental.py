"""Incremental marts: after any sequence of incremental runs, marts equal a full rebuild."""

from __future__ import annotations

import pytest

from pipeline.steps.transform import DbtProject
from tests.support.dbt import event_factory, execute, fresh_settings, load_events, query, read_events

pytestmark = pytest.mark.timeout(600)
SELECT = "base_product stg_product dim_product"


def marts(settings):
    return query(settings, "select * from marts.dim_product order by product_id")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    settings = fresh_settings("bi_dbt_incremental", tmp_path_factory.mktemp("data"))
    return settings, DbtProject(settings), event_factory()


def later_changes(ev):
    """Second wave: delete 1001, change 1003, re-create 1002 after its delete, new 1010."""
    src = ev.sqlserver_source
    p1001 = ev.product_row(1001)
    p1003 = ev.product_row(1003, VendorCode="SABO-1", NamePL="PL", Weight=2.5)
    p1002 = ev.product_row(1002, VendorCode="YP-6a")
    p1010 = ev.product_row(1010, VendorCode=None)
    return [
        ev.record(
            20,
            {"ID": 1001},
            ev.env("d", p1001, None, src("00000030:00000001:0003", "00000030:00000001:0002", 1, 1700009000000)),
        ),
        ev.record(21, {"ID": 1001}, None),
        ev.record(
            22,
            {"ID": 1003},
            ev.env("u", p1003, p1003, src("00000030:00000002:0003", "00000030:00000002:0002", 2, 1700009100000)),
            wrap_schema=ev.PRODUCT_SCHEMA,
        ),
        ev.record(
            23,
            {"ID": 1002},
            ev.env("c", None, p1002, src("00000030:00000003:0003", "00000030:00000003:0002", 1, 1700009200000)),
        ),
        ev.record(
            24,
            {"ID": 1010},
            ev.env("c", None, p1010, src("00000030:00000004:0003", "00000030:00000004:0002", 1, 1700009300000)),
        ),
    ]


def test_incremental_sequence_equals_full_rebuild(env):
    settings, project, ev = env
    events = read_events("product_sqlserver.jsonl")

    # Wave 0: first half of the events, first build.
    load_events(settings, "product", events[:5])
    r = project.run(SELECT)
    assert r.success, r.error
    assert [row["product_id"] for row in marts(settings)] == [1001]

    # Wave 1: the rest, incremental.
    load_events(settings, "product", events[5:])
    r = project.run(SELECT)
    assert r.success, r.error
    assert [row["product_id"] for row in marts(settings)] == [1001, 1003, 1004, 1006]
    assert query(settings, "select name from marts.dim_product where product_id = 1004")[0]["name"] == "newer by LSN"

    # A run without new events rewrites nothing.
    r = project.run(SELECT)
    assert r.success and r.node("dim_product").rows_affected == 0

    # Wave 2: deletes, updates, re-creation, new product, incremental.
    load_events(settings, "product", later_changes(ev))
    r = project.run(SELECT)
    assert r.success, r.error
    assert r.node("dim_product").rows_affected == 3  # 1002, 1003, 1010 written; 1001 removed by the post-hook
    incremental = marts(settings)
    assert [row["product_id"] for row in incremental] == [1002, 1003, 1004, 1006, 1010]
    changed = {row["product_id"]: row for row in incremental}
    assert changed[1003]["supplier_name"] == "SABO" and changed[1003]["multilingual_status"] == "Complete"
    assert changed[1003]["weight_category"] == "Medium (1-10kg)"
    assert changed[1002]["supplier_name"] == "YP-6" and changed[1010]["supplier_name"] == "Unknown"

    # A product that vanishes from staging (bronze rows removed) also leaves the marts.
    execute(
        settings,
        "delete from bronze.product_cdc where cdc_payload::text like '%%\"ID\": 1006%%'"
        " or kafka_key::text like '%%1006%%'",
    )
    r = project.run(SELECT)
    assert r.success
    incremental = marts(settings)
    assert [row["product_id"] for row in incremental] == [1002, 1003, 1004, 1010]

    # Full rebuild: identical, row for row and column for column.
    r = project.run(SELECT, full_refresh=True)
    assert r.success
    assert marts(settings) == incremental


def test_stale_computed_columns_are_rewritten(env):
    """Rows whose computed values drift (days_since_* on a new day) are picked up by the diff."""
    settings, project, _ = env
    assert project.run(SELECT).success
    execute(settings, "update marts.dim_product set days_since_created = days_since_created - 1")
    execute(
        settings,
        "insert into marts.dim_product (product_id, net_uid, name, supplier_name) values (999999, 'x', 'ghost', 'X')",
    )
    r = project.run(SELECT)
    assert r.success
    full = marts(settings)
    assert 999999 not in [row["product_id"] for row in full]
    assert project.run(SELECT, full_refresh=True).success
    assert marts(settings) == full
