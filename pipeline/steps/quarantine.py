"""The quarantine: messages ingest could not take, indexed in PostgreSQL, and how to act on them.

Ingest writes each poison message whole (key and value bytes, text or base64) to a quarantine
object next to the raw zone, and indexes it in `bi_console.quarantine` when it records the
batch's position, so a crash and rerun index the same rows again. This module reads that
index (`summary`, `list_entries`), reads a message back from its object (`show`), and replays
the messages that the current rules accept into the raw zone (`replay`), where load takes
them like any other object. The same summaries exist for load's rejected lines.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from botocore.exceptions import ClientError
from psycopg2 import sql
from psycopg2.extensions import cursor

from pipeline.config import FileConfig, Settings, TableConfig
from pipeline.process.log_sink import Log
from pipeline.steps import ingest  # a module import: ingest imports this module back
from pipeline.steps.envelope import PoisonMessage, check_event
from pipeline.stores.db import connect, one_row
from pipeline.stores.storage import RawStore

PREVIEW_CHARS = 160

_TABLE = """
CREATE TABLE IF NOT EXISTS {meta}.quarantine (
    table_name       text        NOT NULL,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_epoch      integer     NOT NULL DEFAULT 0,
    kafka_offset     bigint      NOT NULL,
    reason           text        NOT NULL,
    value_bytes      bigint      NOT NULL,
    preview          text,
    object_key       text        NOT NULL,
    quarantined_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at      timestamptz,
    replay_object_key text,
    PRIMARY KEY (table_name, topic, kafka_epoch, kafka_partition, kafka_offset)
)
"""

# A rerun of the same batch (after a crash, or a full re-read) indexes the same messages
# again: their first quarantine time and their replay stay as they were.
_RECORD = """
INSERT INTO {meta}.quarantine (table_name, topic, kafka_partition, kafka_epoch, kafka_offset, reason,
                               value_bytes, preview, object_key)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (table_name, topic, kafka_epoch, kafka_partition, kafka_offset) DO UPDATE SET
    reason = EXCLUDED.reason, value_bytes = EXCLUDED.value_bytes, preview = EXCLUDED.preview,
    object_key = EXCLUDED.object_key
"""


class QuarantineNotFound(LookupError):
    """No quarantined message at that position; the message names it."""


@dataclass
class QuarantineSummary:
    table: str
    total: int = 0
    new_since: int = 0  # quarantined after `since` (all of them without a `since`)
    replayed: int = 0
    newest_reason: str | None = None
    newest_at: datetime | None = None

    @property
    def pending(self) -> int:
        """Quarantined and not replayed: the messages still missing from bronze."""
        return self.total - self.replayed


@dataclass
class RejectSummary:
    table: str
    total: int = 0
    new_since: int = 0
    newest_reason: str | None = None
    newest_at: datetime | None = None


@dataclass
class QuarantineEntry:
    table: str
    topic: str
    partition: int
    epoch: int
    offset: int
    reason: str
    value_bytes: int
    preview: str | None
    object_key: str
    quarantined_at: datetime
    replayed_at: datetime | None
    replay_object_key: str | None


@dataclass
class QuarantinedMessage:
    """A quarantined message as it arrived: key and value are the original bytes."""

    entry: QuarantineEntry
    key: bytes | None
    value: bytes | None
    timestamp: int | None


@dataclass
class ReplayResult:
    checked: int = 0
    replayed: int = 0
    still_failing: int = 0
    objects: list[str] = field(default_factory=list)  # raw objects written
    failing: list[tuple[str, int, int, int, str]] = field(
        default_factory=list
    )  # topic, partition, epoch, offset, reason

    def counts(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "replayed": self.replayed,
            "still_failing": self.still_failing,
            "objects": len(self.objects),
        }


# -- written by ingest ----------------------------------------------------------------------
def ensure_quarantine_table(cur: cursor, file_config: FileConfig) -> None:
    cur.execute(sql.SQL(_TABLE).format(meta=sql.Identifier(file_config.meta_schema)))


def preview(raw: bytes | None) -> str | None:
    """The start of a value as text an operator can read (undecodable bytes shown as U+FFFD)."""
    if raw is None:
        return None
    text = raw[: PREVIEW_CHARS * 4].decode("utf-8", "replace")
    return text[:PREVIEW_CHARS] + ("…" if len(raw) > len(text[:PREVIEW_CHARS].encode()) else "")


def record(
    cur: cursor,
    file_config: FileConfig,
    table: TableConfig,
    topic: str,
    partition: int,
    epoch: int,
    object_key: str,
    messages: list[tuple[int, str, int, str | None]],
) -> None:
    """Index one batch's quarantined messages: (offset, reason, value bytes, preview) each."""
    cur.executemany(
        sql.SQL(_RECORD).format(meta=sql.Identifier(file_config.meta_schema)),
        [
            (table.name, topic, partition, epoch, offset, reason, value_bytes, text, object_key)
            for offset, reason, value_bytes, text in messages
        ],
    )


def decode_field(field_value: dict[str, Any]) -> bytes | None:
    """The original bytes of a quarantine line's key or value ({"text"} or {"base64"})."""
    if "base64" in field_value:
        return base64.b64decode(field_value["base64"])
    text = field_value.get("text")
    return None if text is None else text.encode("utf-8")


# -- read by --check, the TUI and the CLI ---------------------------------------------------
def _table(settings: Settings, table: TableConfig | str) -> TableConfig:
    return table if isinstance(table, TableConfig) else settings.table(table)


def _exists(cur: cursor, schema: str, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s)", (sql.Identifier(schema, name).as_string(cur),))
    return one_row(cur)[0] is not None


def _figures(
    settings: Settings,
    relation: str,
    key_column: str,
    key: str,
    stamp: str,
    tie_break: str,
    since: datetime | None,
    extra: str = "",
) -> tuple[tuple[Any, ...], tuple[Any, ...] | None] | None:
    """(counts, (newest reason, its time)) of one table's rows of `relation`: count(*), those
    stamped after `since`, then `extra`'s columns; None before the relation exists."""
    meta = settings.file.meta_schema
    rows = sql.SQL("FROM {}.{} WHERE {} = %s").format(
        sql.Identifier(meta), sql.Identifier(relation), sql.Identifier(key_column)
    )
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            if not _exists(cur, meta, relation):
                return None
            cur.execute(
                sql.SQL("SELECT count(*), count(*) FILTER (WHERE %s::timestamptz IS NULL OR {} > %s){} {}").format(
                    sql.Identifier(stamp), sql.SQL(extra), rows
                ),
                (since, since, key),
            )
            counts = one_row(cur)
            cur.execute(
                sql.SQL("SELECT reason, {} {} ORDER BY {} DESC, {} LIMIT 1").format(
                    sql.Identifier(stamp), rows, sql.Identifier(stamp), sql.SQL(tie_break)
                ),
                (key,),
            )
            return counts, cur.fetchone()
    finally:
        conn.close()


def summary(settings: Settings, table: TableConfig | str, since: datetime | None = None) -> QuarantineSummary:
    table = _table(settings, table)
    result = QuarantineSummary(table.name)
    figures = _figures(
        settings,
        "quarantine",
        "table_name",
        table.name,
        "quarantined_at",
        "kafka_epoch DESC, kafka_offset DESC",
        since,
        extra=", count(replayed_at)",
    )
    if figures is not None:
        (result.total, result.new_since, result.replayed), newest = figures
        if newest:
            result.newest_reason, result.newest_at = newest
    return result


def reject_summary(settings: Settings, table: TableConfig | str, since: datetime | None = None) -> RejectSummary:
    """The same figures for load's rejected lines (`load_rejects`, keyed by bronze table)."""
    table = _table(settings, table)
    result = RejectSummary(table.name)
    figures = _figures(
        settings,
        "load_rejects",
        "bronze_table",
        table.bronze_table,
        "rejected_at",
        "object_key DESC, line_number DESC",
        since,
    )
    if figures is not None:
        (result.total, result.new_since), newest = figures
        if newest:
            result.newest_reason, result.newest_at = newest
    return result


_ENTRY_COLUMNS = (
    "table_name, topic, kafka_partition, kafka_epoch, kafka_offset, reason, value_bytes, preview, "
    "object_key, quarantined_at, replayed_at, replay_object_key"
)


def _entries(
    settings: Settings, where: sql.Composable, params: tuple[Any, ...], limit: int | None
) -> list[QuarantineEntry]:
    meta = settings.file.meta_schema
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            if not _exists(cur, meta, "quarantine"):
                return []
            cur.execute(
                sql.SQL(
                    "SELECT {} FROM {}.quarantine WHERE {} "
                    "ORDER BY table_name, topic, kafka_epoch, kafka_partition, kafka_offset {}"
                ).format(
                    sql.SQL(_ENTRY_COLUMNS),
                    sql.Identifier(meta),
                    where,
                    sql.SQL("LIMIT {}").format(sql.Literal(limit)) if limit is not None else sql.SQL(""),
                ),
                params,
            )
            return [QuarantineEntry(*row) for row in cur.fetchall()]
    finally:
        conn.close()


def list_entries(settings: Settings, table: TableConfig | str | None = None, limit: int = 50) -> list[QuarantineEntry]:
    """Quarantined messages in log order (every table without `table`), with a preview of each value."""
    if table is None:
        return _entries(settings, sql.SQL("true"), (), limit)
    return _entries(settings, sql.SQL("table_name = %s"), (_table(settings, table).name,), limit)


@dataclass
class RejectEntry:
    """A raw line load could not store. The position is None for a line that does not say it
    (not JSON); `preview` is the start of the line."""

    table: str
    topic: str | None
    partition: int | None
    epoch: int | None
    offset: int | None
    object_key: str
    line_number: int
    reason: str
    preview: str
    rejected_at: datetime


def list_rejects(settings: Settings, table: TableConfig | str | None = None, limit: int = 50) -> list[RejectEntry]:
    """Load's rejected lines, newest first (every table without `table`)."""
    tables = [_table(settings, table)] if table is not None else list(settings.tables)
    names = {t.bronze_table: t.name for t in tables}
    meta = settings.file.meta_schema
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            if not _exists(cur, meta, "load_rejects"):
                return []
            cur.execute(
                sql.SQL(
                    "SELECT bronze_table, kafka_topic, kafka_partition, kafka_epoch, kafka_offset, object_key, "
                    "line_number, reason, left(line, %s), rejected_at FROM {}.load_rejects WHERE bronze_table = ANY(%s) "
                    "ORDER BY rejected_at DESC, object_key, line_number LIMIT %s"
                ).format(sql.Identifier(meta)),
                (PREVIEW_CHARS, list(names), limit),
            )
            return [RejectEntry(names[row[0]], *row[1:]) for row in cur.fetchall()]
    finally:
        conn.close()


def show(
    settings: Settings,
    table: TableConfig | str,
    topic: str,
    partition: int,
    offset: int,
    epoch: int = 0,
    store: RawStore | None = None,
) -> QuarantinedMessage:
    """The whole original message, read back from its quarantine object."""
    table = _table(settings, table)
    found = _entries(
        settings,
        sql.SQL("table_name = %s AND topic = %s AND kafka_partition = %s AND kafka_offset = %s AND kafka_epoch = %s"),
        (table.name, topic, partition, offset, epoch),
        None,
    )
    where = f"{topic}[{partition}] offset {offset} (epoch {epoch}) of table {table.name}"
    if not found:
        raise QuarantineNotFound(f"no quarantined message at {where}")
    entry = found[0]
    store = store or RawStore(settings)
    try:
        lines = store.get(entry.object_key).splitlines()
    except ClientError as exc:
        raise QuarantineNotFound(
            f"the quarantine object {entry.object_key} of {where} cannot be read: "
            f"{exc.response.get('Error', {}).get('Code')}"
        ) from None
    for line in lines:
        record_ = orjson.loads(line)
        if (record_["offset"], record_.get("epoch", 0), record_["partition"]) == (offset, epoch, partition):
            return QuarantinedMessage(
                entry, decode_field(record_["key"]), decode_field(record_["value"]), record_.get("timestamp")
            )
    raise QuarantineNotFound(f"{entry.object_key} does not hold {where}")


# -- acted on -----------------------------------------------------------------------------------
def replay_key(table: TableConfig, quarantine_object_key: str) -> str:
    """The raw object that holds the replayed messages of one quarantine object: one name per
    quarantine object, so a replay run again writes the same object."""
    relative = quarantine_object_key[len(table.quarantine_prefix) :]
    return f"{table.raw_objects_prefix}replay/{relative}"


def _existing_lines(store: RawStore, key: str) -> dict[tuple[int, int, int], bytes]:
    try:
        body = store.get(key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return {}
        raise
    lines = {}
    for line in body.splitlines(keepends=True):
        head = orjson.loads(line)
        lines[(head.get("epoch", 0), head["partition"], head["offset"])] = line
    return lines


def replay(
    settings: Settings, table: TableConfig | str | None = None, log: Log = print, store: RawStore | None = None
) -> ReplayResult:
    """Check every quarantined message not yet replayed against the current rules (the
    envelope check, `BI_INGEST_MAX_VALUE_BYTES`); write the ones that pass to the raw zone,
    as ingest would have, and mark them replayed. The others stay, with today's reason.

    Idempotent: a replayed message is not checked again, and a replay object is rewritten
    only to add messages, with the lines it already held."""
    tables = [_table(settings, table)] if table is not None else list(settings.tables)
    store = store or RawStore(settings)
    result = ReplayResult()
    meta = sql.Identifier(settings.file.meta_schema)
    conn = connect(settings)
    try:
        for config in tables:
            pending = _entries(settings, sql.SQL("table_name = %s AND replayed_at IS NULL"), (config.name,), None)
            by_object: dict[str, dict[tuple[int, int, int], QuarantineEntry]] = defaultdict(dict)
            for entry in pending:
                by_object[entry.object_key][(entry.epoch, entry.partition, entry.offset)] = entry
            for object_key, entries in by_object.items():
                passed: dict[tuple[int, int, int], bytes] = {}
                reasons: list[tuple[str, QuarantineEntry]] = []
                try:
                    body = store.get(object_key)
                except ClientError as exc:
                    log(
                        f"quarantine: cannot read {object_key} ({exc.response.get('Error', {}).get('Code')}); "
                        f"its {len(entries)} message(s) stay quarantined"
                    )
                    result.still_failing += len(entries)
                    continue
                for line in body.splitlines():
                    record_ = orjson.loads(line)
                    position = (record_.get("epoch", 0), record_["partition"], record_["offset"])
                    quarantined = entries.get(position)
                    if quarantined is None:
                        continue
                    result.checked += 1
                    key, value = decode_field(record_["key"]), decode_field(record_["value"])
                    try:
                        key_json, value_json, _ = check_event(
                            key, value, config.key_columns, settings.ingest_max_value_bytes
                        )
                    except PoisonMessage as poison:
                        result.still_failing += 1
                        result.failing.append(
                            (
                                quarantined.topic,
                                quarantined.partition,
                                quarantined.epoch,
                                quarantined.offset,
                                str(poison),
                            )
                        )
                        if str(poison) != quarantined.reason:
                            reasons.append((str(poison), quarantined))
                        continue
                    passed[position] = ingest._line(
                        record_["topic"],
                        record_["partition"],
                        record_["offset"],
                        record_.get("timestamp"),
                        key_json,
                        value_json,
                        epoch=position[0],
                    )
                with conn, conn.cursor() as cur:
                    for reason, entry in reasons:
                        cur.execute(
                            sql.SQL(
                                "UPDATE {}.quarantine SET reason = %s WHERE table_name = %s AND "
                                "topic = %s AND kafka_epoch = %s AND kafka_partition = %s AND "
                                "kafka_offset = %s"
                            ).format(meta),
                            (reason, config.name, entry.topic, entry.epoch, entry.partition, entry.offset),
                        )
                if not passed:
                    continue
                target = replay_key(config, object_key)
                lines = {**_existing_lines(store, target), **passed}
                store.put(target, b"".join(lines[position] for position in sorted(lines)))
                with conn, conn.cursor() as cur:  # after the object is written: a crash here replays again
                    cur.executemany(
                        sql.SQL(
                            "UPDATE {}.quarantine SET replayed_at = now(), replay_object_key = %s WHERE table_name = %s "
                            "AND topic = %s AND kafka_epoch = %s AND kafka_partition = %s AND kafka_offset = %s"
                        ).format(meta),
                        [(target, config.name, entries[p].topic, *p) for p in passed],
                    )
                result.replayed += len(passed)
                result.objects.append(target)
                log(f"quarantine: {len(passed)} message(s) of {object_key} replayed into {target}")
    finally:
        conn.close()
    log(f"quarantine: {result.checked} checked, {result.replayed} replayed, {result.still_failing} still failing")
    return result
