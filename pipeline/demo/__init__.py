"""The embedded demo source: the configured source tables on PostgreSQL, filled with data
shaped like production and a change history that leaves the product topic with the
runbook's ~31,970 events and exactly 115 active products, a few of them edge cases of
the marts' rules (pipeline.demo.shapes.CASES).

The tables' columns come from their DDL (pipeline.demo.rows), their values from
pipeline.demo.shapes, and their names from the configuration. Everything here is
deterministic for a given seed.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg2
from psycopg2.extras import execute_batch

from pipeline.config import Settings, TableConfig
from pipeline.demo import shapes
from pipeline.demo.rows import TableModel, insert_sql, postgres_ddl
from pipeline.process.log_sink import Log
from pipeline.stores.db import connect_source, one_row

# The configured tables the demo fills, by their `tables.name`, and their column models.
_DEMO_MODELS: dict[str, Callable[[], TableModel]] = {
    "product": shapes.product_model,
    "measure_unit": shapes.measure_unit_model,
    "product_pricing": lambda: shapes.ddl_model("ProductPricing"),
    "product_availability": lambda: shapes.ddl_model("ProductAvailability"),
    "product_image": lambda: shapes.ddl_model("ProductImage"),
}
# Product and MeasureUnit are the demo; the tables Concord queues next are seeded when configured.
_REQUIRED = ("product", "measure_unit")
DELETED, UPDATED = "Deleted", "Updated"  # the source's soft-delete flag and modification time


def demo_model(settings: Settings, name: str) -> TableModel:
    """The column model of a demo table, named as the configuration names its source."""
    table: TableConfig = settings.table(name)
    return dataclasses.replace(_DEMO_MODELS[name](), schema=table.source_schema, table=table.source_table)


def _relation(model: TableModel) -> str:
    return f'{model.schema}."{model.table}"'


def _demo_tables(settings: Settings) -> list[str]:
    configured = {t.name for t in settings.tables}
    return [name for name in _DEMO_MODELS if name in _REQUIRED or name in configured]


def ensure_source_tables(settings: Settings) -> None:
    """Create the demo tables (empty) so the connector captures them from their first row."""
    with connect_source(settings) as conn:
        cur = conn.cursor()
        for name in _demo_tables(settings):
            cur.execute(postgres_ddl(demo_model(settings, name)))
    conn.close()


def has_rows(settings: Settings) -> bool:
    ensure_source_tables(settings)
    with connect_source(settings) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT EXISTS (SELECT 1 FROM {_relation(demo_model(settings, 'product'))})")
        found: bool = one_row(cur)[0]
    conn.close()
    return found


def _binary(row: dict[str, Any]) -> dict[str, Any]:
    return {k: psycopg2.Binary(v) if isinstance(v, bytes) else v for k, v in row.items()}


def _update_sql(model: TableModel, columns: list[str]) -> str:
    assignments = ", ".join(f'"{c}" = %({c})s' for c in columns)
    return f'UPDATE {_relation(model)} SET {assignments} WHERE "{model.key}" = %(_key)s'


def _prefix_of(vendor_code: str | None) -> str:
    code = (vendor_code or "").strip()
    return code[:4] if len(code) >= 4 else ""


def seed(settings: Settings, seed_value: int = 42, log: Log = print) -> dict[str, Any]:
    """Insert the demo products and apply their change history. Refuses a non-empty table."""
    rng = random.Random(seed_value)
    ensure_source_tables(settings)
    product, unit = demo_model(settings, "product"), demo_model(settings, "measure_unit")
    conn = connect_source(settings)
    cur = conn.cursor()
    cur.execute(f"SELECT count(*) FROM {_relation(product)}")
    if one_row(cur)[0]:
        conn.close()
        raise RuntimeError(
            f"the demo source {_relation(product)} already holds rows; `demo changes N` adds more, "
            "or start from an empty data directory"
        )

    # Measure units: inserts and one update each.
    units = shapes.measure_unit_rows()
    for row in units:
        cur.execute(insert_sql(unit), row)
        cur.execute(_update_sql(unit, [UPDATED]), {UPDATED: shapes.BASE_TIME, "_key": row[unit.key]})
    mu_events = 2 * len(units)
    conn.commit()

    # The cases take their supplier prefixes out of the profile's, so that the distribution holds.
    prefixes = list(shapes.PREFIX_CYCLE)
    for over in shapes.CASES.values():
        prefixes.remove(_prefix_of(over.get("VendorCode")))
    profile_active = shapes.ACTIVE_PRODUCTS - len(shapes.CASES)
    total = profile_active + shapes.SOFT_DELETED + shapes.HARD_DELETED
    ids = sorted(rng.sample(shapes.RANDOM_IDS, total))
    active_ids = ids[:profile_active]
    rng.shuffle(active_ids)
    case_analogues = sum(bool(over.get("HasAnalogue")) for over in shapes.CASES.values())
    analogue = set(active_ids[: shapes.HAS_ANALOGUE - case_analogues])
    rows = []
    for index, product_id in enumerate(ids):
        prefix = prefixes[index] if index < len(prefixes) else rng.choice(["SEM1", "SABO"])
        created = shapes.BASE_TIME - timedelta(days=rng.randint(30, 2000), minutes=rng.randint(0, 1440))
        rows.append(shapes.product_row(product_id, created, prefix=prefix, HasAnalogue=product_id in analogue))
    for product_id, over in shapes.CASES.items():
        created = shapes.BASE_TIME - timedelta(days=rng.randint(30, 2000), minutes=rng.randint(0, 1440))
        rows.append(shapes.product_row(product_id, created, **over))
    execute_batch(cur, insert_sql(product), [_binary(r) for r in rows], page_size=500)
    conn.commit()
    log(f"demo: inserted {len(rows)} products ({len(shapes.CASES)} edge cases) and {len(units)} measure units")

    doomed = ids[profile_active:]
    soft, hard = doomed[: shapes.SOFT_DELETED], doomed[shapes.SOFT_DELETED :]
    events_so_far = len(rows) + len(soft) + 2 * len(hard)  # a hard delete is an event and its tombstone
    updates = shapes.TARGET_EVENTS - events_so_far
    every_id = [r[product.key] for r in rows]
    clock = shapes.BASE_TIME
    statement = None
    batch = []
    for n in range(updates):
        product_id = rng.choice(every_id)
        clock += timedelta(seconds=rng.randint(1, 90))
        edit = shapes.product_edit(n)
        statement = statement or _update_sql(product, [*edit, UPDATED])
        batch.append({**edit, UPDATED: clock, "_key": product_id})
        if len(batch) == 2000:
            execute_batch(cur, statement, batch, page_size=500)
            conn.commit()
            log(f"demo: {n + 1}/{updates} updates applied")
            batch = []
    if batch:
        execute_batch(cur, statement, batch, page_size=500)
    for product_id in soft:
        clock += timedelta(minutes=5)
        cur.execute(_update_sql(product, [DELETED, UPDATED]), {DELETED: True, UPDATED: clock, "_key": product_id})
    for product_id in hard:
        cur.execute(f'DELETE FROM {_relation(product)} WHERE "{product.key}" = %s', (product_id,))
    conn.commit()
    log(f"demo: {updates} updates, {len(soft)} soft deletes, {len(hard)} hard deletes applied")
    events = {"product": shapes.TARGET_EVENTS, "measure_unit": mu_events}
    events.update(_seed_queued_tables(settings, cur, sorted(every_id), clock))
    conn.commit()
    conn.close()
    return {
        "products": len(rows),
        "active": shapes.ACTIVE_PRODUCTS,
        "product_events": shapes.TARGET_EVENTS,
        "measure_unit_events": mu_events,
        "events": events,
    }


def _write(cur: Any, model: TableModel, rows: list[dict[str, Any]]) -> None:
    execute_batch(cur, insert_sql(model), [_binary(r) for r in rows], page_size=500)


def _where_key(model: TableModel) -> str:
    return " AND ".join(f'"{k}" = %(_{k})s' for k in model.keys)


def _change(cur: Any, model: TableModel, row: dict[str, Any], **values: Any) -> None:
    """An UPDATE of `values` on one row, by its (possibly composite) key."""
    assignments = ", ".join(f'"{c}" = %({c})s' for c in values)
    keys = {f"_{k}": row[k] for k in model.keys}
    cur.execute(f"UPDATE {_relation(model)} SET {assignments} WHERE {_where_key(model)}", {**values, **keys})


def _delete(cur: Any, model: TableModel, row: dict[str, Any]) -> None:
    cur.execute(f"DELETE FROM {_relation(model)} WHERE {_where_key(model)}", {f"_{k}": row[k] for k in model.keys})


def _seed_queued_tables(settings: Settings, cur: Any, product_ids: list[int], clock: Any) -> dict[str, int]:
    """Prices, stock and image links of every product, each table with updates, a soft delete
    and a hard delete (an event and its tombstone), so staging sees every operation. Returns
    the events each table's topic gets."""
    configured = {t.name for t in settings.tables}
    events: dict[str, int] = {}
    created = shapes.BASE_TIME - timedelta(days=30)
    later = clock + timedelta(minutes=10)

    def history(name: str, rows: list[dict[str, Any]], edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        model = demo_model(settings, name)
        _write(cur, model, rows)
        edited = rows[: max(1, len(rows) // 10)]
        for row in edited:
            _change(cur, model, row, **edit(row), Updated=later)
        _change(cur, model, rows[-1], Deleted=True, Updated=later)
        _delete(cur, model, rows[-2])
        events[name] = len(rows) + len(edited) + 1 + 2

    if "product_pricing" in configured:
        history(
            "product_pricing",
            [shapes.pricing_row(1000 + n, product_id, created) for n, product_id in enumerate(product_ids)],
            lambda row: {"Price": row["Price"] + 10, "PriceWithVat": (row["Price"] + 10) * shapes.VAT},
        )
    if "product_availability" in configured:
        history(
            "product_availability",
            [
                shapes.availability_row(5000 + 2 * n + storage - 1, product_id, storage, created)
                for n, product_id in enumerate(product_ids)
                for storage in shapes.STORAGES
            ],
            lambda row: {"Amount": row["Amount"] + 5, "LastCountedAt": later},
        )
    if "product_image" in configured:
        history(
            "product_image",
            [
                shapes.image_row(product_id, 90_000 + 10 * n + order, order, created)
                for n, product_id in enumerate(product_ids)
                for order in range(1, shapes.images_of(product_id) + 1)
            ],
            lambda row: {"SortOrder": row["SortOrder"] + 10, "IsMain": False},
        )
    return events


def changes(settings: Settings, count: int, seed_value: int = 7, log: Log = print) -> dict[str, Any]:
    """Apply `count` realistic changes: mostly edits, some new products, some soft deletes.
    Returns how many product events they produce."""
    product = demo_model(settings, "product")
    relation, key = _relation(product), f'"{product.key}"'
    conn = connect_source(settings)
    cur = conn.cursor()
    cur.execute(f'SELECT {key} FROM {relation} WHERE NOT "{DELETED}" ORDER BY {key}')
    # The edge cases keep their values: `demo changes` moves the profile-shaped products only.
    active = [r[0] for r in cur.fetchall() if r[0] not in shapes.CASES]
    cur.execute(
        f"SELECT coalesce(max({key}), {shapes.RANDOM_IDS.start}), "
        f'coalesce(max("{UPDATED}"), now()::timestamp) FROM {relation}'
    )
    max_id, clock = one_row(cur)
    rng = random.Random(f"{seed_value}-{count}-{max_id}-{len(active)}")
    kinds = {"update": 0, "insert": 0, "soft_delete": 0}
    for n in range(count):
        clock += timedelta(seconds=rng.randint(1, 60))
        roll = rng.random()
        if roll < 0.05 or not active:
            max_id += rng.randint(1, 50)
            row = shapes.product_row(
                max_id, clock, prefix=rng.choice(["SEM1", "SABO", "WBR0"]), HasAnalogue=rng.random() < 0.67
            )
            cur.execute(insert_sql(product), _binary(row))
            active.append(max_id)
            kinds["insert"] += 1
        elif roll < 0.07 and len(active) > 1:
            product_id = active.pop(rng.randrange(len(active)))
            cur.execute(_update_sql(product, [DELETED, UPDATED]), {DELETED: True, UPDATED: clock, "_key": product_id})
            kinds["soft_delete"] += 1
        else:
            product_id = rng.choice(active)
            edit = shapes.product_change(n, round(rng.uniform(0.05, 0.35), 3))
            cur.execute(_update_sql(product, [*edit, UPDATED]), {**edit, UPDATED: clock, "_key": product_id})
            kinds["update"] += 1
    conn.commit()
    conn.close()
    log(
        f"demo: applied {count} changes ({kinds['update']} updates, {kinds['insert']} inserts, "
        f"{kinds['soft_delete']} soft deletes)"
    )
    return {"events": count, **kinds}
