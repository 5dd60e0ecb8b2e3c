"""A synthetic Debezium SQL Server producer: contract-shaped change events for
`ConcordDb.dbo.Product`, written straight to the broker at any volume.

Shape (data contract, /work/shared/contract/README.md):
  * key  `{"schema": {...}, "payload": {"ID": <bigint>}}`, value
    `{"schema": {...49-column Envelope schema...}, "payload": {"before","after","source","op","ts_ms","transaction"}}`
    (JSON converter with schemas enabled, as production runs it). The schema blocks are
    serialised once; every message splices its payload in after them.
  * SQL Server connector encodings: `datetime` as epoch ms (io.debezium.time.Timestamp),
    `bit` as JSON boolean, `uniqueidentifier` as an uppercase GUID string, `varbinary` as
    base64, `float` as a JSON number, `bigint` as a number. (dbo.Product has no
    `datetime2`, `date` or `decimal` column; `source.ts_ns` is the only nanosecond field.)
  * `source.connector = "sqlserver"` with strictly increasing `commit_lsn` / `change_lsn`
    ('00000027:00000758:0003') and `event_serial_no`.
  * Stream: a snapshot (op `r`) of min(61,400, 60 % of the events) products with IDs from
    7,800,000 up, then changes: ~88 % updates (before + after), ~7 % inserts of new
    products (IDs continue past the snapshot's), ~5 % deletes (op `d` with `before`,
    followed by a tombstone, which counts as one of the events).

Deterministic for a given seed. `Generator` keeps its state, so a second `produce()`
call continues the same history (the incremental benchmark's 10,000 new events).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from confluent_kafka import Producer

from pipeline.demo import rows, shapes

FIRST_ID = 7_800_000
PRODUCTS = 61_400
TOPIC_PREFIX = "cord"
DATABASE = "ConcordDb"

_SOURCE_FIELDS = [
    ("version", "string", False),
    ("connector", "string", False),
    ("name", "string", False),
    ("ts_ms", "int64", False),
    ("snapshot", "string", True),
    ("db", "string", False),
    ("sequence", "string", True),
    ("ts_us", "int64", True),
    ("ts_ns", "int64", True),
    ("schema", "string", False),
    ("table", "string", False),
    ("change_lsn", "string", True),
    ("commit_lsn", "string", True),
    ("event_serial_no", "int64", True),
]


MODEL = shapes.product_model()
_ENCODE = rows.sqlserver_encoder(MODEL)


def value_schema(topic: str) -> dict:
    row = rows.connect_fields(MODEL)
    source = [
        {
            "type": t,
            "optional": o,
            **(
                {
                    "name": "io.debezium.data.Enum",
                    "version": 1,
                    "parameters": {"allowed": "true,last,false,incremental"},
                    "default": "false",
                }
                if n == "snapshot"
                else {}
            ),
            "field": n,
        }
        for n, t, o in _SOURCE_FIELDS
    ]
    return {
        "type": "struct",
        "fields": [
            {"type": "struct", "fields": row, "optional": True, "name": f"{topic}.Value", "field": "before"},
            {"type": "struct", "fields": row, "optional": True, "name": f"{topic}.Value", "field": "after"},
            {
                "type": "struct",
                "fields": source,
                "optional": False,
                "name": "io.debezium.connector.sqlserver.Source",
                "field": "source",
            },
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
            {"type": "int64", "optional": True, "field": "ts_us"},
            {"type": "int64", "optional": True, "field": "ts_ns"},
            {
                "type": "struct",
                "fields": [
                    {"type": "string", "optional": False, "field": "id"},
                    {"type": "int64", "optional": False, "field": "total_order"},
                    {"type": "int64", "optional": False, "field": "data_collection_order"},
                ],
                "optional": True,
                "name": "event.block",
                "version": 1,
                "field": "transaction",
            },
        ],
        "optional": False,
        "name": f"{topic}.Envelope",
        "version": 2,
    }


def key_schema(topic: str) -> dict:
    return {
        "type": "struct",
        "fields": [{"type": "int64", "optional": False, "field": "ID"}],
        "optional": False,
        "name": f"{topic}.Key",
    }


EPOCH_MS_BASE = 1_577_836_800_000  # 2020-01-01
_EPOCH = datetime(1970, 1, 1)


def _at(epoch_ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=epoch_ms)


def product_row(rng: random.Random, product_id: int, now_ms: int) -> dict:
    """The shared dbo.Product row (pipeline.demo.shapes) as the SQL Server connector writes it;
    one in ten products is for sale, so that the flag's share is not a constant."""
    created = EPOCH_MS_BASE + (product_id % 1500) * 86_400_000 + (product_id % 86_400) * 1000
    updated = max(created, now_ms - rng.randint(0, 86_400_000))
    return _ENCODE(shapes.product_row(product_id, _at(created), _at(updated), IsForSale=product_id % 10 == 0))


@dataclass
class Generator:
    """The change history of dbo.Product, event by event. Each item is (key bytes, value bytes | None)."""

    topic: str
    seed: int = 7
    source_table: str = "Product"  # source.table of the events (bench/tables.py: Product's copies)
    products: int = PRODUCTS
    rng: random.Random = field(init=False)
    live: list[int] = field(default_factory=list)
    rows: dict[int, dict] = field(default_factory=dict)
    rows_json: dict[int, bytes] = field(default_factory=dict)
    next_id: int = FIRST_ID
    lsn: int = 0x27_00000758_0001
    serial: int = 0
    clock_ms: int = 0
    snapshot_done: bool = False
    counts: dict = field(default_factory=lambda: {"r": 0, "c": 0, "u": 0, "d": 0, "tombstone": 0})

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self.clock_ms = int(time.time() * 1000) - 3_600_000
        schema = orjson.dumps(value_schema(self.topic))
        self.value_head = b'{"schema":' + schema + b',"payload":'
        self.key_head = b'{"schema":' + orjson.dumps(key_schema(self.topic)) + b',"payload":{"ID":'
        self.schema_bytes = len(schema)
        self.source_base = {
            "version": "2.7.3.Final",
            "connector": "sqlserver",
            "name": TOPIC_PREFIX,
            "db": DATABASE,
            "sequence": None,
            "schema": "dbo",
            "table": self.source_table,
        }

    @staticmethod
    def _lsn_text(value: int) -> str:
        return f"{value >> 48:08X}:{(value >> 16) & 0xFFFFFFFF:08X}:{value & 0xFFFF:04X}"

    def _key(self, product_id: int) -> bytes:
        return self.key_head + b"%d}}" % product_id

    def _value(self, op: str, before: bytes | None, after: bytes | None, snapshot: str) -> bytes:
        """The schema-wrapped value; rows come as their JSON text (serialised once per state)."""
        self.clock_ms += 1
        ts = self.clock_ms
        source = self.source_base.copy()
        source["ts_ms"] = ts - 5
        source["snapshot"] = snapshot
        source["ts_us"] = (ts - 5) * 1000
        source["ts_ns"] = (ts - 5) * 1_000_000
        if op == "r":
            source["change_lsn"] = None
            source["commit_lsn"] = self._lsn_text(self.lsn)
            source["event_serial_no"] = None
        else:
            self.lsn += 2  # a commit per change: change_lsn < commit_lsn, both increasing
            self.serial += 1
            source["change_lsn"] = self._lsn_text(self.lsn)
            source["commit_lsn"] = self._lsn_text(self.lsn + 1)
            source["event_serial_no"] = 1
        tail = orjson.dumps(
            {"source": source, "op": op, "ts_ms": ts, "ts_us": ts * 1000, "ts_ns": ts * 1_000_000, "transaction": None}
        )
        self.counts[op] += 1
        return b"".join(
            (self.value_head, b'{"before":', before or b"null", b',"after":', after or b"null", b",", tail[1:], b"}")
        )

    def _new_row(self, pid: int) -> None:
        row = product_row(self.rng, pid, self.clock_ms)
        self.rows[pid] = row
        self.rows_json[pid] = orjson.dumps(row)
        self.live.append(pid)

    def events(self, n: int) -> Iterator[tuple[bytes, bytes | None]]:
        """The next n events of the history (a delete and its tombstone are two events)."""
        produced = 0
        rng = self.rng
        if not self.snapshot_done:
            snapshot = min(self.products, max(1, int(n * 0.6)))
            for i in range(snapshot):
                pid = self.next_id
                self.next_id += 1
                self._new_row(pid)
                marker = "last" if i == snapshot - 1 else ("first" if i == 0 else "true")
                yield self._key(pid), self._value("r", None, self.rows_json[pid], marker)
                produced += 1
            self.snapshot_done = True
        while produced < n:
            draw = rng.random()
            if draw < 0.05 and len(self.live) > 100 and produced + 2 <= n:
                index = rng.randrange(len(self.live))
                pid = self.live[index]
                self.live[index] = self.live[-1]
                self.live.pop()
                del self.rows[pid]
                key = self._key(pid)
                yield key, self._value("d", self.rows_json.pop(pid), None, "false")
                yield key, None
                self.counts["tombstone"] += 1
                produced += 2
                continue
            if draw < 0.12:
                pid = self.next_id
                self.next_id += 1
                self._new_row(pid)
                yield self._key(pid), self._value("c", None, self.rows_json[pid], "false")
                produced += 1
                continue
            pid = self.live[rng.randrange(len(self.live))]
            before = self.rows[pid]
            after = before.copy()
            after["Updated"] = self.clock_ms
            change = rng.random()
            if change < 0.4:
                after["Description"] = before["Description"].split(" Ред.")[0] + f" Ред. {self.serial}."
                after["SearchDescription"] = after["Description"].lower()
            elif change < 0.6:
                after["Weight"] = round(0.05 + rng.random() * 0.3, 3)
            elif change < 0.75:
                after["HasAnalogue"] = not before["HasAnalogue"]
            elif change < 0.85:
                after["NotesUA"] = f"Примітка {self.serial}"
                after["NotesPL"] = f"Uwaga {self.serial}"
            else:
                after["MeasureUnitID"] = 1 + rng.randrange(7)
            after_json = orjson.dumps(after)
            before_json = self.rows_json[pid]
            self.rows[pid] = after
            self.rows_json[pid] = after_json
            yield self._key(pid), self._value("u", before_json, after_json, "false")
            produced += 1


def make_producer(bootstrap: str, compression: str = "none") -> Producer:
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 50,
            "batch.size": 4 * 1024 * 1024,
            "batch.num.messages": 10000,
            "queue.buffering.max.messages": 200_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "message.max.bytes": 8 * 1024 * 1024,
            "compression.type": compression,
            "acks": 1,
            "enable.idempotence": False,
        }
    )


def produce(
    bootstrap: str, generator: Generator, n: int, *, compression: str = "none", log: Callable[[str], None] = print
) -> dict:
    """Write the generator's next n events to its topic; returns counts, bytes and rate."""
    producer = make_producer(bootstrap, compression)
    errors: list[str] = []

    def on_delivery(err, _msg):
        if err is not None and len(errors) < 10:
            errors.append(str(err))

    started = time.monotonic()
    value_bytes = 0
    sent = 0
    topic = generator.topic
    for key, value in generator.events(n):
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        value_bytes += len(value) if value else 0
        sent += 1
        if sent % 5000 == 0:
            producer.poll(0)
        if sent % 100_000 == 0:
            log(f"produce: {sent:,}/{n:,} events ({sent / (time.monotonic() - started):,.0f}/s)")
    remaining = producer.flush(600)
    elapsed = time.monotonic() - started
    if remaining or errors:
        raise RuntimeError(f"produce: {remaining} undelivered, errors: {errors[:3]}")
    return {
        "events": sent,
        "value_bytes": value_bytes,
        "seconds": elapsed,
        "events_per_s": sent / elapsed,
        "mean_value_bytes": value_bytes / max(sent, 1),
        "schema_bytes": generator.schema_bytes,
    }
