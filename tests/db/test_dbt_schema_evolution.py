"""Schema evolution in staging (dbt/macros/staging.sql), on a real PostgreSQL: a column the
source retypes stops only its own table's models, with a message naming it; a column that only
older events carry survives a full refresh as it survives an incremental one."""

from __future__ import annotations

import pytest

from pipeline.steps.transform import DbtProject
from tests.support.dbt import event_factory, fresh_settings, load_events, query

pytestmark = pytest.mark.timeout(600)

ev = event_factory()


def _source(n: int, table: str = "Product") -> dict:
    return ev.sqlserver_source(f"{n:08X}:00000001:0003", f"{n:08X}:00000001:0002", 1, 1700000000000 + n, table=table)


def _measure_unit(i: int, **over) -> dict:
    row = {
        "ID": i,
        "NetUID": f"11111111-2222-3333-4444-{i:012X}",
        "Created": 1600000000000,
        "Updated": 1600000000000,
        "Deleted": False,
        "Name": f"unit {i}",
        "NamePL": f"unit {i} PL",
        "NameUA": f"unit {i} UA",
    }
    row.update(over)
    return row


def _mu_record(offset: int, row: dict) -> dict:
    return ev.record(
        offset, {"ID": row["ID"]}, ev.env("c", None, row, _source(offset + 1, "MeasureUnit")), topic=ev.MU_TOPIC
    )


def _values(settings, statement: str) -> list:
    return [next(iter(row.values())) for row in query(settings, statement)]


@pytest.fixture
def settings(request, tmp_path):
    return fresh_settings(f"bi_dbt_evolution_{request.node.name[5:40]}", tmp_path)


def test_a_retyped_column_stops_only_its_tables_models_naming_the_column_and_both_types(settings):
    products = [
        ev.record(i, {"ID": pid}, ev.env("c", None, ev.product_row(pid), _source(i + 1)))
        for i, pid in enumerate((1, 2))
    ]
    load_events(settings, "product", products)
    load_events(settings, "measure_unit", [_mu_record(0, _measure_unit(1))])
    assert DbtProject(settings).run().success

    # MeasureUnitID (bigint in the contract) now arrives as a string; MeasureUnit goes on changing.
    retyped = ev.product_row(3, MeasureUnitID="kg")
    load_events(settings, "product", [ev.record(10, {"ID": 3}, ev.env("c", None, retyped, _source(11)))])
    load_events(settings, "measure_unit", [_mu_record(1, _measure_unit(2, Name="kg"))])
    result = DbtProject(settings).run()

    assert not result.success
    status = {n.name: n.status for n in result.nodes}
    assert status["base_product"] == "error"
    assert status["stg_product"] == status["dim_product"] == "skipped"
    for model in ("base_measure_unit", "stg_measure_unit", "dim_measure_unit", "base_product_pricing"):
        assert status[model] == "success", (model, status)
    message = result.node("base_product").message or ""
    for named in ("base_product", "MeasureUnitID", "ConcordDb.dbo.Product", "contract says bigint", 'string "kg"'):
        assert named in message, (named, message)
    assert "full refresh" in message

    # The other table's new row arrived, through staging to its mart; Product keeps its last good staging.
    assert _values(settings, "select measure_unit_id from marts.dim_measure_unit order by 1") == [1, 2]
    assert _values(settings, "select name from staging_staging.stg_measure_unit where measure_unit_id = 2") == ["kg"]
    assert _values(settings, "select product_id from staging_staging.stg_product order by 1") == [1, 2]

    # A full refresh fails the same way, and builds the rest just as well.
    full = DbtProject(settings).run(full_refresh=True)
    status = {n.name: n.status for n in full.nodes}
    assert status["base_product"] == "error" and status["dim_measure_unit"] == "success", status


def test_a_column_only_older_events_carry_survives_a_full_refresh(settings):
    # Units 1-3 carry Symbol, a column beyond the contract, which the source then drops: the
    # 1,200 later events (more than the newest 1,000 the incremental search reads) lack it.
    old = [_mu_record(i, _measure_unit(i + 1, Symbol=f"u{i + 1}")) for i in range(3)]
    load_events(settings, "measure_unit", old, ingested_at="2024-01-01T00:00:00Z")
    assert DbtProject(settings).run("base_measure_unit").success
    load_events(settings, "measure_unit", [_mu_record(10 + i, _measure_unit(100 + i)) for i in range(1200)])

    incremental = DbtProject(settings).run("base_measure_unit")
    assert incremental.success, incremental.error
    full = DbtProject(settings).run("base_measure_unit", full_refresh=True)
    assert full.success, full.error

    rows = query(
        settings,
        "select measure_unit_id, symbol from staging_staging.base_measure_unit where measure_unit_id in (1, 2, 3, 100)"
        " order by 1",
    )
    assert rows == [
        {"measure_unit_id": 1, "symbol": "u1"},
        {"measure_unit_id": 2, "symbol": "u2"},
        {"measure_unit_id": 3, "symbol": "u3"},
        {"measure_unit_id": 100, "symbol": None},
    ]
    assert query(settings, "select count(*) as n from staging_staging.base_measure_unit")[0]["n"] == 1203
