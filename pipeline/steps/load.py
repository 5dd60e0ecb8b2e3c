"""load: raw zone -> bronze, one transaction per object.

Each object is COPYed straight into bronze and recorded in the manifest in the same
transaction: a crash leaves an object either wholly loaded and recorded, or not at all.
An object that overlaps rows already in bronze goes through a temporary table and
`ON CONFLICT (kafka_topic, kafka_epoch, kafka_partition, kafka_offset) DO NOTHING` instead.
A malformed line goes to the rejects table with its object, line number and reason; the
rest of the object still loads. So does a valid line PostgreSQL refuses to store (a number
beyond `numeric`): the object is then loaded in parts until that row stands alone. JSON
that jsonb refuses for a known reason is stored repaired (`repair_line`), and counted.

A full load fills a shadow table and puts it in bronze's place in one transaction at the
end, so readers see the previous bronze until the new one is complete.
"""

from __future__ import annotations

import functools
import io
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec
import orjson
import psycopg2
import psycopg2.errors
from psycopg2 import sql
from psycopg2.extensions import cursor

from pipeline.config import Settings, TableConfig
from pipeline.process.log_sink import Log
from pipeline.steps.envelope import is_bare_json_object, unwrap
from pipeline.steps.ingest import StepCancelled
from pipeline.stores.bronze import POSITION, create_shadow, ensure_bronze, replace_with_shadow
from pipeline.stores.db import connect
from pipeline.stores.storage import RawStore

COPY_CHUNK = 1 << 20  # bytes handed to PostgreSQL per read of the COPY stream

COPY_COLUMNS = (
    "kafka_topic, kafka_partition, kafka_offset, kafka_epoch, kafka_timestamp, kafka_key, cdc_payload, batch_file"
)
_INSERT = f"""
INSERT INTO {{bronze}} ({COPY_COLUMNS})
SELECT {COPY_COLUMNS}
FROM load_lines
ORDER BY line_number
ON CONFLICT ({POSITION}) DO NOTHING
"""
_TEMP_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS load_lines (line_number bigint GENERATED ALWAYS AS IDENTITY, "
    "kafka_topic text, kafka_partition integer, kafka_offset bigint, kafka_epoch integer, "
    "kafka_timestamp bigint, kafka_key jsonb, cdc_payload jsonb, batch_file text) ON COMMIT DELETE ROWS"
)

# What PostgreSQL raises for one row it will not store (a value out of a type's range, JSON
# jsonb refuses, a limit of jsonb's), as opposed to a failure of the server or the session.
ROW_REFUSED = (psycopg2.DataError, psycopg2.errors.ProgramLimitExceeded, psycopg2.errors.StatementTooComplex)


@dataclass
class LoadResult:
    objects: int = 0
    skipped: int = 0
    lines: int = 0
    inserted: int = 0
    rejected: int = 0
    sanitized: int = 0

    def counts(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "skipped_objects": self.skipped,
            "lines": self.lines,
            "inserted": self.inserted,
            "rejected": self.rejected,
            "sanitized": self.sanitized,
        }


class ObjectLoad(NamedTuple):
    lines: int
    inserted: int
    rejected: int
    sanitized: int


# -- JSON that jsonb refuses ----------------------------------------------------------------
# Valid JSON escapes jsonb will not store: \u0000 (PostgreSQL's text cannot hold U+0000) and a
# UTF-16 surrogate that is not half of a high-low pair. Escapes are matched left to right, so
# an escaped backslash followed by "u0000" is read as the two characters it is.
_ESCAPE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u([0-9a-fA-F]{4})|\\.")


def _repaired_escape(match: re.Match[bytes]) -> bytes:
    whole: bytes = match.group(0)
    code = match.group(1)
    if code is None:
        return whole  # a surrogate pair or another escape: stored as it is
    value = int(code, 16)
    if value == 0:
        return b""
    if 0xD800 <= value <= 0xDFFF:
        return b"\\ufffd"
    return whole


def repair_line(raw: bytes) -> bytes:
    """`raw` with U+0000 removed from every string (values, member names, the Kafka key) and
    each lone surrogate replaced by U+FFFD; `raw` itself when it has neither (the common case
    costs one search for a backslash)."""
    # One byte is found by memchr (0.4 us in a 3.6 kB line); `b"\\u" in raw` would cost 3 us.
    start = raw.find(b"\\")
    if start < 0 or (raw.find(b"\\u0000", start) < 0 and raw.find(b"\\ud", start) < 0 and raw.find(b"\\uD", start) < 0):
        return raw
    repaired = _ESCAPE.sub(_repaired_escape, raw)
    return raw if repaired == raw else repaired  # a surrogate pair or an escaped backslash: nothing to repair


# -- where a rejected line was in Kafka -------------------------------------------------------
_INT_RANGES = {"partition": 2**31, "offset": 2**63, "epoch": 2**31}
# (topic, partition, offset, epoch) of a rejected line, each None when unknown.
Position = tuple[str | None, int | None, int | None, int | None]
# A load_rejects row: bronze table, object key, line number, reason, line text, then its Position.
RejectRow = tuple[str, str, int, str, str, str | None, int | None, int | None, int | None]
# parse_line's answer: (topic, partition, offset, epoch, timestamp, key, envelope).
ParsedLine = tuple[str, int, int, int, int | None, object, object]


def _position(topic: object, partition: object, offset: object, epoch: object) -> Position:
    """(topic, partition, offset, epoch), each None when absent or beyond its column's type."""

    def fits(name: str, value: object) -> int | None:
        if isinstance(value, int) and not isinstance(value, bool) and -_INT_RANGES[name] <= value < _INT_RANGES[name]:
            return value
        return None

    return (
        topic if isinstance(topic, str) and "\x00" not in topic else None,
        fits("partition", partition),
        fits("offset", offset),
        fits("epoch", epoch),
    )


def _position_of_line(raw: bytes) -> Position:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, None, None, None
    if not isinstance(record, dict):
        return None, None, None, None
    return _position(record.get("topic"), record.get("partition"), record.get("offset"), record.get("epoch", 0))


def _position_of_row(row: bytes) -> Position:
    topic, partition, offset, epoch = row.split(b"\t", 4)[:4]
    return _position(topic.replace(b"\\\\", b"\\").decode("utf-8", "replace"), int(partition), int(offset), int(epoch))


def _stored_text(raw: bytes) -> str:
    # The whole line; text cannot hold U+0000 or invalid UTF-8 (the raw zone keeps the bytes).
    return raw.decode("utf-8", "replace").replace("\x00", "\ufffd")


class CopyRows:
    """An object's lines as COPY text, parsed and checked as PostgreSQL reads them: the whole
    object is never in memory, and the server stores rows while Python parses the next ones.
    After the COPY, `lines`, `rejects` and `sanitized` (lines stored repaired) say what was read."""

    def __init__(self, table_name: str, key: str, lines: Iterable[bytes]):
        self.table_name = table_name
        self.key = key
        self.lines = 0
        self.sanitized = 0
        self.rejects: list[RejectRow] = []
        self._entries = self._generate(lines)
        self._buffer = bytearray()

    def _generate(self, lines: Iterable[bytes]) -> Iterator[tuple[int, bytes, bytes]]:
        batch_file = self.key.encode().replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
        for number, raw in enumerate(lines, start=1):
            raw = raw.rstrip(b"\r\n")
            if not raw or raw.isspace():
                continue
            self.lines += 1
            storable = repair_line(raw)
            try:
                # Schema-wrapped values are stored as their bare envelope: the schema block is
                # two thirds of every message and the same for all of them.
                row = _fast_copy_row(storable, batch_file) or _full_copy_row(storable, batch_file)
            except BadLine as bad:
                self.reject(number, str(bad), raw, _position_of_line(raw))
                continue
            if storable is not raw:
                self.sanitized += 1
            yield number, raw, row

    def reject(self, number: int, reason: str, raw: bytes, position: Position) -> None:
        self.rejects.append((self.table_name, self.key, number, reason, _stored_text(raw), *position))

    def entries(self) -> Iterator[tuple[int, bytes, bytes]]:
        """(line number, line as read, COPY row) of each line that makes a row: the rows one by
        one, for loading an object in parts."""
        return self._entries

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            entry = next(self._entries, None)
            if entry is None:
                break
            self._buffer += entry[2]
        size = len(self._buffer) if size < 0 else min(size, len(self._buffer))
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk


class BadLine(Exception):
    """A raw line that cannot be loaded; the text is the reason."""


class NotJSON(BadLine):
    """orjson cannot read the line (which may still be JSON that PostgreSQL reads)."""


def parse_line(raw: bytes) -> ParsedLine:
    """(topic, partition, offset, epoch, timestamp, key, envelope) of a raw line; raises BadLine."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise NotJSON(f"not JSON: {exc}") from None
    if not isinstance(record, dict):
        raise BadLine("not a JSON object")
    for name in ("topic", "partition", "offset", "value"):
        if name not in record:
            raise BadLine(f"missing {name!r}")
    if not isinstance(record["topic"], str):
        raise BadLine("'topic' is not a string")
    epoch = record.get("epoch", 0)
    for name, value in (("partition", record["partition"]), ("offset", record["offset"]), ("epoch", epoch)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise BadLine(f"{name!r} is not an integer")
    timestamp = record.get("timestamp")
    if timestamp is not None and (not isinstance(timestamp, int) or isinstance(timestamp, bool)):
        raise BadLine("'timestamp' is not an integer")
    value = unwrap(record["value"])
    if value is not None and not isinstance(value, dict):
        raise BadLine("'value' is neither a change event nor null")
    return record["topic"], record["partition"], record["offset"], epoch, timestamp, record.get("key"), value


class _RawLine(msgspec.Struct):
    """A raw-zone line as ingest writes it; key and value stay JSON text (never Python objects)."""

    topic: str
    partition: int
    offset: int
    value: msgspec.Raw
    epoch: int = 0  # absent: the topic's first epoch
    timestamp: int | None = None
    key: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


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
    return (
        b"\t".join(
            (
                line.topic.encode().replace(b"\\", b"\\\\"),
                b"%d" % line.partition,
                b"%d" % line.offset,
                b"%d" % line.epoch,
                b"\\N" if line.timestamp is None else b"%d" % line.timestamp,
                b"\\N" if key == _NULL else key.replace(b"\\", b"\\\\"),
                b"\\N" if value == _NULL else value.replace(b"\\", b"\\\\"),
                batch_file,
            )
        )
        + b"\n"
    )


def _copy_text(value: object) -> bytes:
    # COPY's text format: backslash escapes, \N for NULL; compact JSON has no raw tabs or newlines.
    if value is None:
        return b"\\N"
    return orjson.dumps(value).replace(b"\\", b"\\\\")


def _copy_row(parsed: ParsedLine, batch_file: bytes) -> bytes:
    topic, partition, offset, epoch, timestamp, key, value = parsed
    return (
        b"\t".join(
            (
                _copy_escaped(topic.encode()),
                b"%d" % partition,
                b"%d" % offset,
                b"%d" % epoch,
                b"\\N" if timestamp is None else b"%d" % timestamp,
                _copy_text(key),
                _copy_text(value),
                batch_file,
            )
        )
        + b"\n"
    )


def _full_copy_row(raw: bytes, batch_file: bytes) -> bytes:
    """The COPY row of a line the fast path declined: parsed by parse_line, or, for JSON
    with numbers beyond what orjson reads (64-bit integers, doubles: `1e400`, `1e1000000`),
    its key and value text as written, for PostgreSQL to store (numeric) or refuse."""
    try:
        return _copy_row(parse_line(raw), batch_file)
    except NotJSON:
        row = _verbatim_copy_row(raw, batch_file)
        if row is None:
            raise
        return row


def _copy_escaped(text: bytes) -> bytes:
    return text.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n").replace(b"\r", b"\\r")


def _verbatim_copy_row(raw: bytes, batch_file: bytes) -> bytes | None:
    """A row with the key and value text as the line holds them (a schema-wrapped value stays
    wrapped: bronze's change columns and staging unwrap it), or None when the line's shape or
    UTF-8 is wrong."""
    try:
        line = _RAW_LINE.decode(raw)
        value = bytes(line.value)
        key = _NULL if line.key is msgspec.UNSET else bytes(line.key)
        value.decode("utf-8")
        key.decode("utf-8")
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None
    if not (value == _NULL or value.startswith(b"{")):
        return None
    return (
        b"\t".join(
            (
                _copy_escaped(line.topic.encode()),
                b"%d" % line.partition,
                b"%d" % line.offset,
                b"%d" % line.epoch,
                b"\\N" if line.timestamp is None else b"%d" % line.timestamp,
                b"\\N" if key == _NULL else _copy_escaped(key),
                b"\\N" if value == _NULL else _copy_escaped(value),
                batch_file,
            )
        )
        + b"\n"
    )


def _refusal(exc: psycopg2.Error) -> str:
    """PostgreSQL's own words for a refused row: its message and detail."""
    diag = exc.diag
    primary = diag.message_primary or str(exc).strip().splitlines()[0]
    return f"PostgreSQL refused the row: {primary}" + (f" ({diag.message_detail})" if diag.message_detail else "")


class Loader:
    def __init__(
        self, settings: Settings, table: TableConfig, log: Log, *, migrate: bool = True, target: str | None = None
    ):
        """migrate: create or bring up to date the bronze tables first; the extra workers of
        one load skip it, since the first Loader already did. target: the event table to fill
        (a full load's shadow), bronze's own by default; its manifest rows carry its name."""
        self.settings = settings
        self.table = table
        self.log = log
        self.conn = connect(settings)
        self.meta = sql.Identifier(settings.file.meta_schema)
        self._target(target or table.bronze_table)
        self._tune_session()
        if migrate:
            with self.conn, self.conn.cursor() as cur:
                ensure_bronze(cur, settings.file, table)

    def _target(self, name: str) -> None:
        self.target = name
        self.bronze = sql.SQL("{}.{}").format(sql.Identifier(self.settings.file.bronze_schema), sql.Identifier(name))

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

    def start_shadow(self) -> str:
        """Point this loader at a new, empty shadow of bronze (a full load); returns its name."""
        with self.conn, self.conn.cursor() as cur:
            shadow = create_shadow(cur, self.settings.file, self.table)
        self._target(shadow)
        return shadow

    def replace_bronze(self) -> None:
        """The filled shadow takes bronze's place, with its manifest and rejects rows (one transaction)."""
        with self.conn, self.conn.cursor() as cur:
            replace_with_shadow(cur, self.settings.file, self.table)
        self._target(self.table.bronze_table)

    def loaded(self, keys: list[str] | None = None) -> dict[str, str]:
        """The loaded objects and their ETags: all of the table's, or those among `keys`."""
        query = "SELECT object_key, etag FROM {}.load_manifest WHERE bronze_table = %s"
        with self.conn.cursor() as cur:
            if keys is None:
                cur.execute(sql.SQL(query).format(self.meta), (self.target,))
            else:
                cur.execute(sql.SQL(query + " AND object_key = ANY(%s)").format(self.meta), (self.target, keys))
            rows = dict(cur.fetchall())
        self.conn.commit()
        return rows

    def _copy_into_bronze(self, cur: cursor, rows: CopyRows) -> int | None:
        """COPY straight into bronze: rows inserted, or None when some row is already there.

        An object normally holds offsets no other object holds, so the common case needs no
        staging table; a replayed or overlapping object hits the unique key, and then the
        whole COPY is undone (savepoint) for the ON CONFLICT path."""
        cur.execute("SAVEPOINT copy_into_bronze")
        try:
            # COPY FROM calls only read(); types-psycopg2 asks for readline() too.
            statement = sql.SQL("COPY {} ({}) FROM STDIN").format(self.bronze, sql.SQL(COPY_COLUMNS))
            cur.copy_expert(statement, rows, size=COPY_CHUNK)  # type: ignore[arg-type]
        except psycopg2.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT copy_into_bronze")
            return None
        inserted = cur.rowcount
        cur.execute("RELEASE SAVEPOINT copy_into_bronze")
        return inserted

    def _copy_through_temp_table(self, cur: cursor, rows: CopyRows | io.BytesIO) -> int:
        """COPY into a temporary table, then insert what bronze does not hold yet (in line order)."""
        cur.execute(_TEMP_TABLE)
        # COPY FROM calls only read(); types-psycopg2 asks for readline() too.
        cur.copy_expert(f"COPY load_lines ({COPY_COLUMNS}) FROM STDIN", rows, size=COPY_CHUNK)  # type: ignore[arg-type]
        cur.execute(sql.SQL(_INSERT).format(bronze=self.bronze))
        return cur.rowcount

    def _copy_in_parts(self, cur: cursor, rows: CopyRows) -> int:
        """Rows inserted, loading the object in halves, and halves of those, until each row
        PostgreSQL refuses stands alone: that row is rejected with PostgreSQL's reason, every
        other row is stored. The rare path: the object's rows are held in memory, and k refused
        rows cost about 2k·log2(rows) small COPYs."""
        entries = list(rows.entries())

        def load_part(part: list[tuple[int, bytes, bytes]]) -> int:
            cur.execute("SAVEPOINT load_part")
            try:
                inserted = self._copy_through_temp_table(cur, io.BytesIO(b"".join(row for _, _, row in part)))
                cur.execute("DELETE FROM load_lines")  # the next part starts empty
            except ROW_REFUSED as exc:
                cur.execute("ROLLBACK TO SAVEPOINT load_part")
                if len(part) == 1:
                    number, raw, row = part[0]
                    rows.reject(number, _refusal(exc), raw, _position_of_row(row))
                    return 0
                middle = len(part) // 2
                return load_part(part[:middle]) + load_part(part[middle:])
            cur.execute("RELEASE SAVEPOINT load_part")
            return inserted

        return load_part(entries) if entries else 0

    def write_object(self, key: str, etag: str, read_lines: Callable[[], Iterable[bytes]]) -> ObjectLoad:
        """The object's rows, its rejects and its manifest row in one transaction. `read_lines`
        gives the object's lines from the start each time it is called (again only when the
        object overlaps rows already in bronze, or PostgreSQL refused one of its rows)."""
        with self.conn, self.conn.cursor() as cur:
            cur.execute("SAVEPOINT object_rows")
            try:
                rows = CopyRows(self.target, key, read_lines())
                inserted = self._copy_into_bronze(cur, rows)
                if inserted is None:
                    rows = CopyRows(self.target, key, read_lines())
                    inserted = self._copy_through_temp_table(cur, rows)
            except ROW_REFUSED as exc:
                cur.execute("ROLLBACK TO SAVEPOINT object_rows")
                self.log(f"load: {key}: {_refusal(exc)}; loading the object in parts to set that row aside")
                rows = CopyRows(self.target, key, read_lines())
                inserted = self._copy_in_parts(cur, rows)
            cur.execute("RELEASE SAVEPOINT object_rows")
            rejects, lines = rows.rejects, rows.lines
            if rejects:
                cur.executemany(
                    sql.SQL(
                        "INSERT INTO {}.load_rejects (bronze_table, object_key, line_number, reason, line, "
                        "kafka_topic, kafka_partition, kafka_offset, kafka_epoch) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (bronze_table, object_key, line_number) "
                        "DO UPDATE SET reason = EXCLUDED.reason, line = EXCLUDED.line, rejected_at = now(), "
                        "kafka_topic = EXCLUDED.kafka_topic, kafka_partition = EXCLUDED.kafka_partition, "
                        "kafka_offset = EXCLUDED.kafka_offset, kafka_epoch = EXCLUDED.kafka_epoch"
                    ).format(self.meta),
                    rejects,
                )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {}.load_manifest (bronze_table, object_key, etag, lines, inserted, rejected, sanitized) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (bronze_table, object_key) DO UPDATE SET "
                    "etag = EXCLUDED.etag, lines = EXCLUDED.lines, inserted = EXCLUDED.inserted, "
                    "rejected = EXCLUDED.rejected, sanitized = EXCLUDED.sanitized, loaded_at = now()"
                ).format(self.meta),
                (self.target, key, etag, lines, inserted, len(rejects), rows.sanitized),
            )
        return ObjectLoad(lines, inserted, len(rejects), rows.sanitized)


def load(
    settings: Settings,
    table: TableConfig,
    *,
    full: bool,
    log: Log = print,
    cancel: threading.Event | None = None,
    store: RawStore | None = None,
) -> LoadResult:
    """Load the raw objects of `table` not yet in bronze; `full`: rebuild bronze from every object.

    A full load fills a shadow table, then swaps it in: a load that fails or is killed half-way
    leaves bronze as it was (the next full load drops the leftover shadow)."""
    store = store or RawStore(settings)
    result = LoadResult()
    loader = Loader(settings, table, log)
    schema = settings.file.bronze_schema
    try:
        if full:
            shadow = loader.start_shadow()
            log(
                f"load: full refresh into {schema}.{shadow}; {schema}.{table.bronze_table} is read as it was "
                "until the load is complete"
            )
        done = loader.loaded()
        objects = list(store.list(table.raw_objects_prefix))
        pending = [o for o in objects if done.get(o["Key"]) != o["ETag"]]
        result.skipped = len(objects) - len(pending)
        workers = max(1, min(settings.load_workers, len(pending)))
        log(
            f"load: {len(pending)} new objects under {table.raw_prefix} ({result.skipped} already loaded), "
            f"{workers} at a time"
        )
        _load_objects(settings, table, loader, store, pending, workers, result, log, cancel)
        if result.inserted or full:
            # Fresh statistics before anyone reads the new rows: without them the planner takes
            # a freshly filled table for an empty one, and staging's ranking join turns quadratic.
            loader.analyze()
            log(f"load: analyzed {schema}.{loader.target}")
        if full:
            loader.replace_bronze()
            log(f"load: {schema}.{table.bronze_table} replaced by the full load ({result.inserted} rows)")
    finally:
        loader.close()
    return result


def _load_objects(
    settings: Settings,
    table: TableConfig,
    first: Loader,
    store: RawStore,
    pending: list[dict[str, Any]],
    workers: int,
    result: LoadResult,
    log: Log,
    cancel: threading.Event | None,
) -> None:
    """Load `pending` with `workers` threads, each with its own connection (a PostgreSQL backend
    of its own: the server parses and stores one object per core while Python parses the next).

    Each object is still one transaction, so the outcome is the same as one at a time: every
    object is either wholly loaded and recorded, or not at all. The first error stops the
    others after their current object, and is raised."""
    remaining = iter(pending)
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def next_object() -> dict[str, Any] | None:
        with lock:
            if stop.is_set() or (cancel is not None and cancel.is_set()):
                return None
            return next(remaining, None)

    def work(loader: Loader) -> None:
        try:
            while (obj := next_object()) is not None:
                done = loader.write_object(obj["Key"], obj["ETag"], functools.partial(store.lines, obj["Key"]))
                with lock:
                    result.objects += 1
                    result.lines += done.lines
                    result.inserted += done.inserted
                    result.rejected += done.rejected
                    result.sanitized += done.sanitized
                    count, total = result.objects, result.inserted
                if done.sanitized:
                    log(
                        f"load: {obj['Key']}: {done.sanitized} event(s) stored repaired "
                        "(U+0000 removed from strings, lone UTF-16 surrogates replaced by U+FFFD)"
                    )
                if done.rejected:
                    log(
                        f"load: {obj['Key']}: {done.rejected} line(s) rejected, "
                        f"see {settings.file.meta_schema}.load_rejects"
                    )
                if count % 10 == 0 or count == len(pending):
                    log(f"load: {count}/{len(pending)} objects, {total} rows inserted")
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's thread
            with lock:
                errors.append(exc)
            stop.set()

    if workers == 1:
        work(first)  # in this thread: nothing to overlap, and a profiler sees the work
    else:
        extras = [Loader(settings, table, log, migrate=False, target=first.target) for _ in range(workers - 1)]
        try:
            threads = [
                threading.Thread(target=work, args=(loader,), name=f"load-{n}", daemon=True)
                for n, loader in enumerate([first, *extras])
            ]
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
        raise StepCancelled(
            f"load cancelled after {result.objects} of {len(pending)} objects; "
            "every loaded object is complete and recorded"
        )


class BronzeAppender:
    """The continuous runner's loader of one table: its connection stays open, and it takes
    objects as ingest writes them.

    One object at a time, on purpose: each object's rows commit before the next object's
    transaction starts, so bronze's `ingested_at` (its transaction's start) rises in commit
    order. Staging's incremental watermark (`ingested_at` above the newest it holds) relies on
    that while dbt reads bronze at the same time as this loads it."""

    def __init__(self, settings: Settings, table: TableConfig, log: Log, store: RawStore | None = None):
        self.settings, self.table, self.log = settings, table, log
        self.store = store or RawStore(settings)
        self.loader = Loader(settings, table, log)

    def not_loaded(self) -> list[dict[str, Any]]:
        """Every raw object of the table not in bronze yet, oldest first (a resume, or a catch-up)."""
        done = self.loader.loaded()
        return [o for o in self.store.list(self.table.raw_objects_prefix) if done.get(o["Key"]) != o["ETag"]]

    def append(self, objects: list[dict[str, Any]], cancel: threading.Event | None = None) -> LoadResult:
        result = LoadResult()
        done = self.loader.loaded([o["Key"] for o in objects]) if objects else {}
        pending = [o for o in objects if done.get(o["Key"]) != o["ETag"]]
        result.skipped = len(objects) - len(pending)
        _load_objects(self.settings, self.table, self.loader, self.store, pending, 1, result, self.log, cancel)
        return result

    def analyze(self) -> None:
        self.loader.analyze()

    def close(self) -> None:
        self.loader.close()
