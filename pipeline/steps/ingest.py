"""ingest: Kafka -> raw zone (S3 JSONL), exactly once per object.

Objects are named from topic, partition and first/last offset, so a rerun from the
same position rewrites the same object and never adds a second copy (the rule of
Confluent's S3 sink). The position advances only after an object is written. Memory
is bounded by the batch size. A message that is not a Debezium change event goes to
the quarantine prefix with its reason, and ingestion goes on.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson

from confluent_kafka import Consumer, KafkaError, TopicPartition
from psycopg2 import sql

from pipeline.bronze import ensure_meta
from pipeline.db import connect
from pipeline.config import Settings, TableConfig
from pipeline.envelope import PoisonMessage, check_event
from pipeline.kafka import topic_offsets
from pipeline.memory import release_freed_memory
from pipeline.storage import RawStore

Log = Callable[[str], None]
MAX_VALUE_BYTES = 4 * 1024 * 1024
UPLOADS_IN_FLIGHT = 2  # objects being written while the next batch is read
IDLE_RECHECK_SECONDS = 5.0  # no message for this long before the expected end: look at the log again
STALL_SECONDS = 300.0  # no message at all for this long: give up (and release the refresh lock)


class TopicReset(Exception):
    """The topic no longer holds what was ingested from it (the broker lost its data)."""


class StepCancelled(Exception):
    """The operator cancelled the step; nothing half-written was left behind."""


@dataclass
class IngestResult:
    events: int = 0
    objects: int = 0
    quarantined: int = 0
    tombstones: int = 0
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)

    def counts(self) -> dict:
        return {"events": self.events, "objects": self.objects, "quarantined": self.quarantined,
                "tombstones": self.tombstones}


def object_key(table: TableConfig, topic: str, partition: int, first: int, last: int) -> str:
    return f"{table.raw_objects_prefix}{topic}+{partition}+{first:020d}+{last:020d}.jsonl"


def quarantine_key(table: TableConfig, topic: str, partition: int, first: int, last: int) -> str:
    return f"{table.quarantine_prefix}batch={topic}+{partition}+{first:020d}+{last:020d}.jsonl"


class Checkpoints:
    """The ingest position per partition, kept in the analytics database."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.conn = connect(settings)
        self.conn.autocommit = True
        self.table = sql.SQL("{}.ingest_checkpoint").format(sql.Identifier(settings.file.meta_schema))
        with self.conn.cursor() as cur:
            ensure_meta(cur, settings.file)
            # A position is recorded after each object: waiting for its WAL flush cost ~30 ms a
            # time (6 s of a 1M-event ingest). A position lost in a server crash only moves back
            # to one whose objects are already written; the rerun rewrites them under the same
            # names, and load skips or deduplicates them.
            cur.execute("SET synchronous_commit = off")

    def get(self, topic: str, partition: int) -> tuple[int, str | None] | None:
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT next_offset, topic_epoch FROM {} WHERE topic = %s AND kafka_partition = %s")
                        .format(self.table), (topic, partition))
            row = cur.fetchone()
        return (row[0], row[1]) if row else None

    def set(self, topic: str, partition: int, next_offset: int, epoch: str | None) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL(
                "INSERT INTO {} (topic, kafka_partition, next_offset, topic_epoch, updated_at) "
                "VALUES (%s, %s, %s, %s, now()) ON CONFLICT (topic, kafka_partition) "
                "DO UPDATE SET next_offset = EXCLUDED.next_offset, topic_epoch = EXCLUDED.topic_epoch, "
                "updated_at = now()").format(self.table), (topic, partition, next_offset, epoch))

    def clear(self, topic: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE topic = %s").format(self.table), (topic,))

    def close(self) -> None:
        self.conn.close()


def ingest_consumer(settings: Settings, table: TableConfig) -> Consumer:
    return Consumer({
        "bootstrap.servers": settings.kafka_bootstrap,
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
        # Above MAX_VALUE_BYTES: an oversized value must still arrive, to be quarantined.
        "fetch.message.max.bytes": 8 * 1024 * 1024,
        "fetch.max.bytes": 8 * 1024 * 1024,
    })


def topic_epoch(consumer: Consumer, topic: str, partition: int, low: int) -> str | None:
    """An identity for the topic's log: its first offset and that message's timestamp.
    A broker that lost its data and was refilled gives a different epoch."""
    consumer.assign([TopicPartition(topic, partition, low)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error() is None:
            consumer.unassign()
            return f"{message.offset()}@{message.timestamp()[1]}"
        if message.error().code() == KafkaError._PARTITION_EOF:
            break
    consumer.unassign()
    return None


def _went_back(settings: Settings, table: TableConfig, topic: str, partition: int, position: int,
               epoch: str | None) -> str | None:
    """Why the partition no longer holds the log being read (the broker lost its data and the
    topic was recreated), or None if it still does or cannot be reached yet."""
    try:
        offsets = topic_offsets(settings, topic)
    except Exception:  # the broker is down: keep waiting for it
        return None
    part = next((p for p in offsets or [] if p.partition == partition), None)
    if part is None:
        return None  # the topic is gone for now; it comes back empty or refilled
    if part.high < position:
        return f"it now ends at offset {part.high} but offsets up to {position - 1} were already read"
    if epoch and part.high > part.low:
        probe = ingest_consumer(settings, table)
        try:
            now = topic_epoch(probe, topic, partition, part.low)
        finally:
            probe.close()
        if now and now != epoch:
            return f"its log starts with another message now (epoch {now}, was {epoch})"
    return None


def _line(topic: str, partition: int, offset: int, timestamp: int | None, key: bytes, value: bytes) -> bytes:
    # Key and value are spliced in as the JSON text they arrived as (already checked to be
    # compact JSON): re-serialising a 10 kB Debezium value per event would double the cost.
    head = orjson.dumps({"topic": topic, "partition": partition, "offset": offset, "timestamp": timestamp})
    return b"".join((head[:-1], b',"key":', key, b',"value":', value, b"}\n"))  # one copy, not five


def _quarantine_line(message, reason: str) -> bytes:
    def text_or_b64(raw: bytes | None) -> dict:
        if raw is None:
            return {"text": None}
        try:
            text = raw.decode("utf-8")
            return {"text": text if len(text) <= 65536 else text[:65536], "truncated": len(text) > 65536}
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw[:65536]).decode(), "truncated": len(raw) > 65536}

    return orjson.dumps({
        "topic": message.topic(), "partition": message.partition(), "offset": message.offset(),
        "timestamp": message.timestamp()[1], "reason": reason,
        "key": text_or_b64(message.key()), "value": text_or_b64(message.value()),
        "value_bytes": len(message.value() or b""),
    }) + b"\n"


class _Batch:
    def __init__(self):
        self.lines: list[bytes] = []
        self.quarantine: list[bytes] = []
        self.first: int | None = None
        self.last: int | None = None
        self.tombstones = 0
        self.events = 0  # lines written; the lines themselves are dropped once joined

    def add_offset(self, offset: int) -> None:
        if self.first is None:
            self.first = offset
        self.last = offset

    @property
    def size(self) -> int:
        return len(self.lines) + len(self.quarantine)


def put_with_retry(store: RawStore, key: str, body: bytes, log: Log, cancel: threading.Event | None,
                   max_wait: float = 300.0) -> None:
    """S3 may be down for a while: back off and retry; the position is not advanced meanwhile.

    max_wait is wall-clock time since the first failure: a hung server (each attempt waits
    for its read timeout) gives up as soon as a refused connection would."""
    delay, first_failure = 0.5, None
    while True:
        try:
            store.put(key, body)
            return
        except Exception as exc:  # botocore raises many unrelated types for an unreachable endpoint
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            waited = now - first_failure
            if waited >= max_wait or (cancel is not None and cancel.is_set()):
                raise RuntimeError(f"S3 {store.settings.s3_endpoint}: could not write {key} after "
                                   f"{waited:.0f}s of retries: {exc}") from exc
            log(f"ingest: S3 write of {key} failed ({type(exc).__name__}: {str(exc)[:120]}); retrying in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def ingest(settings: Settings, table: TableConfig, *, full: bool, log: Log = print,
           cancel: threading.Event | None = None, batch_size: int | None = None,
           store: RawStore | None = None) -> IngestResult:
    batch_size = batch_size or settings.ingest_batch_size
    store = store or RawStore(settings)
    result = IngestResult()
    topic = table.topic
    offsets = topic_offsets(settings, topic)
    if offsets is None:
        raise RuntimeError(f"topic {topic} does not exist on {settings.kafka_bootstrap}: no CDC events yet "
                           "(is the connector running?)")
    checkpoints = Checkpoints(settings)
    consumer = ingest_consumer(settings, table)
    try:
        if full:
            removed = store.delete_prefix(table.raw_objects_prefix) + store.delete_prefix(table.quarantine_prefix)
            checkpoints.clear(topic)
            if removed:
                log(f"ingest: full refresh, removed {removed} previous raw objects under {table.raw_prefix}")
        for part in offsets:
            epoch = topic_epoch(consumer, topic, part.partition, part.low) if part.high > part.low else None
            start = part.low
            saved = None if full else checkpoints.get(topic, part.partition)
            if saved is not None:
                saved_offset, saved_epoch = saved
                if saved_offset > part.high or (saved_epoch and epoch and saved_epoch != epoch):
                    raise TopicReset(
                        f"topic {topic} partition {part.partition} went back: it now ends at offset {part.high} "
                        f"(epoch {epoch}) but {saved_offset} events were ingested before (epoch {saved_epoch}); "
                        "the broker lost its data, a full refresh will recover the state from the new snapshot")
                start = max(saved_offset, part.low)
            if start >= part.high:
                log(f"ingest: {topic}[{part.partition}] up to date at offset {part.high}")
                checkpoints.set(topic, part.partition, part.high, epoch)
                continue
            log(f"ingest: {topic}[{part.partition}] offsets {start}..{part.high - 1} ({part.high - start} events)")
            _ingest_partition(consumer, store, checkpoints, table, topic, part.partition, start, part.high, epoch,
                              batch_size, result, log, cancel)
            result.partitions[part.partition] = (start, part.high)
    finally:
        consumer.close()
        checkpoints.close()
    return result


def _ingest_partition(consumer, store, checkpoints, table, topic, partition, start, end, epoch, batch_size,
                      result, log, cancel) -> None:
    consumer.assign([TopicPartition(topic, partition, start)])
    writer = _PartitionWriter(consumer, store, checkpoints, table, topic, partition, start, end, epoch, batch_size,
                              result, log, cancel)
    try:
        _read_partition(writer)
        writer.finish()
    finally:
        writer.close()


class _PartitionWriter:
    """Batches one partition's events into objects and records the position after each is written.

    Objects are uploaded in the background (UPLOADS_IN_FLIGHT at once) while the next batch
    is read, so the S3 server and the broker work at the same time. The position still
    moves only after an object is written, and in offset order, so at most UPLOADS_IN_FLIGHT
    written-but-unrecorded objects exist; a rerun rewrites them under the same names."""

    def __init__(self, consumer, store, checkpoints, table, topic, partition, start, end, epoch, batch_size,
                 result, log, cancel):
        self.consumer, self.store, self.checkpoints, self.table = consumer, store, checkpoints, table
        self.topic, self.partition, self.start, self.end, self.epoch = topic, partition, start, end, epoch
        self.batch_size, self.result, self.log, self.cancel = batch_size, result, log, cancel
        self.batch = _Batch()
        self.started = time.monotonic()
        self.uploads = ThreadPoolExecutor(max_workers=UPLOADS_IN_FLIGHT, thread_name_prefix="ingest-upload")
        self.in_flight: deque[tuple[Future, _Batch]] = deque()

    def add(self, message, key_json: bytes | None = None, value_json: bytes | None = None,
            tombstone: bool = False, poison: str | None = None) -> None:
        offset = message.offset()
        batch = self.batch
        batch.add_offset(offset)
        if poison is not None:
            batch.quarantine.append(_quarantine_line(message, poison))
        else:
            batch.tombstones += tombstone
            batch.lines.append(_line(self.topic, self.partition, offset, message.timestamp()[1], key_json, value_json))
        if batch.size >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self.batch.first is None:
            return
        while len(self.in_flight) >= UPLOADS_IN_FLIGHT:
            self._record_oldest()
        self.in_flight.append((self.uploads.submit(self._upload, self.batch), self.batch))
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
            body, done.events, done.lines = b"".join(done.lines), len(done.lines), []
            put_with_retry(self.store, object_key(self.table, self.topic, self.partition, done.first, done.last),
                           body, self.log, self.cancel)
            del body
            release_freed_memory()  # else the heap fragments and the peak grows object by object
        if done.quarantine:
            put_with_retry(self.store, quarantine_key(self.table, self.topic, self.partition, done.first, done.last),
                           b"".join(done.quarantine), self.log, self.cancel)

    def _record_oldest(self) -> None:
        future, done = self.in_flight.popleft()
        future.result()  # raises the upload's error here, before the position can move
        next_offset = done.last + 1
        self.checkpoints.set(self.topic, self.partition, next_offset, self.epoch)
        try:
            self.consumer.commit(offsets=[TopicPartition(self.topic, self.partition, next_offset)], asynchronous=True)
        except Exception:
            pass  # the analytics database holds the authoritative position; the group commit is for tooling
        result = self.result
        result.objects += 1 if done.events else 0
        result.events += done.events
        result.quarantined += len(done.quarantine)
        result.tombstones += done.tombstones
        rate = (next_offset - self.start) / max(time.monotonic() - self.started, 1e-6)
        self.log(f"ingest: {self.topic}[{self.partition}] {next_offset - self.start}/{self.end - self.start} events, "
                 f"{result.objects} objects, {result.quarantined} quarantined ({rate:,.0f} events/s)")


def _read_partition(writer: _PartitionWriter) -> None:
    consumer, checkpoints, table, epoch = writer.consumer, writer.checkpoints, writer.table, writer.epoch
    topic, partition, position, end = writer.topic, writer.partition, writer.start, writer.end
    log, cancel = writer.log, writer.cancel
    idle_since = last_check = time.monotonic()
    while position < end:
        if cancel is not None and cancel.is_set():
            raise StepCancelled(f"ingest cancelled at offset {position}; the last complete object is kept")
        # Small consume calls: each message holds its whole (schema-wrapped, ~10 kB) value until
        # the call's list is dropped, so 1,000 at a time keeps ~10 MB alive instead of ~50 MB.
        messages = consumer.consume(min(writer.batch_size, 1000), timeout=1.0)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    if message.offset() < end:
                        log(f"ingest: {topic}[{partition}] ended at {message.offset()} before the expected {end}")
                        end = message.offset()
                    continue
                raise RuntimeError(f"Kafka error on {topic}[{partition}]: {error.str()}")
            offset = message.offset()
            if offset < position:
                # A consumer never goes back by itself: its offset was reset on a recreated topic.
                raise TopicReset(f"topic {topic} partition {partition} went back while it was read: offset {offset} "
                                 f"arrived after {position - 1}; the broker lost its data, a full refresh will "
                                 "recover the state from the new snapshot")
            if offset >= end:
                continue
            position = offset + 1
            try:
                key_json, value_json, tombstone = check_event(message.key(), message.value(), table.key_column,
                                                              MAX_VALUE_BYTES)
            except PoisonMessage as poison:
                writer.add(message, poison=str(poison))
            else:
                writer.add(message, key_json, value_json, tombstone)
        now = time.monotonic()
        if messages:
            idle_since = now
        elif position < end and now - last_check >= IDLE_RECHECK_SECONDS:
            last_check = now
            reason = _went_back(checkpoints.settings, table, topic, partition, position, epoch)
            if reason:
                raise TopicReset(f"topic {topic} partition {partition} went back while it was read: {reason}; "
                                 "the broker lost its data, a full refresh will recover the state from the new snapshot")
            if now - idle_since >= STALL_SECONDS:
                raise RuntimeError(f"no message from {topic}[{partition}] for {STALL_SECONDS:.0f}s at offset {position} "
                                   f"(expected up to {end - 1}): is the broker at {checkpoints.settings.kafka_bootstrap} up?")
