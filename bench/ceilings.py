"""What the services alone can do on this machine, measured in the same run as our steps.

A target missed because the broker, the S3 server or PostgreSQL cannot go faster is not a
target our code can meet; these measurements say how fast each service goes with (almost)
none of our Python in the way:

- broker ceiling: the ingest consumer, configured exactly as ingest configures it,
  reads the topic and does nothing with the messages (no check, no line, no upload);
- S3 ceiling: copies of real raw objects (read first, off the clock) are stored under a
  scratch prefix with as many uploads in flight as ingest uses, through the same client;
- PostgreSQL ceiling: the COPY rows of a sample of raw objects are built first (by
  load's own code, off the clock), then COPYed into a scratch copy of the bronze table
  (same columns, generated columns, indexes and storage) with as many connections as
  load uses. What is timed is PostgreSQL parsing and storing rows.

The broker and S3 ceilings also report the CPU time their timed part cost, in this
process and in the service (`cpu_seconds_timed`, `service_cpu_seconds`): together they are
the least CPU a single event of ingest can cost here, whatever our own code does.

The broker reads `max_events` (the harness passes the whole topic); the S3 and PostgreSQL
samples are capped at `max_objects` objects held in memory, and PostgreSQL's table starts
empty, so at 1M events it is an upper bound: the real bronze's indexes are larger by then.
"""

from __future__ import annotations

import io
import resource
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import KafkaError, TopicPartition
from psycopg2 import sql

from bench.services import service_cpu
from pipeline.config import Settings
from pipeline.steps.ingest import UPLOADS_IN_FLIGHT, ingest_consumer
from pipeline.steps.load import COPY_CHUNK, COPY_COLUMNS, CopyRows
from pipeline.stores.bronze import bronze_relation
from pipeline.stores.db import connect
from pipeline.stores.kafka import topic_offsets
from pipeline.stores.storage import RawStore

SCRATCH_TABLE = "bench_postgres_ceiling"
SCRATCH_PREFIX = "bench-s3-ceiling/"


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread: librdkafka's and boto3's too
    return usage.ru_utime + usage.ru_stime


class _CpuMeter:
    """CPU seconds spent between start and stop by this process and by one service."""

    def __init__(self, settings: Settings, service: str):
        self.settings, self.service = settings, service
        self.own = _process_cpu()
        self.theirs = service_cpu(settings).get(service, 0.0)

    def stop(self) -> dict:
        return {
            "cpu_seconds_timed": round(_process_cpu() - self.own, 3),
            "service_cpu_seconds": {
                self.service: round(service_cpu(self.settings).get(self.service, 0.0) - self.theirs, 3)
            },
        }


def broker_ceiling(settings: Settings, table_name: str, max_events: int) -> dict:
    table = settings.table(table_name)
    offsets = topic_offsets(settings, table.topic) or []
    consumer = ingest_consumer(settings, table)
    events = value_bytes = 0
    meter = _CpuMeter(settings, "kafka")
    started = time.monotonic()
    try:
        for part in offsets:
            end = min(part.high, part.low + max_events - events)
            if end <= part.low:
                continue
            consumer.assign([TopicPartition(table.topic, part.partition, part.low)])
            position = part.low
            while position < end:
                for message in consumer.consume(1000, timeout=1.0):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            end = min(end, message.offset())
                            continue
                        raise RuntimeError(f"Kafka error: {error.str()}")
                    if message.offset() < end:
                        events += 1
                        value_bytes += len(message.value() or b"")
                        position = message.offset() + 1
            consumer.unassign()
    finally:
        consumer.close()
    return {"seconds": time.monotonic() - started, "events": events, "value_bytes": value_bytes, **meter.stop()}


def s3_ceiling(settings: Settings, table_name: str, max_objects: int) -> dict:
    table = settings.table(table_name)
    store = RawStore(settings)
    bodies = [store.get(obj["Key"]) for obj in list(store.list(table.raw_objects_prefix))[:max_objects]]
    meter = _CpuMeter(settings, "s3")
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(UPLOADS_IN_FLIGHT, thread_name_prefix="ceiling-upload") as pool:
            list(pool.map(lambda item: store.put(f"{SCRATCH_PREFIX}{item[0]:06d}.jsonl", item[1]), enumerate(bodies)))
        seconds = time.monotonic() - started
        spent = meter.stop()
    finally:
        store.delete_prefix(SCRATCH_PREFIX)
    return {
        "seconds": seconds,
        "events": sum(body.count(b"\n") for body in bodies),
        "objects": len(bodies),
        "bytes": sum(len(body) for body in bodies),
        "uploads_in_flight": UPLOADS_IN_FLIGHT,
        **spent,
    }


def postgres_ceiling(settings: Settings, table_name: str, max_objects: int, workers: int) -> dict:
    table = settings.table(table_name)
    store = RawStore(settings)
    prepared_at = time.monotonic()
    bodies = []
    for obj in list(store.list(table.raw_objects_prefix))[:max_objects]:
        rows = CopyRows(table.bronze_table, obj["Key"], store.lines(obj["Key"]))
        bodies.append((rows.read(), rows.lines))
    prepare_seconds = time.monotonic() - prepared_at
    scratch = sql.SQL("{}.{}").format(sql.Identifier(settings.file.bronze_schema), sql.Identifier(SCRATCH_TABLE))
    admin = connect(settings)
    with admin, admin.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(scratch))
        cur.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(scratch, bronze_relation(settings.file, table))
        )
    pending = iter(bodies)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def copy_objects() -> None:
        conn = connect(settings)
        try:
            with conn.cursor() as cur:
                cur.execute("SET synchronous_commit = off")  # as load's sessions do
            while True:
                with lock:
                    item = next(pending, None)
                if item is None:
                    return
                with conn, conn.cursor() as cur:
                    cur.copy_expert(
                        sql.SQL("COPY {} ({}) FROM STDIN").format(scratch, sql.SQL(COPY_COLUMNS)),
                        io.BytesIO(item[0]),
                        size=COPY_CHUNK,
                    )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=copy_objects, name=f"ceiling-{n}") for n in range(max(1, workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    with admin, admin.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(scratch))
    admin.close()
    if errors:
        raise errors[0]
    return {
        "seconds": seconds,
        "rows": sum(lines for _, lines in bodies),
        "objects": len(bodies),
        "workers": max(1, workers),
        "prepare_seconds": prepare_seconds,
    }
