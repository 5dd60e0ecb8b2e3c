"""load: raw zone -> bronze, one transaction per object.

Each object is COPYed straight into bronze and recorded in the manifest in the same
transaction: a crash leaves an object either wholly loaded and recorded, or not at all.
An object that overlaps rows already in bronze goes through a temporary table and
`ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING` instead. A malformed
line goes to the rejects table with its object, line number and reason; the rest of the
object still loads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Optional

import msgspec
import orjson

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from pipeline.bronze import bronze_relation, ensure_bronze
from pipeline.db import connect
from pipeline.config import Settings, TableConfig
from pipeline.envelope import is_bare_json_object, unwrap
from pipeline.steps.ingest import StepCancelled
from pipeline.storage import RawStore

Log = Callable[[str], None]
COPY_CHUNK = 1 << 20  # bytes handed to PostgreSQL per read of the COPY stream

COPY_COLUMNS = "kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, cdc_payload, batch_file"
_INSERT = f"""
INSERT INTO {{bronze}} ({COPY_COLUMNS})
SELECT {COPY_COLUMNS}
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


class CopyRows:
    """An object's lines as COPY text, parsed and checked as PostgreSQL reads them: the whole
    object is never in memory, and the server stores rows while Python parses the next ones.
    After the COPY, `lines` and `rejects` say what was read."""

    def __init__(self, table_name: str, key: str, lines: Iterable[bytes]):
        self.table_name = table_name
        self.key = key
        self.lines = 0
        self.rejects: list[tuple] = []
        self._rows = self._generate(lines)
        self._buffer = bytearray()

    def _generate(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        batch_file = self.key.encode().replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
        for number, raw in enumerate(lines, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw or raw.isspace():
                continue
            self.lines += 1
            try:
                # Schema-wrapped values are stored as their bare envelope: the schema block is
                # two thirds of every message and the same for all of them.
                yield _fast_copy_row(raw, batch_file) or _copy_row(parse_line(raw), batch_file)
            except BadLine as bad:
                self.rejects.append((self.table_name, self.key, number, str(bad),
                                     raw.decode("utf-8", "replace")[:10000]))

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            row = next(self._rows, None)
            if row is None:
                break
            self._buffer += row
        size = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk


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


class _RawLine(msgspec.Struct):
    """A raw-zone line as ingest writes it; key and value stay JSON text (never Python objects)."""

    topic: str
    partition: int
    offset: int
    value: msgspec.Raw
    timestamp: Optional[int] = None
    key: msgspec.Raw = msgspec.UNSET


_RAW_LINE = msgspec.json.Decoder(_RawLine)
_NULL = b"null"


def _fast_copy_row(raw: bytes, batch_file: bytes) -> bytes | None:
    """The COPY row of an ordinary line without building its JSON in Python (most of the
    load's own CPU went there), or None when anything is unusual: the caller then takes
    parse_line, which decides the same way and names what is wrong."""
    if b"\t" in raw or b"\r" in raw:
        return None  # whitespace that COPY's text format would read as a column separator
    try:
        line = _RAW_LINE.decode(raw)
        value = bytes(line.value)
        key = _NULL if line.key is msgspec.UNSET else bytes(line.key)
        # The decoder checks the JSON it skips but not its UTF-8; what it skips outside key and
        # value is not stored. A schema-wrapped value is unwrapped by the full path.
        if not (value == _NULL or is_bare_json_object(value)):
            return None
        if not key.isascii():
            key.decode("utf-8")
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None
    return b"\t".join((
        line.topic.encode().replace(b"\\", b"\\\\"), b"%d" % line.partition, b"%d" % line.offset,
        b"\\N" if line.timestamp is None else b"%d" % line.timestamp,
        b"\\N" if key == _NULL else key.replace(b"\\", b"\\\\"),
        b"\\N" if value == _NULL else value.replace(b"\\", b"\\\\"), batch_file,
    )) + b"\n"


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
    def __init__(self, settings: Settings, table: TableConfig, log: Log, *, migrate: bool = True):
        """migrate: create or bring up to date the bronze tables first; the extra workers of
        one load skip it, since the first Loader already did."""
        self.settings = settings
        self.table = table
        self.log = log
        self.conn = connect(settings)
        self.bronze = bronze_relation(settings.file, table)
        self.meta = sql.Identifier(settings.file.meta_schema)
        self._tune_session()
        if migrate:
            with self.conn, self.conn.cursor() as cur:
                ensure_bronze(cur, settings.file, table)

    def _tune_session(self) -> None:
        """Session settings for bulk loading; each is best effort (a server may refuse one).

        An object's lines (5,000 x a few kB) fit in memory: the temp table in local buffers
        (set before the session's first temp table), the ORDER BY of the insert in work_mem.
        A commit need not wait for the WAL flush: an object whose commit is lost in a server
        crash is not in the manifest either, so the next load simply loads it again."""
        for setting in ("SET temp_buffers = '64MB'", "SET work_mem = '64MB'", "SET synchronous_commit = off"):
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

    def _copy_into_bronze(self, cur, rows: CopyRows) -> int | None:
        """COPY straight into bronze: rows inserted, or None when some row is already there.

        An object normally holds offsets no other object holds, so the common case needs no
        staging table; a replayed or overlapping object hits the unique key, and then the
        whole COPY is undone (savepoint) for the ON CONFLICT path."""
        cur.execute("SAVEPOINT copy_into_bronze")
        try:
            cur.copy_expert(sql.SQL("COPY {} ({}) FROM STDIN").format(self.bronze, sql.SQL(COPY_COLUMNS)), rows,
                            size=COPY_CHUNK)
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT copy_into_bronze")
            return None
        inserted = cur.rowcount
        cur.execute("RELEASE SAVEPOINT copy_into_bronze")
        return inserted

    def _copy_through_temp_table(self, cur, rows: CopyRows) -> int:
        """COPY into a temporary table, then insert what bronze does not hold yet (in line order)."""
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS load_lines (line_number bigint GENERATED ALWAYS AS IDENTITY, "
                    "kafka_topic text, kafka_partition integer, kafka_offset bigint, kafka_timestamp bigint, "
                    "kafka_key jsonb, cdc_payload jsonb, batch_file text) ON COMMIT DELETE ROWS")
        cur.copy_expert(f"COPY load_lines ({COPY_COLUMNS}) FROM STDIN", rows, size=COPY_CHUNK)
        cur.execute(sql.SQL(_INSERT).format(bronze=self.bronze))
        return cur.rowcount

    def write_object(self, key: str, etag: str, read_lines: Callable[[], Iterable[bytes]]) -> tuple[int, int, int]:
        """(lines, inserted, rejected): the object's rows, its rejects and its manifest row in one
        transaction. `read_lines` gives the object's lines from the start each time it is called
        (a second time only when the object overlaps rows already in bronze)."""
        with self.conn, self.conn.cursor() as cur:
            rows = CopyRows(self.table.bronze_table, key, read_lines())
            inserted = self._copy_into_bronze(cur, rows)
            if inserted is None:
                rows = CopyRows(self.table.bronze_table, key, read_lines())
                inserted = self._copy_through_temp_table(cur, rows)
            rejects, lines = rows.rejects, rows.lines
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
        workers = max(1, min(settings.load_workers, len(pending)))
        log(f"load: {len(pending)} new objects under {table.raw_prefix} ({result.skipped} already loaded), "
            f"{workers} at a time")
        _load_objects(settings, table, loader, store, pending, workers, result, log, cancel)
        if result.inserted:
            # Fresh statistics before anyone reads the new rows: without them the planner takes
            # a freshly filled table for an empty one, and staging's ranking join turns quadratic.
            loader.analyze()
            log(f"load: analyzed {settings.file.bronze_schema}.{table.bronze_table}")
    finally:
        loader.close()
    return result


def _load_objects(settings: Settings, table: TableConfig, first: Loader, store: RawStore, pending: list[dict],
                  workers: int, result: LoadResult, log: Log, cancel: threading.Event | None) -> None:
    """Load `pending` with `workers` threads, each with its own connection (a PostgreSQL backend
    of its own: the server parses and stores one object per core while Python parses the next).

    Each object is still one transaction, so the outcome is the same as one at a time: every
    object is either wholly loaded and recorded, or not at all. The first error stops the
    others after their current object, and is raised."""
    remaining = iter(pending)
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def next_object() -> dict | None:
        with lock:
            if stop.is_set() or (cancel is not None and cancel.is_set()):
                return None
            return next(remaining, None)

    def work(loader: Loader) -> None:
        try:
            while (obj := next_object()) is not None:
                lines, inserted, rejected = loader.write_object(
                    obj["Key"], obj["ETag"], lambda key=obj["Key"]: store.lines(key))
                with lock:
                    result.objects += 1
                    result.lines += lines
                    result.inserted += inserted
                    result.rejected += rejected
                    count, total = result.objects, result.inserted
                if rejected:
                    log(f"load: {obj['Key']}: {rejected} line(s) rejected, see {settings.file.meta_schema}.load_rejects")
                if count % 10 == 0 or count == len(pending):
                    log(f"load: {count}/{len(pending)} objects, {total} rows inserted")
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's thread
            with lock:
                errors.append(exc)
            stop.set()

    if workers == 1:
        work(first)  # in this thread: nothing to overlap, and a profiler sees the work
    else:
        extras = [Loader(settings, table, log, migrate=False) for _ in range(workers - 1)]
        try:
            threads = [threading.Thread(target=work, args=(loader,), name=f"load-{n}", daemon=True)
                       for n, loader in enumerate([first, *extras])]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            for extra in extras:
                extra.close()
    if errors:
        raise errors[0]
    if cancel is not None and cancel.is_set() and result.objects < len(pending):
        raise StepCancelled(f"load cancelled after {result.objects} of {len(pending)} objects; "
                            "every loaded object is complete and recorded")
