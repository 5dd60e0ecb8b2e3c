"""ingest: Kafka -> raw zone (S3 JSONL), exactly once per object.

Objects are named from topic, partition and first/last offset, so a rerun from the
same position rewrites the same object and never adds a second copy (the rule of
Confluent's S3 sink). The position advances only after an object is written. Memory
is bounded by the batch size. A message that is not a Debezium change event goes to
the quarantine prefix, whole, with its reason, and ingestion goes on.

A broker that loses its topics (and a Debezium that re-snapshots into new ones) starts a
new epoch of the partition: the new log is read into objects of its own (`epoch=N/`, and
`"epoch": N` in each line), next to the earlier epochs' objects, which are never deleted.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from psycopg2 import sql

from pipeline.config import Settings, TableConfig
from pipeline.process.log_sink import Log
from pipeline.process.memory import release_freed_memory
from pipeline.steps import quarantine
from pipeline.steps.envelope import PoisonMessage, check_event, unwrap
from pipeline.stores.bronze import bronze_relation, ensure_meta
from pipeline.stores.db import ServiceUnreachable, connect, one_row
from pipeline.stores.kafka import PartitionOffsets, client_config, probe_broker, topic_offsets
from pipeline.stores.storage import RawStore, S3Refused

UPLOADS_IN_FLIGHT = 2  # objects being written while the next batch is read
IDLE_RECHECK_SECONDS = 5.0  # no message for this long before the expected end: look at the log again
STALL_SECONDS = 300.0  # no message at all for this long: give up (and release the refresh lock)
CLOSE_SECONDS = 10.0  # a consumer that has not closed by then is left to the process's exit
# Errors of the client's link to the broker, not of the partition: the consumer reconnects by
# itself, so they end the read only when the broker does not answer a probe either.
_LINK_ERRORS = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE, KafkaError._TIMED_OUT}
# The partition is gone for now (a broker that lost its topics): the idle check decides what it is.
_GONE_ERRORS = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC}


class TopicReset(Exception):
    """The topic no longer holds what was being read from it (the broker lost its data)."""

    def __init__(self, topic: str, partition: int, reason: str):
        self.topic, self.partition, self.reason = topic, partition, reason
        super().__init__(
            f"topic {topic} partition {partition} went back while it was read: {reason}; the broker lost its data"
        )


class StepCancelled(Exception):
    """The operator cancelled the step; nothing half-written was left behind."""


@dataclass
class EpochReset:
    """A partition whose topic went back: a new epoch started, the earlier ones are all kept."""

    table: str
    topic: str
    partition: int
    old_epoch: int
    new_epoch: int
    reason: str
    start_offset: int
    earlier_objects: int  # raw objects of the old epoch
    earlier_offsets: int  # offsets those objects cover
    earlier_bronze_events: int | None  # events of the old epoch in bronze (None: no bronze table yet)

    def notice(self) -> str:
        bronze = (
            "not loaded yet"
            if self.earlier_bronze_events is None
            else f"{self.earlier_bronze_events:,} events in bronze"
        )
        return (
            f"topic {self.topic} partition {self.partition} was reset ({self.reason}): epoch {self.new_epoch} "
            f"started at offset {self.start_offset}; epoch {self.old_epoch} keeps {self.earlier_offsets:,} "
            f"offsets in {self.earlier_objects} raw objects and {bronze}; nothing was deleted"
        )

    def as_detail(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IngestResult:
    events: int = 0
    objects: int = 0
    quarantined: int = 0
    tombstones: int = 0
    replaced: int = 0  # objects removed because objects of this run hold their offsets
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)
    resets: list[EpochReset] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        counts = {
            "events": self.events,
            "objects": self.objects,
            "quarantined": self.quarantined,
            "tombstones": self.tombstones,
        }
        if self.resets:
            counts["topic_resets"] = len(self.resets)
        return counts


@dataclass(frozen=True)
class WrittenObject:
    """A raw object ingest wrote and recorded: what a loader needs to take it, and when its
    newest event was committed at the source, reached the topic and reached the raw zone."""

    key: str
    etag: str
    events: int
    newest_topic_ms: int | None  # the Kafka timestamp of its newest event
    newest_commit_ms: int | None  # that event's source commit time (Debezium source.ts_ms)
    written_at: float  # epoch seconds


def source_commit_ms(value: bytes | None) -> int | None:
    """The source commit time (Debezium `source.ts_ms`) of one event's value, None when it has none."""
    if not value:
        return None
    try:
        envelope = unwrap(orjson.loads(value))
        committed = envelope.get("source", {}).get("ts_ms") if isinstance(envelope, dict) else None
    except (ValueError, AttributeError):
        return None
    return committed if isinstance(committed, int) else None


def epoch_dir(epoch: int) -> str:
    """Epoch 0 has no directory: its objects keep the names they had before epochs existed."""
    return f"epoch={epoch}/" if epoch else ""


def object_key(table: TableConfig, topic: str, partition: int, first: int, last: int, epoch: int = 0) -> str:
    return f"{table.raw_objects_prefix}{epoch_dir(epoch)}{topic}+{partition}+{first:020d}+{last:020d}.jsonl"


def quarantine_key(table: TableConfig, topic: str, partition: int, first: int, last: int, epoch: int = 0) -> str:
    return f"{table.quarantine_prefix}{epoch_dir(epoch)}batch={topic}+{partition}+{first:020d}+{last:020d}.jsonl"


def parse_object_key(table: TableConfig, key: str) -> tuple[int, str, int, int, int] | None:
    """(epoch, topic, partition, first, last) of a raw object ingest names, else None."""
    rest = key[len(table.raw_objects_prefix) :] if key.startswith(table.raw_objects_prefix) else None
    if rest is None or not rest.endswith(".jsonl"):
        return None
    epoch = 0
    if rest.startswith("epoch="):
        number, _, rest = rest[len("epoch=") :].partition("/")
        if not number.isdigit():
            return None
        epoch = int(number)
    parts = rest[: -len(".jsonl")].rsplit("+", 3)
    if len(parts) != 4 or "/" in parts[0] or not all(p.isdigit() for p in parts[1:]):
        return None  # a topic name has no "/": anything else (a replay object) is not ingest's
    return epoch, parts[0], int(parts[1]), int(parts[2]), int(parts[3])


def epoch_objects(
    store: RawStore, table: TableConfig, topic: str, partition: int, epoch: int
) -> list[tuple[str, int, int]]:
    """(key, first offset, last offset) of the partition's raw objects of one epoch."""
    found = []
    for obj in store.list(f"{table.raw_objects_prefix}{epoch_dir(epoch)}{topic}+{partition}+"):
        parsed = parse_object_key(table, obj["Key"])
        if parsed is not None and parsed[:3] == (epoch, topic, partition):
            found.append((obj["Key"], parsed[3], parsed[4]))
    return found


def _covered(spans: list[tuple[int, int]]) -> int:
    """How many offsets the spans cover (objects of different runs may overlap)."""
    total, reach = 0, -1
    for first, last in sorted(spans):
        if last > reach:
            total += last - max(first, reach + 1) + 1
            reach = last
    return total


@dataclass
class SavedPosition:
    next_offset: int
    identity: str | None  # the log's identity when it was read (topic_epoch)
    epoch: int


class Checkpoints:
    """The ingest position and epoch per partition, kept in the analytics database."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.conn = connect(settings)
        self.conn.autocommit = True
        meta = settings.file.meta_schema
        self.table = sql.SQL("{}.ingest_checkpoint").format(sql.Identifier(meta))
        with self.conn.cursor() as cur:
            ensure_meta(cur, settings.file)
            cur.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = 'ingest_checkpoint' AND column_name = 'epoch_number'",
                (meta,),
            )
            if cur.fetchone() is None:  # checked first: ALTER TABLE locks the table even when it has the column
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS epoch_number integer NOT NULL DEFAULT 0").format(
                        self.table
                    )
                )
            quarantine.ensure_quarantine_table(cur, settings.file)
            # A position is recorded after each object: waiting for its WAL flush cost ~30 ms a
            # time (6 s of a 1M-event ingest). A position lost in a server crash only moves back
            # to one whose objects are already written; the rerun rewrites them under the same
            # names, and load skips or deduplicates them.
            cur.execute("SET synchronous_commit = off")

    def get(self, topic: str, partition: int) -> SavedPosition | None:
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT next_offset, topic_epoch, epoch_number FROM {} WHERE topic = %s AND kafka_partition = %s"
                ).format(self.table),
                (topic, partition),
            )
            row = cur.fetchone()
        return SavedPosition(*row) if row else None

    def set(self, topic: str, partition: int, next_offset: int, identity: str | None, epoch: int) -> None:
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (topic, kafka_partition, next_offset, topic_epoch, epoch_number, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (topic, kafka_partition) "
                    "DO UPDATE SET next_offset = EXCLUDED.next_offset, topic_epoch = EXCLUDED.topic_epoch, "
                    "epoch_number = EXCLUDED.epoch_number, updated_at = now()"
                ).format(self.table),
                (topic, partition, next_offset, identity, epoch),
            )

    def record_quarantine(
        self,
        table: TableConfig,
        topic: str,
        partition: int,
        epoch: int,
        object_key_: str,
        messages: list[tuple[int, str, int, str | None]],
    ) -> None:
        with self.conn.cursor() as cur:
            quarantine.record(cur, self.settings.file, table, topic, partition, epoch, object_key_, messages)

    def bronze_events(self, table: TableConfig, topic: str, partition: int, epoch: int) -> int | None:
        """Events of one epoch of the partition in bronze, or None without a bronze table."""
        relation = bronze_relation(self.settings.file, table)
        with self.conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (relation.as_string(cur),))
            if one_row(cur)[0] is None:
                return None
            cur.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "AND column_name = 'kafka_epoch'",
                (self.settings.file.bronze_schema, table.bronze_table),
            )
            by_epoch = cur.fetchone() is not None
            if not by_epoch and epoch:
                return 0  # a bronze without epochs holds epoch 0 only
            cur.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE kafka_topic = %s AND kafka_partition = %s {}").format(
                    relation, sql.SQL("AND kafka_epoch = %s" if by_epoch else "")
                ),
                (topic, partition, epoch) if by_epoch else (topic, partition),
            )
            events: int = one_row(cur)[0]
            return events

    def close(self) -> None:
        self.conn.close()


def ingest_consumer(settings: Settings, table: TableConfig) -> Consumer:
    # Above the value limit: an oversized value must still arrive, to be quarantined.
    fetch_bytes = max(8 * 1024 * 1024, settings.ingest_max_value_bytes + 1024 * 1024)
    return Consumer(
        client_config(
            settings,
            **{
                "group.id": f"{settings.kafka_consumer_group}-{table.name}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 100,
                # librdkafka stops fetching while its prefetch queue is full and, by default, waits a
                # whole second before it tries again (fetch.queue.backoff.ms=1000): with ~10 kB events
                # the queue fills in a fraction of that, and ingest spent a third of its time idle.
                # Measured at 100k events: 7.9 s with the default backoff, 5.7-6.0 s with 5 ms. With
                # it, a 16 MB queue and 8 MB fetches are as fast as 32 MB and 16 MB (200k lz4 events:
                # 8.5-10.7 s) and keep the peak RSS further under 300 MB (280-301 MB, not 299-310).
                "queued.max.messages.kbytes": 16384,
                "fetch.queue.backoff.ms": 5,
                "fetch.message.max.bytes": fetch_bytes,
                "fetch.max.bytes": fetch_bytes,
                "receive.message.max.bytes": max(100_000_000, fetch_bytes + 1024 * 1024),
            },
        )
    )


def close_consumer(consumer: Consumer, log: Log) -> None:
    """librdkafka's close waits for the group's pending commits, and after the broker lost its
    data it was seen to wait forever, holding the refresh lock. The position is kept in
    PostgreSQL, so a consumer that does not close in time is left behind (it releases the GIL)."""
    closer = threading.Thread(target=consumer.close, daemon=True, name="kafka-consumer-close")
    closer.start()
    closer.join(CLOSE_SECONDS)
    if closer.is_alive():
        log(f"ingest: the Kafka consumer did not close within {CLOSE_SECONDS:.0f}s; it is left to the process exit")


def topic_epoch(consumer: Consumer, topic: str, partition: int, low: int) -> str | None:
    """An identity for the topic's log: its first offset and that message's timestamp.
    A broker that lost its data and was refilled gives a different identity."""
    consumer.assign([TopicPartition(topic, partition, low)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        error = message.error()
        if error is None:
            consumer.unassign()
            return f"{message.offset()}@{message.timestamp()[1]}"
        if error.code() == KafkaError._PARTITION_EOF:
            break
    consumer.unassign()
    return None


def _partition_offsets(settings: Settings, topic: str, partition: int) -> PartitionOffsets | None:
    """The partition's watermarks now, or None while the topic or the broker is away."""
    try:
        offsets = topic_offsets(settings, topic)
    except Exception:  # the broker is down or restarting: treated as a topic that is not there yet
        return None
    return next((p for p in offsets or [] if p.partition == partition), None)


def _went_back(
    settings: Settings, table: TableConfig, topic: str, partition: int, position: int, identity: str | None
) -> str | None:
    """Why the partition no longer holds the log being read (the broker lost its data and the
    topic was recreated), or None if it still does or cannot be reached yet."""
    part = _partition_offsets(settings, topic, partition)
    if part is None:
        return None  # the topic is gone for now; it comes back empty or refilled
    if part.high < position:
        return f"it now ends at offset {part.high} but offsets up to {position - 1} were already read"
    if identity and part.high > part.low:
        probe = ingest_consumer(settings, table)
        try:
            now = topic_epoch(probe, topic, partition, part.low)
        finally:
            close_consumer(probe, lambda line: None)
        if now and now != identity:
            return f"its log starts with another message now ({now}, was {identity})"
    return None


def _reset_reason(saved: SavedPosition | None, part: PartitionOffsets, identity: str | None) -> str | None:
    """Why the saved position belongs to a log the topic no longer holds, or None."""
    if saved is None:
        return None
    if saved.next_offset > part.high:
        return f"it now ends at offset {part.high} but offsets up to {saved.next_offset - 1} were read before"
    if saved.identity and identity and saved.identity != identity:
        return f"its log starts with another message now ({identity}, was {saved.identity})"
    return None


def _line(
    topic: str, partition: int, offset: int, timestamp: int | None, key: bytes, value: bytes, epoch: int = 0
) -> bytes:
    # Key and value are spliced in as the JSON text they arrived as (already checked to be
    # compact JSON): re-serialising a 10 kB Debezium value per event would double the cost.
    # Epoch 0 has no "epoch" field, so its lines are what they were before epochs existed.
    position = (
        {"topic": topic, "partition": partition, "offset": offset, "epoch": epoch, "timestamp": timestamp}
        if epoch
        else {"topic": topic, "partition": partition, "offset": offset, "timestamp": timestamp}
    )
    head = orjson.dumps(position)
    return b"".join((head[:-1], b',"key":', key, b',"value":', value, b"}\n"))  # one copy, not five


def _text_or_base64(raw: bytes | None) -> dict[str, Any]:
    """The whole original bytes, as text when they are UTF-8: a quarantined message can be replayed."""
    if raw is None:
        return {"text": None}
    try:
        return {"text": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(raw).decode()}


def _offset(message: Message) -> int:
    """A consumed message's offset: librdkafka sets one on every message it hands out (the
    partition-EOF event included); the stubs allow None for messages a producer builds."""
    offset = message.offset()
    if offset is None:
        raise RuntimeError(f"Kafka message of {message.topic()}[{message.partition()}] has no offset")
    return offset


def _quarantine_line(message: Message, reason: str, epoch: int = 0) -> bytes:
    position = {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()}
    if epoch:
        position["epoch"] = epoch
    return (
        orjson.dumps(
            {
                **position,
                "timestamp": message.timestamp()[1],
                "reason": reason,
                "key": _text_or_base64(message.key()),
                "value": _text_or_base64(message.value()),
                "value_bytes": len(message.value() or b""),
            }
        )
        + b"\n"
    )


def _poison_reason(poison: PoisonMessage) -> str:
    reason = str(poison)
    if "-byte limit" in reason:  # the one cause the operator fixes with a setting
        reason += " (BI_INGEST_MAX_VALUE_BYTES; raise it, then `bi-console quarantine replay`)"
    return reason


class _Batch:
    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.quarantine: list[bytes] = []
        self.poisons: list[tuple[int, str, int, str | None]] = []  # offset, reason, value bytes, preview
        self.first: int | None = None
        self.last: int | None = None
        self.tombstones = 0
        self.events = 0  # lines written; the lines themselves are dropped once joined
        self.raw_key: str | None = None
        self.quarantine_key: str | None = None
        self.etag = ""  # the raw object's, once written
        self.opened = time.monotonic()
        self.newest_timestamp: int | None = None  # the Kafka timestamp of its newest event
        self.newest_value: bytes | None = None  # that event's value (its source commit time is read once per object)

    def add_offset(self, offset: int) -> None:
        if self.first is None:
            self.first = offset
        self.last = offset

    @property
    def size(self) -> int:
        return len(self.lines) + len(self.quarantine)


def put_with_retry(
    store: RawStore, key: str, body: bytes, log: Log, cancel: threading.Event | None, max_wait: float = 300.0
) -> str:
    """S3 may be down for a while: back off and retry; the position is not advanced meanwhile.

    max_wait is wall-clock time since the first failure: a hung server (each attempt waits
    for its read timeout) gives up as soon as a refused connection would."""
    delay, first_failure = 0.5, None
    while True:
        try:
            return store.put(key, body)
        except S3Refused:
            raise  # a wrong key, secret or bucket: no retry can fix it, and the message names it
        except Exception as exc:  # botocore raises many unrelated types for an unreachable endpoint
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            waited = now - first_failure
            if cancel is not None and cancel.is_set():
                raise StepCancelled(
                    f"ingest cancelled while S3 could not write {key}; the position did not move past it"
                ) from exc
            if waited >= max_wait:
                raise ServiceUnreachable(
                    f"BI_S3_ENDPOINT={store.settings.s3_endpoint}: S3 unreachable, could not "
                    f"write {key} after {waited:.0f}s of retries: {exc}"
                ) from exc
            log(f"ingest: S3 write of {key} failed ({type(exc).__name__}: {str(exc)[:120]}); retrying in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _delete_objects(store: RawStore, keys: list[str]) -> None:
    for i in range(0, len(keys), 1000):
        store.client.delete_objects(
            Bucket=store.bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True}
        )


def ingest(
    settings: Settings,
    table: TableConfig,
    *,
    full: bool,
    log: Log = print,
    cancel: threading.Event | None = None,
    batch_size: int | None = None,
    store: RawStore | None = None,
    on_reset: Callable[[EpochReset], None] | None = None,
    max_age_seconds: float | None = None,
    on_object: Callable[[WrittenObject], None] | None = None,
) -> IngestResult:
    """Read the table's topic into the raw zone from the recorded positions (full: from the
    start of what the topic still holds, replacing only the current epoch's objects of those
    offsets). A topic reset starts a new epoch; `on_reset` hears of it as it happens.

    An object is written at `batch_size` events or, given `max_age_seconds`, once its first
    event waited that long (the continuous runner's ~1 s). `on_object` hears of each object
    once its position is recorded, so a loader may take it at once."""
    batch_size = batch_size or settings.ingest_batch_size
    store = store or RawStore(settings)
    result = IngestResult()
    topic = table.topic
    try:
        offsets = topic_offsets(settings, topic)
    except KafkaException as exc:
        raise ServiceUnreachable(
            f"BI_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: Kafka unreachable, cannot read "
            f"the offsets of {topic}: {exc.args[0].str() if exc.args else exc}"
        ) from None
    if offsets is None:
        raise RuntimeError(
            f"topic {topic} does not exist on {settings.kafka_bootstrap}: no CDC events yet (is the connector running?)"
        )
    checkpoints = Checkpoints(settings)
    consumer = ingest_consumer(settings, table)
    reader = _TopicReader(settings, table, store, checkpoints, consumer, batch_size, result, log, cancel, on_reset)
    reader.max_age_seconds, reader.on_object = max_age_seconds, on_object
    try:
        for part in offsets:
            reader.partition(part, full)
    finally:
        close_consumer(consumer, log)
        checkpoints.close()
    return result


class _TopicReader:
    """One ingest run over a topic's partitions, each in its current epoch."""

    def __init__(
        self,
        settings: Settings,
        table: TableConfig,
        store: RawStore,
        checkpoints: Checkpoints,
        consumer: Consumer,
        batch_size: int,
        result: IngestResult,
        log: Log,
        cancel: threading.Event | None,
        on_reset: Callable[[EpochReset], None] | None,
    ):
        self.settings, self.table, self.store, self.checkpoints = settings, table, store, checkpoints
        self.consumer, self.batch_size, self.result, self.log = consumer, batch_size, result, log
        self.cancel, self.on_reset = cancel, on_reset
        self.topic = table.topic
        self.max_age_seconds: float | None = None
        self.on_object: Callable[[WrittenObject], None] | None = None

    def partition(self, part: PartitionOffsets, full: bool) -> None:
        saved = self.checkpoints.get(self.topic, part.partition)
        epoch = saved.epoch if saved else 0
        identity = topic_epoch(self.consumer, self.topic, part.partition, part.low) if part.high > part.low else None
        reason = _reset_reason(saved, part, identity)
        if reason is not None:
            epoch = self._new_epoch(part.partition, epoch, reason, part.low, identity)
            saved, full = SavedPosition(part.low, identity, epoch), False  # a new epoch has nothing to rewrite
        try:
            self._read(part, epoch, identity, saved, full)
        except TopicReset as reset:
            # What was read before the reset is written and recorded as the old epoch's; the
            # new log is a new topic, read from its first offset.
            now = _partition_offsets(self.settings, self.topic, part.partition)
            low = now.low if now is not None else 0
            identity = topic_epoch(self.consumer, self.topic, part.partition, low) if now and now.high > low else None
            self.log(f"ingest: {reset}")
            epoch = self._new_epoch(
                part.partition, epoch, f"it went back while it was read: {reset.reason}", low, identity
            )
            if now is None or now.high <= low:
                self.log(
                    f"ingest: {self.topic}[{part.partition}] epoch {epoch} holds no events yet; the next run reads them"
                )
                return
            self._read(now, epoch, identity, SavedPosition(low, identity, epoch), False)

    def _new_epoch(self, partition: int, old: int, reason: str, start: int, identity: str | None) -> int:
        """Start epoch old+1 at `start`, recorded at once: a rerun goes on in it, and says it once."""
        new = old + 1
        earlier = epoch_objects(self.store, self.table, self.topic, partition, old)
        self.checkpoints.set(self.topic, partition, start, identity, new)
        reset = EpochReset(
            self.table.name,
            self.topic,
            partition,
            old,
            new,
            reason,
            start,
            len(earlier),
            _covered([(first, last) for _, first, last in earlier]),
            self.checkpoints.bronze_events(self.table, self.topic, partition, old),
        )
        self.result.resets.append(reset)
        if self.on_reset is not None:
            self.on_reset(reset)  # the caller makes it a notice, which is logged too
        else:
            self.log(f"ingest: {reset.notice()}")
        return new

    def _read(
        self, part: PartitionOffsets, epoch: int, identity: str | None, saved: SavedPosition | None, full: bool
    ) -> None:
        existing = epoch_objects(self.store, self.table, self.topic, part.partition, epoch)
        if full:
            # Offsets below the low watermark are gone from the topic (retention): an object
            # holding any of them is kept whole, and the re-read starts after it.
            start = part.low
            for _, first, last in existing:
                if first < part.low:
                    start = max(start, last + 1)
        else:
            start = max(saved.next_offset, part.low) if saved is not None else part.low
        # Objects this read re-reads (from another batch size, or an interrupted run): each is
        # removed once the objects of this run hold all its offsets, so none is lost meanwhile.
        superseded = [obj for obj in existing if obj[2] >= start]
        if start >= part.high:
            self.log(
                f"ingest: {self.topic}[{part.partition}] up to date at offset {part.high}"
                + (f" (epoch {epoch})" if epoch else "")
            )
            self.checkpoints.set(self.topic, part.partition, part.high, identity, epoch)
            return
        self.log(
            f"ingest: {self.topic}[{part.partition}] offsets {start}..{part.high - 1} "
            f"({part.high - start} events)" + (f" in epoch {epoch}" if epoch else "")
        )
        self.consumer.assign([TopicPartition(self.topic, part.partition, start)])
        writer = _PartitionWriter(self, part.partition, start, part.high, epoch, identity, superseded)
        try:
            try:
                _read_partition(writer)
            except TopicReset:
                writer.finish()  # what was read before the reset is the old epoch's
                raise
            writer.finish()
        finally:
            writer.close()
        self.result.partitions[part.partition] = (start, part.high)


class _PartitionWriter:
    """Batches one partition's events into objects and records the position after each is written.

    Objects are uploaded in the background (UPLOADS_IN_FLIGHT at once) while the next batch
    is read, so the S3 server and the broker work at the same time. The position still
    moves only after an object is written, and in offset order, so at most UPLOADS_IN_FLIGHT
    written-but-unrecorded objects exist; a rerun rewrites them under the same names."""

    def __init__(
        self,
        reader: _TopicReader,
        partition: int,
        start: int,
        end: int,
        epoch: int,
        identity: str | None,
        superseded: list[tuple[str, int, int]],
    ):
        self.reader = reader
        self.consumer, self.store, self.checkpoints, self.table = (
            reader.consumer,
            reader.store,
            reader.checkpoints,
            reader.table,
        )
        self.topic, self.partition, self.start, self.end = reader.topic, partition, start, end
        self.epoch, self.identity, self.superseded = epoch, identity, superseded
        self.batch_size, self.result, self.log, self.cancel = (
            reader.batch_size,
            reader.result,
            reader.log,
            reader.cancel,
        )
        self.max_value_bytes = reader.settings.ingest_max_value_bytes
        self.batch = _Batch()
        self.written: set[str] = set()
        self.started = time.monotonic()
        self.uploads = ThreadPoolExecutor(max_workers=UPLOADS_IN_FLIGHT, thread_name_prefix="ingest-upload")
        self.in_flight: deque[tuple[Future[None], _Batch]] = deque()

    def add(
        self,
        message: Message,
        key_json: bytes | None = None,
        value_json: bytes | None = None,
        tombstone: bool = False,
        poison: str | None = None,
    ) -> None:
        offset = _offset(message)
        batch = self.batch
        batch.add_offset(offset)
        if poison is not None:
            batch.quarantine.append(_quarantine_line(message, poison, self.epoch))
            batch.poisons.append((offset, poison, len(message.value() or b""), quarantine.preview(message.value())))
        else:
            assert key_json is not None and value_json is not None  # check_event passed: it gave both
            batch.tombstones += tombstone
            timestamp = message.timestamp()[1]
            batch.lines.append(_line(self.topic, self.partition, offset, timestamp, key_json, value_json, self.epoch))
            batch.newest_timestamp, batch.newest_value = timestamp, value_json
        if batch.size >= self.batch_size:
            self.flush()

    def flush_if_old(self) -> None:
        """Write the open batch once its first event waited max_age_seconds (continuous mode)."""
        age = self.reader.max_age_seconds
        if age is not None and self.batch.size and time.monotonic() - self.batch.opened >= age:
            self.flush()

    def flush(self) -> None:
        batch = self.batch
        if batch.first is None or batch.last is None:  # set together by the batch's first message
            return
        while len(self.in_flight) >= UPLOADS_IN_FLIGHT:
            self._record_oldest()
        if batch.lines:
            batch.raw_key = object_key(self.table, self.topic, self.partition, batch.first, batch.last, self.epoch)
            self.written.add(batch.raw_key)
        if batch.quarantine:
            batch.quarantine_key = quarantine_key(
                self.table, self.topic, self.partition, batch.first, batch.last, self.epoch
            )
        self.in_flight.append((self.uploads.submit(self._upload, batch), batch))
        self.batch = _Batch()

    def finish(self) -> None:
        self.flush()
        while self.in_flight:
            self._record_oldest()

    def close(self) -> None:
        self.uploads.shutdown(wait=True)

    def _upload(self, done: _Batch) -> None:
        # The lines are let go as soon as they are joined: the batch is held until it is
        # recorded, and its lines would double the memory the object takes.
        if done.lines:
            assert done.raw_key is not None  # flush() names a batch with lines
            body, done.events, done.lines = b"".join(done.lines), len(done.lines), []
            done.etag = put_with_retry(self.store, done.raw_key, body, self.log, self.cancel)
            del body
            release_freed_memory()  # else the heap fragments and the peak grows object by object
        if done.quarantine:
            assert done.quarantine_key is not None  # flush() names a batch with quarantined messages
            put_with_retry(self.store, done.quarantine_key, b"".join(done.quarantine), self.log, self.cancel)

    def _drop_superseded(self, next_offset: int) -> None:
        """Remove the earlier objects whose offsets are all in objects written by now, before
        the position moves past them (a crash in between leaves them to the rerun)."""
        covered = [obj for obj in self.superseded if obj[2] < next_offset]
        if not covered:
            return
        self.superseded = [obj for obj in self.superseded if obj[2] >= next_offset]
        replaced = [key for key, _, _ in covered if key not in self.written]
        if replaced:
            _delete_objects(self.store, replaced)
            self.result.replaced += len(replaced)
            self.log(
                f"ingest: {self.topic}[{self.partition}] replaced {len(replaced)} earlier object(s) whose "
                f"offsets are in this run's objects (up to {next_offset - 1})"
            )

    def _record_oldest(self) -> None:
        future, done = self.in_flight.popleft()
        future.result()  # raises the upload's error here, before the position can move
        assert done.last is not None  # only batches with messages are flushed
        next_offset = done.last + 1
        if done.poisons:  # indexed where the position moves: a rerun indexes the same rows
            assert done.quarantine_key is not None  # flush() names a batch with quarantined messages
            self.checkpoints.record_quarantine(
                self.table, self.topic, self.partition, self.epoch, done.quarantine_key, done.poisons
            )
        self._drop_superseded(next_offset)
        self.checkpoints.set(self.topic, self.partition, next_offset, self.identity, self.epoch)
        try:
            self.consumer.commit(offsets=[TopicPartition(self.topic, self.partition, next_offset)], asynchronous=True)
        except Exception:
            pass  # the analytics database holds the authoritative position; the group commit is for tooling
        if self.reader.on_object is not None and done.raw_key is not None:
            self.reader.on_object(
                WrittenObject(
                    done.raw_key,
                    done.etag,
                    done.events,
                    done.newest_timestamp,
                    source_commit_ms(done.newest_value),
                    time.time(),
                )
            )
        result = self.result
        result.objects += 1 if done.events else 0
        result.events += done.events
        result.quarantined += len(done.quarantine)
        result.tombstones += done.tombstones
        rate = (next_offset - self.start) / max(time.monotonic() - self.started, 1e-6)
        self.log(
            f"ingest: {self.topic}[{self.partition}] {next_offset - self.start}/{self.end - self.start} events, "
            f"{result.objects} objects, {result.quarantined} quarantined ({rate:,.0f} events/s)"
        )


def _unreachable(settings: Settings, what: str) -> ServiceUnreachable:
    return ServiceUnreachable(f"BI_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: Kafka unreachable {what}")


def _read_partition(writer: _PartitionWriter) -> None:
    consumer, table, identity = writer.consumer, writer.table, writer.identity
    settings = writer.reader.settings
    topic, partition, position, end = writer.topic, writer.partition, writer.start, writer.end
    log, cancel, max_value_bytes = writer.log, writer.cancel, writer.max_value_bytes
    idle_since = last_check = time.monotonic()
    while position < end:
        if cancel is not None and cancel.is_set():
            raise StepCancelled(f"ingest cancelled at offset {position}; the last complete object is kept")
        # Small consume calls: each message holds its whole (schema-wrapped, ~10 kB) value until
        # the call's list is dropped, so 1,000 at a time keeps ~10 MB alive instead of ~50 MB.
        # No more than the partition still holds up to `end`: consume() returns once it has
        # them, instead of waiting its whole timeout for a batch that cannot fill.
        messages = consumer.consume(min(writer.batch_size, 1000, max(1, end - position)), timeout=1.0)
        for message in messages:
            error = message.error()
            if error is not None:
                code = error.code()
                if code == KafkaError._PARTITION_EOF:
                    if _offset(message) < end:
                        log(f"ingest: {topic}[{partition}] ended at {message.offset()} before the expected {end}")
                        end = _offset(message)
                    continue
                if code in _LINK_ERRORS:
                    reachable, why = probe_broker(settings, timeout=5.0)
                    if not reachable:
                        raise _unreachable(
                            settings, f"while {topic}[{partition}] was read at offset {position}: {error.str()} ({why})"
                        )
                    log(f"ingest: {topic}[{partition}]: {error.str()}; the broker answers, reading on")
                    continue
                if code in _GONE_ERRORS:
                    continue  # the idle check below finds out whether the topic went back
                raise RuntimeError(f"Kafka error on {topic}[{partition}]: {error.str()}")
            offset = _offset(message)
            if offset < position:
                # A consumer never goes back by itself: its offset was reset on a recreated topic.
                raise TopicReset(topic, partition, f"offset {offset} arrived after {position - 1}")
            if offset >= end:
                continue
            position = offset + 1
            try:
                key_json, value_json, tombstone = check_event(
                    message.key(), message.value(), table.key_columns, max_value_bytes
                )
            except PoisonMessage as poison:
                writer.add(message, poison=_poison_reason(poison))
            else:
                writer.add(message, key_json, value_json, tombstone)
        writer.flush_if_old()
        now = time.monotonic()
        if messages:
            idle_since = now
        elif position < end and now - last_check >= IDLE_RECHECK_SECONDS:
            last_check = now
            reason = _went_back(settings, table, topic, partition, position, identity)
            if reason:
                raise TopicReset(topic, partition, reason)
            if now - idle_since >= STALL_SECONDS:
                raise _unreachable(
                    settings,
                    f"or stalled: no message from {topic}[{partition}] for "
                    f"{STALL_SECONDS:.0f}s at offset {position} (expected up to {end - 1})",
                )


@dataclass
class RecoveryResult:
    recovered: list[str] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)  # key -> why the topic cannot give it back


def recover_missing_objects(
    settings: Settings, table: TableConfig, keys: list[str], log: Log = print, store: RawStore | None = None
) -> RecoveryResult:
    """Write again, under the same names, raw objects the manifest lists but the raw zone lost.

    An object holds the passing messages of its offsets, so re-reading those offsets from the
    topic gives the same lines, and the same bytes. That needs the topic to still hold them in
    the same epoch; the others are reported with the reason (a full refresh can no longer
    bring them back either). Replay objects are written again from their quarantine objects."""
    store = store or RawStore(settings)
    result = RecoveryResult()
    wanted: dict[tuple[str, int], list[tuple[str, int, int, int]]] = {}
    replays = []
    for key in keys:
        if key.startswith(f"{table.raw_objects_prefix}replay/"):
            replays.append(key)
            continue
        parsed = parse_object_key(table, key)
        if parsed is None:
            result.lost[key] = "not an object name ingest writes"
            continue
        epoch, topic, partition, first, last = parsed
        wanted.setdefault((topic, partition), []).append((key, epoch, first, last))
    if replays:
        _recover_replays(settings, table, replays, log, store, result)
    if not wanted:
        return result
    checkpoints = Checkpoints(settings)
    consumer = ingest_consumer(settings, table)
    try:
        for (topic, partition), objects in sorted(wanted.items()):
            saved = checkpoints.get(topic, partition)
            part = _partition_offsets(settings, topic, partition)
            identity = topic_epoch(consumer, topic, partition, part.low) if part and part.high > part.low else None
            for key, epoch, first, last in sorted(objects, key=lambda o: o[2]):
                why = _unrecoverable(saved, part, identity, epoch, first, last)
                if why is None:
                    body = _read_object(settings, consumer, table, topic, partition, epoch, first, last)
                    why = None if body else f"offsets {first}..{last} hold no event that passes the checks now"
                if why is not None:
                    result.lost[key] = why
                    log(f"ingest: cannot recover {key}: {why}")
                    continue
                put_with_retry(store, key, body, log, None)
                result.recovered.append(key)
                log(f"ingest: recovered {key} from {topic}[{partition}] offsets {first}..{last}")
    finally:
        close_consumer(consumer, log)
        checkpoints.close()
    return result


def _unrecoverable(
    saved: SavedPosition | None, part: PartitionOffsets | None, identity: str | None, epoch: int, first: int, last: int
) -> str | None:
    current = saved.epoch if saved else 0
    if epoch != current:
        return f"it is of epoch {epoch}, the topic now holds epoch {current} (the broker lost the earlier log)"
    if part is None:
        return "the topic or its broker is not there now"
    if saved is not None and saved.identity and identity and saved.identity != identity:
        return f"the topic's log changed since it was read ({identity}, was {saved.identity}): a reset"
    if first < part.low or last >= part.high:
        return f"the topic holds offsets {part.low}..{part.high - 1} now, not {first}..{last} (retention)"
    return None


def _read_object(
    settings: Settings,
    consumer: Consumer,
    table: TableConfig,
    topic: str,
    partition: int,
    epoch: int,
    first: int,
    last: int,
) -> bytes:
    """The lines ingest writes for offsets first..last, read from the topic again."""
    consumer.assign([TopicPartition(topic, partition, first)])
    lines: list[bytes] = []
    position, deadline = first, time.monotonic() + 120
    try:
        while position <= last:
            if time.monotonic() > deadline:
                raise _unreachable(
                    settings,
                    f"or stalled: {topic}[{partition}] stopped at offset {position} "
                    f"while offsets up to {last} were re-read",
                )
            for message in consumer.consume(1000, timeout=1.0):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if _offset(message) <= last:
                            raise RuntimeError(f"{topic}[{partition}] ends at {message.offset()}, before {last}")
                        continue
                    if error.code() in _LINK_ERRORS | _GONE_ERRORS:
                        continue  # the deadline above ends a broker that does not come back
                    raise RuntimeError(f"Kafka error on {topic}[{partition}]: {error.str()}")
                offset = _offset(message)
                if offset < position or offset > last:
                    continue
                position = offset + 1
                try:
                    key_json, value_json, _ = check_event(
                        message.key(), message.value(), table.key_columns, settings.ingest_max_value_bytes
                    )
                except PoisonMessage:
                    continue  # it is in the quarantine, not in the raw object
                lines.append(_line(topic, partition, offset, message.timestamp()[1], key_json, value_json, epoch))
    finally:
        consumer.unassign()
    return b"".join(lines)


def _recover_replays(
    settings: Settings, table: TableConfig, keys: list[str], log: Log, store: RawStore, result: RecoveryResult
) -> None:
    """A replay object is made again from its quarantine object: its messages are marked not
    replayed, and the replay writes the object again with the messages that pass."""
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "UPDATE {}.quarantine SET replayed_at = NULL WHERE table_name = %s AND replay_object_key = ANY(%s)"
                ).format(sql.Identifier(settings.file.meta_schema)),
                (table.name, keys),
            )
    finally:
        conn.close()
    written = set(quarantine.replay(settings, table, log=log, store=store).objects)
    for key in keys:
        if key in written:
            result.recovered.append(key)
        else:
            result.lost[key] = "its quarantine messages no longer pass the checks, or their quarantine object is gone"
