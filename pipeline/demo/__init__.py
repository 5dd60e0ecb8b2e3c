"""The embedded demo source: ConcordDb's `dbo."Product"` and `dbo."MeasureUnit"` on
PostgreSQL, filled with data shaped like production and a change history that leaves
the product topic with the runbook's ~31,970 events and exactly 115 active products.

Everything here is deterministic for a given seed.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import psycopg2
from psycopg2.extras import execute_batch

from pipeline.config import Settings

Log = Callable[[str], None]

PRODUCT_DDL = """
CREATE TABLE IF NOT EXISTS dbo."Product" (
    "ID" bigint PRIMARY KEY,
    "NetUID" uuid NOT NULL,
    "Created" timestamp NOT NULL,
    "Updated" timestamp NOT NULL,
    "Deleted" boolean NOT NULL DEFAULT false,
    "Name" varchar(500) NOT NULL,
    "VendorCode" varchar(100),
    "Description" text,
    "Size" varchar(100),
    "Weight" double precision,
    "Volume" varchar(50),
    "Image" varchar(500),
    "MainOriginalNumber" varchar(100),
    "MeasureUnitID" bigint,
    "Top" varchar(10),
    "NamePL" varchar(500),
    "DescriptionPL" text,
    "NotesPL" text,
    "SynonymsPL" text,
    "NameUA" varchar(500),
    "DescriptionUA" text,
    "NotesUA" text,
    "SynonymsUA" text,
    "SearchName" varchar(500),
    "SearchDescription" text,
    "SearchSize" varchar(100),
    "SearchVendorCode" varchar(100),
    "SearchNamePL" varchar(500),
    "SearchDescriptionPL" text,
    "SearchSynonymsPL" text,
    "SearchNameUA" varchar(500),
    "SearchDescriptionUA" text,
    "SearchSynonymsUA" text,
    "HasAnalogue" boolean NOT NULL DEFAULT false,
    "HasImage" boolean NOT NULL DEFAULT false,
    "IsForSale" boolean NOT NULL DEFAULT false,
    "IsForWeb" boolean NOT NULL DEFAULT false,
    "IsForZeroSale" boolean NOT NULL DEFAULT false,
    "HasComponent" boolean NOT NULL DEFAULT false,
    "UCGFEA" varchar(50),
    "Standard" varchar(100),
    "OrderStandard" varchar(50),
    "PackingStandard" varchar(50),
    "SourceAmgID" bytea,
    "SourceFenixID" bytea,
    "ParentAmgID" bytea,
    "ParentFenixID" bytea,
    "SourceAmgCode" bigint,
    "SourceFenixCode" bigint
);
ALTER TABLE dbo."Product" REPLICA IDENTITY FULL;
"""

MEASURE_UNIT_DDL = """
CREATE TABLE IF NOT EXISTS dbo."MeasureUnit" (
    "ID" bigint PRIMARY KEY,
    "NetUID" uuid NOT NULL,
    "Created" timestamp NOT NULL,
    "Updated" timestamp NOT NULL,
    "Deleted" boolean NOT NULL DEFAULT false,
    "Name" varchar(100) NOT NULL,
    "NamePL" varchar(100),
    "NameUA" varchar(100)
);
ALTER TABLE dbo."MeasureUnit" REPLICA IDENTITY FULL;
"""

# Supplier prefixes of the production profile (contract README), 115 products in all.
SUPPLIER_PREFIXES = [("SEM1", 50), ("SABO", 41), ("WBR0", 6), ("YP-1", 4), ("", 2), ("0340", 2), ("YP-6", 2),
                     ("RL35", 1), ("9025", 1), ("4213", 1), ("BPW0", 1), ("SAF1", 1), ("MB-9", 1), ("KLM2", 1),
                     ("TRW1", 1)]
ACTIVE_PRODUCTS = 115
SOFT_DELETED = 8
HARD_DELETED = 7
TARGET_EVENTS = 31_970
HAS_ANALOGUE = 77

# (Russian, Polish, Ukrainian) part names of pneumatic suspension and chassis parts.
PART_NAMES = [
    ("Пневмоподушка", "Resor pneumatyczny", "Пневмоподушка"),
    ("Пневмоподушка кабины", "Miech kabiny", "Пневмоподушка кабіни"),
    ("Пневморессора", "Poduszka powietrzna", "Пневморесора"),
    ("Втулка стабилизатора", "Tuleja stabilizatora", "Втулка стабілізатора"),
    ("Клапан уровня пола", "Zawór poziomujący", "Клапан рівня підлоги"),
    ("Сайлентблок", "Tuleja metalowo-gumowa", "Сайлентблок"),
]

MEASURE_UNITS = [
    (1, "шт", "szt", "шт"), (2, "кг", "kg", "кг"), (3, "м", "m", "м"), (4, "л", "l", "л"),
    (5, "комплект", "komplet", "комплект"), (6, "пара", "para", "пара"), (7, "упаковка", "opakowanie", "упаковка"),
]

PRODUCT_COLUMNS = [
    "ID", "NetUID", "Created", "Updated", "Deleted", "Name", "VendorCode", "Description", "Size", "Weight",
    "Volume", "Image", "MainOriginalNumber", "MeasureUnitID", "Top", "NamePL", "DescriptionPL", "NotesPL",
    "SynonymsPL", "NameUA", "DescriptionUA", "NotesUA", "SynonymsUA", "SearchName", "SearchDescription",
    "SearchSize", "SearchVendorCode", "SearchNamePL", "SearchDescriptionPL", "SearchSynonymsPL", "SearchNameUA",
    "SearchDescriptionUA", "SearchSynonymsUA", "HasAnalogue", "HasImage", "IsForSale", "IsForWeb",
    "IsForZeroSale", "HasComponent", "UCGFEA", "Standard", "OrderStandard", "PackingStandard", "SourceAmgID",
    "SourceFenixID", "ParentAmgID", "ParentFenixID", "SourceAmgCode", "SourceFenixCode",
]
BASE_TIME = datetime(2025, 10, 1, 8, 0, 0)


from pipeline.stores.db import connect_source  # noqa: E402


def ensure_source_tables(settings: Settings) -> None:
    """Create the demo tables (empty) so the connector captures them from their first row."""
    with connect_source(settings) as conn:
        cur = conn.cursor()
        cur.execute(PRODUCT_DDL)
        cur.execute(MEASURE_UNIT_DDL)
    conn.close()


def has_rows(settings: Settings) -> bool:
    ensure_source_tables(settings)
    with connect_source(settings) as conn, conn.cursor() as cur:
        cur.execute('SELECT EXISTS (SELECT 1 FROM dbo."Product")')
        found = cur.fetchone()[0]
    conn.close()
    return found


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _product_row(rng: random.Random, product_id: int, prefix: str, has_analogue: bool, created: datetime) -> dict:
    ru, pl, ua = rng.choice(PART_NAMES)
    model = f"{rng.randint(1, 9)}{rng.choice('ABCDEKMNPT')}{rng.randint(100, 999)}"
    vendor_code = f"{prefix}{rng.randint(10000, 99999)}" if prefix else ""
    name = f"{ru} {model}"
    return {
        "ID": product_id,
        "NetUID": _uuid(rng),
        "Created": created,
        "Updated": created,
        "Deleted": False,
        "Name": name,
        "VendorCode": vendor_code,
        "Description": f"{ru} для подвески, модель {model}",
        "Size": f"{rng.randint(150, 400)}x{rng.randint(150, 400)}",
        "Weight": round(rng.uniform(0.05, 0.35), 3),
        "Volume": None,
        "Image": None,
        "MainOriginalNumber": f"{rng.randint(1000000, 9999999)}",
        "MeasureUnitID": 1,
        "Top": rng.choice(["", "TOP", None]),
        "NamePL": f"{pl} {model}",
        "DescriptionPL": f"{pl} do zawieszenia, model {model}",
        "NotesPL": None,
        "SynonymsPL": pl.lower(),
        "NameUA": f"{ua} {model}",
        "DescriptionUA": f"{ua} для підвіски, модель {model}",
        "NotesUA": None,
        "SynonymsUA": ua.lower(),
        "SearchName": name.lower(),
        "SearchDescription": None,
        "SearchSize": None,
        "SearchVendorCode": vendor_code.lower(),
        "SearchNamePL": f"{pl} {model}".lower(),
        "SearchDescriptionPL": None,
        "SearchSynonymsPL": None,
        "SearchNameUA": f"{ua} {model}".lower(),
        "SearchDescriptionUA": None,
        "SearchSynonymsUA": None,
        "HasAnalogue": has_analogue,
        "HasImage": False,
        "IsForSale": False,
        "IsForWeb": True,
        "IsForZeroSale": False,
        "HasComponent": False,
        "UCGFEA": "8708801000",
        "Standard": None,
        "OrderStandard": None,
        "PackingStandard": None,
        "SourceAmgID": rng.getrandbits(128).to_bytes(16, "big"),
        "SourceFenixID": None,
        "ParentAmgID": rng.getrandbits(128).to_bytes(16, "big"),
        "ParentFenixID": None,
        "SourceAmgCode": rng.randint(100000, 999999),
        "SourceFenixCode": None,
    }


def _insert_sql(columns: list[str]) -> str:
    cols = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join(f"%({c})s" for c in columns)
    return f'INSERT INTO dbo."Product" ({cols}) VALUES ({marks})'


def _binary(row: dict) -> dict:
    return {k: psycopg2.Binary(v) if isinstance(v, bytes) else v for k, v in row.items()}


_UPDATE_TEXT = ('UPDATE dbo."Product" SET "Description" = %s, "DescriptionPL" = %s, "SearchDescription" = %s, '
                '"NotesUA" = %s, "Updated" = %s WHERE "ID" = %s')


def seed(settings: Settings, seed_value: int = 42, log: Log = print) -> dict:
    """Insert the demo products and apply their change history. Refuses a non-empty table."""
    rng = random.Random(seed_value)
    ensure_source_tables(settings)
    conn = connect_source(settings)
    cur = conn.cursor()
    cur.execute('SELECT count(*) FROM dbo."Product"')
    if cur.fetchone()[0]:
        conn.close()
        raise RuntimeError('the demo source dbo."Product" already holds rows; `demo changes N` adds more, '
                           "or start from an empty data directory")

    # Measure units: inserts and one rename each.
    mu_events = 0
    for unit_id, ru, pl, ua in MEASURE_UNITS:
        created = BASE_TIME - timedelta(days=2000)
        cur.execute('INSERT INTO dbo."MeasureUnit" VALUES (%s, %s, %s, %s, false, %s, %s, %s)',
                    (unit_id, _uuid(rng), created, created, ru, pl, ua))
        cur.execute('UPDATE dbo."MeasureUnit" SET "Updated" = %s WHERE "ID" = %s', (BASE_TIME, unit_id))
        mu_events += 2
    conn.commit()

    total = ACTIVE_PRODUCTS + SOFT_DELETED + HARD_DELETED
    prefixes = [p for p, n in SUPPLIER_PREFIXES for _ in range(n)]
    ids = sorted(rng.sample(range(7_800_000, 7_899_999), total))
    active_ids = ids[:ACTIVE_PRODUCTS]
    rng.shuffle(active_ids)
    analogue = set(active_ids[:HAS_ANALOGUE])
    rows = []
    for index, product_id in enumerate(ids):
        prefix = prefixes[index] if index < len(prefixes) else rng.choice(["SEM1", "SABO"])
        created = BASE_TIME - timedelta(days=rng.randint(30, 2000), minutes=rng.randint(0, 1440))
        rows.append(_product_row(rng, product_id, prefix, product_id in analogue, created))
    execute_batch(cur, _insert_sql(PRODUCT_COLUMNS), [_binary(r) for r in rows], page_size=500)
    conn.commit()
    log(f"demo: inserted {len(rows)} products and {len(MEASURE_UNITS)} measure units")

    doomed = ids[ACTIVE_PRODUCTS:]
    soft, hard = doomed[:SOFT_DELETED], doomed[SOFT_DELETED:]
    events_so_far = len(rows) + len(soft) + 2 * len(hard)  # a hard delete is an event and its tombstone
    updates = TARGET_EVENTS - events_so_far
    clock = BASE_TIME
    batch = []
    for n in range(updates):
        product_id = rng.choice(ids)
        clock += timedelta(seconds=rng.randint(1, 90))
        rev = f"rev {n}"
        batch.append((f"Описание {rev}", f"Opis {rev}", f"описание {rev}", f"Примітка {rev}", clock, product_id))
        if len(batch) == 2000:
            execute_batch(cur, _UPDATE_TEXT, batch, page_size=500)
            conn.commit()
            log(f"demo: {n + 1}/{updates} updates applied")
            batch = []
    if batch:
        execute_batch(cur, _UPDATE_TEXT, batch, page_size=500)
    for product_id in soft:
        clock += timedelta(minutes=5)
        cur.execute('UPDATE dbo."Product" SET "Deleted" = true, "Updated" = %s WHERE "ID" = %s', (clock, product_id))
    for product_id in hard:
        cur.execute('DELETE FROM dbo."Product" WHERE "ID" = %s', (product_id,))
    conn.commit()
    conn.close()
    log(f"demo: {updates} updates, {len(soft)} soft deletes, {len(hard)} hard deletes applied")
    return {"products": len(rows), "active": ACTIVE_PRODUCTS, "product_events": TARGET_EVENTS,
            "measure_unit_events": mu_events}


def changes(settings: Settings, count: int, seed_value: int = 7, log: Log = print) -> dict:
    """Apply `count` realistic changes: mostly edits, some new products, some soft deletes.
    Returns how many product events they produce."""
    conn = connect_source(settings)
    cur = conn.cursor()
    cur.execute('SELECT "ID" FROM dbo."Product" WHERE NOT "Deleted" ORDER BY "ID"')
    active = [r[0] for r in cur.fetchall()]
    cur.execute('SELECT coalesce(max("ID"), 7800000), coalesce(max("Updated"), now()::timestamp) FROM dbo."Product"')
    max_id, clock = cur.fetchone()
    rng = random.Random(f"{seed_value}-{count}-{max_id}-{len(active)}")
    kinds = {"update": 0, "insert": 0, "soft_delete": 0}
    for n in range(count):
        clock += timedelta(seconds=rng.randint(1, 60))
        roll = rng.random()
        if roll < 0.05 or not active:
            max_id += rng.randint(1, 50)
            prefix = rng.choice(["SEM1", "SABO", "WBR0"])
            row = _product_row(rng, max_id, prefix, rng.random() < 0.67, clock)
            cur.execute(_insert_sql(PRODUCT_COLUMNS), _binary(row))
            active.append(max_id)
            kinds["insert"] += 1
        elif roll < 0.07 and len(active) > 1:
            product_id = active.pop(rng.randrange(len(active)))
            cur.execute('UPDATE dbo."Product" SET "Deleted" = true, "Updated" = %s WHERE "ID" = %s',
                        (clock, product_id))
            kinds["soft_delete"] += 1
        else:
            product_id = rng.choice(active)
            weight = round(rng.uniform(0.05, 0.35), 3)
            cur.execute('UPDATE dbo."Product" SET "Weight" = %s, "Description" = %s, "Updated" = %s WHERE "ID" = %s',
                        (weight, f"Описание изм. {n}", clock, product_id))
            kinds["update"] += 1
    conn.commit()
    conn.close()
    log(f"demo: applied {count} changes ({kinds['update']} updates, {kinds['insert']} inserts, "
        f"{kinds['soft_delete']} soft deletes)")
    return {"events": count, **kinds}
