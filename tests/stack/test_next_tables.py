"""The three tables Concord queues next (ProductPricing, ProductAvailability and the link
table ProductImage), added by configuration alone: the whole shipped config on the embedded
stack, carried from the demo source through Debezium, Kafka, the raw zone and bronze to
staging, `--check`, the TUI's per-table views and, later, a source that changes its columns.

Staging is compared with the source database itself, row by row and column by column: the
values the demo wrote, read back over a second connection, never from the code under test.

Isolation needed because: this module runs the whole shipped config (five tables), and it
alters the demo source's columns."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.stores.db import connect_source
from tests.support.settings import make_settings
from tests.support.stack import StackHandle, write_env
from tests.support.tui import wait_for
from tui.app import BiConsoleApp

# source table -> (staging relation, {staging column: source column}) for the columns compared
NEXT_TABLES = {
    "ProductPricing": (
        "stg_product_pricing",
        {
            "product_pricing_id": "ID",
            "net_uid": "NetUID",
            "created": "Created",
            "updated": "Updated",
            "deleted": "Deleted",
            "product_id": "ProductID",
            "pricing_type_id": "PricingTypeID",
            "price": "Price",
            "price_with_vat": "PriceWithVat",
            "discount": "Discount",
            "currency_code": "CurrencyCode",
            "valid_from": "ValidFrom",
        },
    ),
    "ProductAvailability": (
        "stg_product_availability",
        {
            "product_availability_id": "ID",
            "net_uid": "NetUID",
            "created": "Created",
            "updated": "Updated",
            "deleted": "Deleted",
            "product_id": "ProductID",
            "storage_id": "StorageID",
            "amount": "Amount",
            "reserved_amount": "ReservedAmount",
            "last_counted_at": "LastCountedAt",
            "expected_at": "ExpectedAt",
        },
    ),
    "ProductImage": (
        "stg_product_image",
        {
            "product_id": "ProductID",
            "image_id": "ImageID",
            "sort_order": "SortOrder",
            "is_main": "IsMain",
            "image_url": "ImageUrl",
            "checksum": "Checksum",
            "created": "Created",
            "updated": "Updated",
            "deleted": "Deleted",
        },
    ),
}
KEYS = {"ProductPricing": ["ID"], "ProductAvailability": ["ID"], "ProductImage": ["ProductID", "ImageID"]}


@pytest.fixture(scope="module")
def stack():
    """An embedded stack on the whole shipped config."""
    from pipeline.runtime.embedded import EmbeddedRuntime

    root = Path(tempfile.mkdtemp(prefix="bi-console-next-tables-"))
    settings = make_settings(root / "data", own_ports=True, tables=None)
    runtime = EmbeddedRuntime(settings)
    try:
        runtime.up(log=lambda line: print(line, file=sys.stderr))
    except Exception:
        runtime.down(log=lambda line: None)
        raise
    yield StackHandle(settings=settings, runtime=runtime, env_file=write_env(settings, root / ".env"))
    runtime.down(log=lambda line: None)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def refreshed(stack):
    seeded = stack.seeded()
    assert set(seeded["events"]) == {
        "product",
        "measure_unit",
        "product_pricing",
        "product_availability",
        "product_image",
    }
    result = stack.cli("refresh", "--json", "--full")
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout)["outcome"] == "ok"
    return stack


def _comparable(value):
    if isinstance(value, str):
        return value.lower()  # a uniqueidentifier: staging keeps it lowercase
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, float):
        return Decimal(str(value))
    return value


def _source_rows(stack, table: str, columns: list[str]) -> dict[tuple, tuple]:
    select = ", ".join(f'"{c}"' for c in columns)
    with connect_source(stack.settings) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT {select} FROM dbo."{table}"')
        rows = cur.fetchall()
    conn.close()
    key_positions = [columns.index(k) for k in KEYS[table]]
    return {tuple(r[i] for i in key_positions): tuple(_comparable(v) for v in r) for r in rows}


def _source_count(stack, table: str) -> int:
    """The rows the source holds and has not flagged deleted: what staging counts as active."""
    with connect_source(stack.settings) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT count(*) FROM dbo."{table}" WHERE NOT "Deleted"')
        count = cur.fetchone()[0]
    conn.close()
    return count


def test_staging_holds_every_source_row_value_for_value(refreshed):
    for table, (relation, mapping) in NEXT_TABLES.items():
        staged_columns = list(mapping)
        source = _source_rows(refreshed, table, list(mapping.values()))
        key_names = [next(s for s, src in mapping.items() if src == k) for k in KEYS[table]]
        select = ", ".join(f'"{c}"' for c in staged_columns)
        staged = refreshed.psql(f"SELECT {select} FROM staging_staging.{relation} WHERE cdc_operation <> 'd'")
        positions = [staged_columns.index(k) for k in key_names]
        by_key = {tuple(r[i] for i in positions): tuple(_comparable(v) for v in r) for r in staged}
        assert len(source) > 100, (table, len(source))
        assert by_key == source, table


def test_deletes_are_kept_per_key_including_the_link_tables_composite_key(refreshed):
    for table, (relation, mapping) in NEXT_TABLES.items():
        source_keys = set(_source_rows(refreshed, table, KEYS[table]))
        key_names = [next(s for s, src in mapping.items() if src == k) for k in KEYS[table]]
        rows = refreshed.psql(
            f"SELECT {', '.join(key_names)}, deleted, cdc_operation FROM staging_staging.{relation} WHERE deleted"
        )
        # The demo soft-deletes one row of each table and hard-deletes another.
        hard = [r for r in rows if r[-1] == "d"]
        soft = [r for r in rows if r[-1] != "d"]
        assert len(hard) == 1 and len(soft) == 1, (table, rows)
        assert tuple(hard[0][: len(key_names)]) not in source_keys, (table, hard)  # gone from the source
        assert tuple(soft[0][: len(key_names)]) in source_keys, (table, soft)  # still there, flagged
    assert refreshed.psql(
        "SELECT count(*) FROM (SELECT product_id, image_id FROM staging_staging.stg_product_image "
        "GROUP BY 1, 2 HAVING count(*) > 1) AS twice"
    ) == [(0,)]


def test_check_covers_each_new_table_with_its_contract_suite(refreshed):
    result = refreshed.cli("--check", "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    for name in ("product_pricing", "product_availability", "product_image"):
        for check in (f"reconciliation:{name}", f"reconciliation:{name}:source", f"schema:{name}"):
            assert checks[check]["status"] == "pass", checks[check]
        assert "marts not modelled" in checks[f"reconciliation:{name}"]["evidence"]
        suite = checks[f"gx:{name}_staging_contract"]
        assert suite["status"] == "pass" and suite["evidence"].endswith("expectations"), suite


@pytest.mark.anyio
async def test_the_quality_view_shows_each_new_table_and_its_suite(refreshed):
    app = BiConsoleApp(refreshed.settings, runtime=refreshed.runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        quality = app.view("quality")
        source_rows = {
            name: _source_count(refreshed, table)
            for name, table in (
                ("product_pricing", "ProductPricing"),
                ("product_availability", "ProductAvailability"),
                ("product_image", "ProductImage"),
            )
        }
        for name, rows in source_rows.items():
            counts = await wait_for(
                pilot,
                lambda name=name, rows=rows: (
                    quality.layer_counts(name).get("staging_active") == rows and quality.layer_counts(name)
                ),
                120,
                what=f"{name}'s layer counts",
            )
            assert counts["marts"] is None, counts  # not modelled, never a made-up figure
        # The Great Expectations table lists each table's contract suite, passed.
        ge = app.query_one("#ge-table")

        def suite_rows() -> list[str]:
            return [str(ge.get_row_at(i)[1]) for i in range(ge.row_count)]

        await wait_for(
            pilot,
            lambda: all(f"{name}_staging_contract (staging)" in suite_rows() for name in source_rows),
            60,
            what="the contract suites in the Great Expectations table",
        )
        for name in source_rows:
            suites = quality.snapshot.validation[name]["suites"]
            assert [(s["name"], s["success"]) for s in suites] == [(f"{name}_staging_contract", True)], suites
        # The layer counts table has each new table's row, its marts shown as not modelled.
        counts = app.query_one("#counts-table")
        for name in source_rows:
            cells = [str(cell) for cell in counts.get_row(name)]
            assert cells[0] == name and cells[-1] == "not modelled", cells
        assert not app.errors, app.errors


def _source(stack, statement: str, params=()) -> None:
    with connect_source(stack.settings) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
    conn.close()


def _wait_for_topic(stack, topic: str, at_least: int) -> None:
    from pipeline.stores.kafka import topic_event_count

    deadline = time.monotonic() + 60
    while topic_event_count(stack.settings, topic) < at_least:
        assert time.monotonic() < deadline, f"{topic} never reached {at_least} events"
        time.sleep(0.5)


def test_a_column_added_and_one_dropped_at_the_source_are_reported_and_both_eras_load(refreshed):
    from pipeline.stores.kafka import topic_event_count

    topic = refreshed.settings.table("product_pricing").topic
    before = topic_event_count(refreshed.settings, topic)
    _source(refreshed, 'ALTER TABLE dbo."ProductPricing" ADD COLUMN "PriceComment" text')
    _source(refreshed, 'ALTER TABLE dbo."ProductPricing" DROP COLUMN "Discount"')
    _source(
        refreshed,
        'UPDATE dbo."ProductPricing" SET "PriceComment" = %s, "Price" = 99.5 WHERE "ID" = 1000',
        ("promo -10%",),
    )
    _wait_for_topic(refreshed, topic, before + 1)

    result = refreshed.cli("refresh", "--json", "--incremental")
    assert result.returncode == 0, result.stderr[-4000:]
    changed = refreshed.psql(
        "SELECT price, price_comment, discount FROM staging_staging.stg_product_pricing WHERE product_pricing_id = 1000"
    )
    assert changed == [(Decimal("99.5"), "promo -10%", None)]
    # The rows staged before the change keep what their events carried.
    untouched = refreshed.psql(
        "SELECT count(*) FROM staging_staging.stg_product_pricing WHERE product_pricing_id <> 1000 "
        "AND price_comment IS NULL AND discount IS NOT NULL"
    )
    assert untouched[0][0] > 0

    check = refreshed.cli("--check", "--json")
    schema = {c["name"]: c for c in json.loads(check.stdout)["checks"]}["schema:product_pricing"]
    assert schema["status"] == "warn", schema
    assert "added at the source, not in the contract: PriceComment" in schema["evidence"]
    assert "absent from the newest event: Discount (dropped at the source)" in schema["evidence"]
    assert "base_product_pricing.yml" in schema["fix"]
    assert check.returncode == 0, check.stdout[-2000:]  # a warning: the pipeline keeps running


def test_a_retyped_column_fails_the_check_naming_it_and_keeps_the_last_good_staging(refreshed):
    from pipeline.stores.kafka import topic_event_count

    topic = refreshed.settings.table("product_pricing").topic
    before = topic_event_count(refreshed.settings, topic)
    kept = refreshed.psql("SELECT count(*) FROM staging_staging.stg_product_pricing")
    _source(refreshed, 'ALTER TABLE dbo."ProductPricing" ALTER COLUMN "PricingTypeID" TYPE text USING \'retail\'')
    _source(refreshed, 'UPDATE dbo."ProductPricing" SET "Price" = 101 WHERE "ID" = 1001')
    _wait_for_topic(refreshed, topic, before + 1)

    result = refreshed.cli("refresh", "--json", "--incremental")
    assert result.returncode == 1
    run = json.loads(result.stdout)
    # Only the retyped table's models stop: the other tables' steps go on, its own are skipped.
    assert run["outcome"] == "failed" and run["failed_step"] == "all:transform"
    assert "dbt run failed for product_pricing" in run["error"] and "PricingTypeID" in run["error"]
    states = {(s["table"], s["step"]): s["state"] for s in run["steps"]}
    assert states[("product", "validate")] == "ok" and states[("product_image", "validate")] == "ok"
    assert states[("product_pricing", "validate")] == "skipped"
    assert states[("all", "test")] == "ok"
    assert refreshed.psql("SELECT count(*) FROM staging_staging.stg_product_pricing") == kept
    check = refreshed.cli("--check", "--json")
    assert check.returncode == 1
    schema = {c["name"]: c for c in json.loads(check.stdout)["checks"]}["schema:product_pricing"]
    assert schema["status"] == "fail", schema
    assert "retyped: PricingTypeID arrives as number/string, the contract says int" in schema["evidence"]
    assert "write the new type into" in schema["fix"] and "full refresh" in schema["fix"]
