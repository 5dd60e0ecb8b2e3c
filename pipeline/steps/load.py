"""load: raw zone -> bronze, one transaction per object.

Each object is COPYed into a temporary table, inserted with
`ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING`, and recorded in
the manifest in the same transaction: a crash leaves an object either wholly loaded
and recorded, or not at all. A malformed line goes to the rejects table with its
object, line number and reason; the rest of the object still loads.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from pipeline.bronze import bronze_relation, ensure_bronze
from pipeline.db import connect
from pipeline.config import Settings, TableConfig
from pipeline.envelope import unwrap
from pipeline.steps.ingest import StepCancelled
from pipeline.storage import RawStore

Log = Callable[[str], None]

_COLUMNS = "kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, cdc_payload, batch_file"
_INSERT = f"""
INSERT INTO {{bronze}} ({_COLUMNS})
SELECT {_COLUMNS}
FROM load_lines
ORDER BY line_number
ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING
"""


@dataclass
class LoadResult:
    objects: int = 0
    skipped: int = 0
    lines: int = 0
    inserted: int = 0
    rejected: int = 0

    def counts(self) -> dict:
        return {"objects": self.objects, "skipped_objects": self.skipped, "lines": self.lines,
                "inserted": self.inserted, "rejected": self.rejected}


@dataclass
class PreparedObject:
    """An object's lines as COPY text, parsed and checked (no database work yet)."""

    copy_text: io.BytesIO
    lines: int = 0
    rejects: list[tuple] = field(default_factory=list)


class BadLine(Exception):
    """A raw line that cannot be loaded; the text is the reason."""


def parse_line(raw: bytes) -> tuple[str, int, int, int | None, object, object]:
    """(topic, partition, offset, timestamp, key, envelope) of a raw line; raises BadLine."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadLine(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise BadLine("not a JSON object")
    for name in ("topic", "partition", "offset", "value"):
        if name not in record:
            raise BadLine(f"missing {name!r}")
    if not isinstance(record["topic"], str):
        raise BadLine("'topic' is not a string")
    for name in ("partition", "offset"):
        if not isinstance(record[name], int) or isinstance(record[name], bool):
            raise BadLine(f"{name!r} is not an integer")
    timestamp = record.get("timestamp")
    if timestamp is not None and (not isinstance(timestamp, int) or isinstance(timestamp, bool)):
        raise BadLine("'timestamp' is not an integer")
    value = unwrap(record["value"])
    if value is not None and not isinstance(value, dict):
        raise BadLine("'value' is neither a change event nor null")
    return record["topic"], record["partition"], record["offset"], timestamp, record.get("key"), value


def _copy_text(value) -> bytes:
    # COPY's text format: backslash escapes, \N for NULL; compact JSON has no raw tabs or newlines.
    if value is None:
        return b"\\N"
    return orjson.dumps(value).replace(b"\\", b"\\\\")


def _copy_row(parsed: tuple, batch_file: bytes) -> bytes:
    topic, partition, offset, timestamp, key, value = parsed
    return b"\t".join((
        topic.encode().replace(b"\\", b"\\\\"), b"%d" % partition, b"%d" % offset,
        b"\\N" if timestamp is None else b"%d" % timestamp, _copy_text(key), _copy_text(value), batch_file,
    )) + b"\n"


class Loader:
    def __init__(self, settings: Settings, table: TableConfig, log: Log):
        self.settings = settings
        self.table = table
        self.log = log
        self.conn = connect(settings)
        self.bronze = bronze_relation(settings.file, table)
        self.meta = sql.Identifier(settings.file.meta_schema)
        self._tune_session()
        with self.conn, self.conn.cursor() as cur:
            ensure_bronze(cur, settings.file, table)

    def _tune_session(self) -> None:
        """Session settings for bulk loading; each is best effort (a server may refuse one).

        An object's lines (5,000 x a few kB) fit in memory: the temp table in local buffers
        (set before the session's first temp table), the ORDER BY of the insert in work_mem.
        lz4 compresses the TOASTed payloads several times faster than the default pglz, and
        decompresses faster for every later read of bronze (a column without an explicit
        compression method takes the session's default when a row is stored)."""
        for setting in ("SET temp_buffers = '64MB'", "SET work_mem = '64MB'", "SET default_toast_compression = 'lz4'"):
            try:
                with self.conn.cursor() as cur:
                    cur.execute(setting)
                self.conn.commit()
            except psycopg2.Error:
                self.conn.rollback()

    def close(self) -> None:
        self.conn.close()

    def analyze(self) -> None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql.SQL("ANALYZE {}").format(self.bronze))

    def truncate(self) -> None:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(sql.SQL("TRUNCATE {}").format(self.bronze))
            for name in ("load_manifest", "load_rejects"):
                cur.execute(sql.SQL("DELETE FROM {}.{} WHERE bronze_table = %s").format(self.meta, sql.Identifier(name)),
                            (self.table.bronze_table,))

    def loaded(self) -> dict[str, str]:
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT object_key, etag FROM {}.load_manifest WHERE bronze_table = %s")
                        .format(self.meta), (self.table.bronze_table,))
            rows = dict(cur.fetchall())
        self.conn.commit()
        return rows

    def load_object(self, key: str, etag: str, body: bytes) -> tuple[int, int, int]:
        """(lines, inserted, rejected) for one object, all in one transaction."""
        return self.write_object(key, etag, self.prepare_object(key, body))

    def prepare_object(self, key: str, body: bytes) -> PreparedObject:
        """Parse and check an object's lines into COPY text. Pure Python: safe in another thread."""
        prepared = PreparedObject(io.BytesIO())
        good, rejects = prepared.copy_text, prepared.rejects
        batch_file = key.encode().replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
        lines = 0
        for number, raw in enumerate(body.splitlines(), start=1):
            if not raw.strip():
                continue
            lines += 1
            try:
                # Schema-wrapped values are stored as their bare envelope: the schema block is
                # two thirds of every message and the same for all of them.
                good.write(_copy_row(parse_line(raw), batch_file))
            except BadLine as bad:
                rejects.append((self.table.bronze_table, key, number, str(bad), raw.decode("utf-8", "replace")[:10000]))
        good.seek(0)
        prepared.lines = lines
        return prepared

    def _copy_into_bronze(self, cur, good: io.BytesIO) -> int | None:
        """COPY straight into bronze: rows inserted, or None when some row is already there.

        An object normally holds offsets no other object holds, so the common case needs no
        staging table; a replayed or overlapping object hits the unique key, and then the
        whole COPY is undone (savepoint) for the ON CONFLICT path."""
        cur.execute("SAVEPOINT copy_into_bronze")
        try:
            cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN").format(self.bronze, sql.SQL(_COLUMNS)), good)
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT copy_into_bronze")
            good.seek(0)
            return None
        inserted = cur.rowcount
        cur.execute("RELEASE SAVEPOINT copy_into_bronze")
        return inserted

    def _copy_through_temp_table(self, cur, good: io.BytesIO) -> int:
        """COPY into a temporary table, then insert what bronze does not hold yet (in line order)."""
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS load_lines (line_number bigint GENERATED ALWAYS AS IDENTITY, "
                    "kafka_topic text, kafka_partition integer, kafka_offset bigint, kafka_timestamp bigint, "
                    "kafka_key jsonb, cdc_payload jsonb, batch_file text) ON COMMIT DELETE ROWS")
        cur.copy_expert(f"COPY load_lines ({_COLUMNS}) FROM STDIN", good)
        cur.execute(sql.SQL(_INSERT).format(bronze=self.bronze))
        return cur.rowcount

    def write_object(self, key: str, etag: str, prepared: PreparedObject) -> tuple[int, int, int]:
        """(lines, inserted, rejected): the prepared lines, the rejects and the manifest row in one transaction."""
        good, rejects, lines = prepared.copy_text, prepared.rejects, prepared.lines
        with self.conn, self.conn.cursor() as cur:
            inserted = self._copy_into_bronze(cur, good)
            if inserted is None:
                inserted = self._copy_through_temp_table(cur, good)
            if rejects:
                cur.executemany(sql.SQL(
                    "INSERT INTO {}.load_rejects (bronze_table, object_key, line_number, reason, line) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (bronze_table, object_key, line_number) "
                    "DO UPDATE SET reason = EXCLUDED.reason, line = EXCLUDED.line, rejected_at = now()")
                    .format(self.meta), rejects)
            cur.execute(sql.SQL(
                "INSERT INTO {}.load_manifest (bronze_table, object_key, etag, lines, inserted, rejected) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (bronze_table, object_key) DO UPDATE SET "
                "etag = EXCLUDED.etag, lines = EXCLUDED.lines, inserted = EXCLUDED.inserted, "
                "rejected = EXCLUDED.rejected, loaded_at = now()").format(self.meta),
                (self.table.bronze_table, key, etag, lines, inserted, len(rejects)))
        return lines, inserted, len(rejects)


def load(settings: Settings, table: TableConfig, *, full: bool, log: Log = print,
         cancel: threading.Event | None = None, store: RawStore | None = None) -> LoadResult:
    store = store or RawStore(settings)
    result = LoadResult()
    loader = Loader(settings, table, log)
    try:
        if full:
            loader.truncate()
            log(f"load: full refresh, truncated {settings.file.bronze_schema}.{table.bronze_table}")
        done = loader.loaded()
        objects = list(store.list(table.raw_objects_prefix))
        pending = [o for o in objects if done.get(o["Key"]) != o["ETag"]]
        result.skipped = len(objects) - len(pending)
        log(f"load: {len(pending)} new objects under {table.raw_prefix} ({result.skipped} already loaded)")
        for index, (obj, prepared) in enumerate(_prepared_ahead(store, loader, pending, cancel), start=1):
            if cancel is not None and cancel.is_set():
                raise StepCancelled(f"load cancelled after {index - 1} of {len(pending)} objects; "
                                    "every loaded object is complete and recorded")
            lines, inserted, rejected = loader.write_object(obj["Key"], obj["ETag"], prepared)
            result.objects += 1
            result.lines += lines
            result.inserted += inserted
            result.rejected += rejected
            if rejected:
                log(f"load: {obj['Key']}: {rejected} line(s) rejected, see {settings.file.meta_schema}.load_rejects")
            if index % 10 == 0 or index == len(pending):
                log(f"load: {index}/{len(pending)} objects, {result.inserted} rows inserted")
        if result.inserted:
            # Fresh statistics before anyone reads the new rows: without them the planner takes
            # a freshly filled table for an empty one, and staging's ranking join turns quadratic.
            loader.analyze()
            log(f"load: analyzed {settings.file.bronze_schema}.{table.bronze_table}")
    finally:
        loader.close()
    return result


def _prepared_ahead(store: RawStore, loader: Loader, pending: list[dict],
                    cancel: threading.Event | None) -> Iterator[tuple[dict, PreparedObject]]:
    """The pending objects, each read and parsed one step ahead in a worker thread while the
    previous one is written: PostgreSQL (another process) works while Python parses. At
    most two prepared objects are held at a time, so memory stays bounded by the object size."""
    if not pending:
        return

    def prepare(obj: dict) -> PreparedObject:
        return loader.prepare_object(obj["Key"], store.get(obj["Key"]))

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-prepare") as pool:
        future = pool.submit(prepare, pending[0])
        for index, obj in enumerate(pending):
            prepared = future.result()
            if index + 1 < len(pending) and not (cancel is not None and cancel.is_set()):
                future = pool.submit(prepare, pending[index + 1])
            yield obj, prepared
