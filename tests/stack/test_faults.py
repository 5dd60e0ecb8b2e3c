"""Issue 9: fault injection on the embedded stack. Every test injects one fault while
the pipeline runs, lets bi-console recover, and ends by comparing bronze / staging /
marts row for row (load-time columns `ingested_at` / `ingested_timestamp` excluded) with
a fault-free full refresh of the same source.

The tests share one stack and run in order; each takes its own fault-free reference.
SIGKILL of ingest and of load is in tests/stack/test_pipeline.py
(test_sigkill_of_ingest_and_load_loses_and_duplicates_nothing).
Each test prints a `FAULT-RESULT` line with the rows it compared (see RELIABILITY.md).
"""

# Own stack, isolation needed because these tests restart PostgreSQL, stop and restart the broker
# (whose topics are in memory) and freeze moto: on shared servers every other module would fail with them.

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time

import orjson
import psutil
import pytest

from tests.support import REPO
from tests.support.stack import table_rows

pytestmark = [pytest.mark.faults, pytest.mark.own_stack]

STATE_STEPS = "ingest,load,transform"
PRODUCT_TOPIC = "cord.ConcordDb.dbo.Product"
VERBOSE = {"BI_VERBOSE": "1"}
_READY: dict = {}


# -- helpers ------------------------------------------------------------------------------
def refresh(stack, *args, env=None, ok: bool = True) -> subprocess.CompletedProcess:
    result = stack.cli("refresh", "--json", *args, env={**VERBOSE, **(env or {})})
    if ok:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def snapshot(stack, *, bronze: bool = True, staging_exclude: tuple[str, ...] = ()) -> dict:
    """Everything a fault could corrupt, without load-time columns. bronze's batch_file is
    left out too: objects cut at other sizes have other names, the events are the same."""
    snap = {
        "staging": table_rows(stack, "staging_staging.stg_product", ("ingested_at", *staging_exclude)),
        "marts": table_rows(stack, "marts.dim_product", ("ingested_timestamp",)),
    }
    if bronze:
        snap["bronze"] = table_rows(stack, "bronze.product_cdc", ("ingested_at", "batch_file"))
    return snap


def report(fault: str, snap: dict, **extra) -> None:
    counts = ", ".join(f"{k}={len(v)}" for k, v in snap.items())
    more = "".join(f", {k}={v}" for k, v in extra.items())
    print(f"FAULT-RESULT {fault}: rows compared {counts}{more}")


def ready(stack) -> None:
    """Seeded source and one full refresh (once per module)."""
    if not _READY:
        _READY.update(stack.seeded())
        refresh(stack, "--full", "--steps", STATE_STEPS)


class Background:
    """`bi-console ARGS` in the background, its stderr collected line by line."""

    def __init__(self, stack, args: list[str], env: dict | None = None):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "--env-file", str(stack.env_file), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("BI_")}, **VERBOSE, **(env or {})},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{pattern!r} never appeared:\n{self.text[-4000:]}")

    def wait(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(10)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


def checkpoint(stack, topic: str = PRODUCT_TOPIC) -> int | None:
    rows = stack.psql("SELECT next_offset FROM bi_console.ingest_checkpoint WHERE topic = %s", (topic,))
    return rows[0][0] if rows else None


def topic_messages(settings, topic: str, start: int, end: int) -> list:
    """(offset, key bytes, value bytes, timestamp) of offsets start..end-1."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "bi-console-fault-tests",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    out = []
    try:
        consumer.assign([TopicPartition(topic, 0, start)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out or out[-1][0] < end - 1):
            for message in consumer.consume(1000, timeout=1.0):
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise RuntimeError(message.error().str())
                if start <= message.offset() < end:
                    out.append((message.offset(), message.key(), message.value(), message.timestamp()[1]))
    finally:
        consumer.close()
    return out


def producer(settings):
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "acks": "all",
            "message.max.bytes": 16 * 1024 * 1024,
            "linger.ms": 5,
        }
    )


def end_offset(settings, topic: str) -> int:
    from pipeline.stores.kafka import topic_offsets

    return topic_offsets(settings, topic)[0].high


# -- S3 down during ingest ------------------------------------------------------------------
def test_faults_s3_server_suspended_during_ingest(stack):
    """moto is in memory, so it is not killed but frozen (SIGSTOP): every request hangs, as
    with a server that stopped answering. Ingest retries with backoff and a log line, stores
    no position while S3 is away, and completes once S3 answers again."""
    import boto3
    from botocore.config import Config

    from pipeline.steps.ingest import ingest
    from pipeline.stores.storage import RawStore

    ready(stack)
    settings = stack.settings
    expected = snapshot(stack)
    table = settings.table("product")
    # The production client waits 30 s per attempt; a short timeout shows the outage in seconds.
    store = RawStore(settings)
    store.client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(connect_timeout=2, read_timeout=2, retries={"max_attempts": 1}),
    )
    lines: list[str] = []
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = ingest(settings, table, full=True, log=lines.append, batch_size=1000, store=store)
        except Exception as exc:  # reported by the assertions below
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    moto = stack.runtime.process("s3").process()
    assert moto is not None
    deadline = time.monotonic() + 120
    while not any(re.search(r"ingest: .* [3-9] objects", line) for line in lines):
        assert time.monotonic() < deadline and worker.is_alive(), "\n".join(lines[-20:]) or outcome
        time.sleep(0.02)
    moto.suspend()
    try:
        deadline = time.monotonic() + 60
        while not any("retrying in" in line for line in lines):
            assert time.monotonic() < deadline, "\n".join(lines[-20:])
            time.sleep(0.1)
        held = checkpoint(stack)
        suspended_at = time.monotonic()

        def delays_by_object() -> dict[str, list[str]]:
            # Each object backs off on its own (two may be in flight): 0.5 s, 1 s, 2 s, ...
            delays: dict[str, list[str]] = {}
            for line in [line for line in lines if "retrying in" in line]:
                key, delay = re.search(r"S3 write of (\S+) failed.*retrying in ([0-9.]+)s", line).groups()
                delays.setdefault(key, []).append(delay)
            return delays

        while max(map(len, delays_by_object().values())) < 3 or time.monotonic() - suspended_at < 5:
            assert time.monotonic() - suspended_at < 120, "\n".join(lines[-20:])
            time.sleep(0.2)
        assert checkpoint(stack) == held, "a position was stored while S3 was down"
        retries = [line for line in lines if "retrying in" in line]
        assert any(delays[:3] == ["0.5", "1.0", "2.0"] for delays in delays_by_object().values()), retries
        assert worker.is_alive()
    finally:
        moto.resume()
    worker.join(180)
    assert not worker.is_alive() and "error" not in outcome, outcome
    total = end_offset(settings, table.topic)
    assert (outcome["result"].events, outcome["result"].quarantined) == (total, 0)
    assert checkpoint(stack) == total and held < total
    refresh(stack, "--full", "--steps", "load,transform")
    after = snapshot(stack)
    assert after == expected
    report("s3_suspended_during_ingest", after, retry_lines=len(retries), checkpoint_held_at=held)


# -- PostgreSQL restart during load and during transform ----------------------------------
def _lock(stack, relation: str):
    """A session holding an ACCESS EXCLUSIVE lock: the step blocks on it, so the restart lands
    while the step is certainly mid-way. The restart ends this session too."""
    from pipeline.stores.db import connect

    conn = connect(stack.settings)
    conn.cursor().execute(f"LOCK TABLE {relation} IN ACCESS EXCLUSIVE MODE")
    return conn


def _restart_postgres(stack) -> None:
    stack.runtime.restart("postgres", log=lambda line: print(line, file=sys.stderr))


def _cdc_running(stack, timeout: float = 90) -> str:
    """The connector state after the source database (same server) restarted."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = stack.runtime.connector_status().effective_state
        if state == "RUNNING":
            return state
        time.sleep(1)
    return state


def test_faults_postgres_restart_during_load(stack):
    ready(stack)
    env = {"BI_INGEST_BATCH_SIZE": "1000"}
    refresh(stack, "--full", "--steps", STATE_STEPS, env=env)
    expected = snapshot(stack)
    total = len(expected["bronze"])
    load = Background(stack, ["refresh", "--full", "--steps", "load", "--table", "product"], env)
    load.wait_for(r"load: 10/\d+ objects")
    # A full load fills a shadow table and swaps it in at the end: the restart lands mid-way.
    lock = _lock(stack, "bronze.product_cdc__full")
    time.sleep(1)
    _restart_postgres(stack)
    lock.close()
    assert load.wait() != 0, load.text[-3000:]
    assert "refresh failed at product:load" in load.text
    partial = stack.psql("SELECT count(*) FROM bronze.product_cdc__full")[0][0]
    assert 0 < partial < total
    assert snapshot(stack) == expected  # readers still see the whole previous bronze
    rerun = refresh(stack, "--full", "--steps", "load,transform", env=env)
    assert "bronze.product_cdc replaced by the full load" in rerun.stderr, rerun.stderr[-3000:]
    after = snapshot(stack)
    assert after == expected
    report("postgres_restart_during_load", after, bronze_rows_at_crash=partial, cdc_after_restart=_cdc_running(stack))


def test_faults_postgres_restart_during_transform(stack):
    ready(stack)
    assert _cdc_running(stack) == "RUNNING"
    stack.cli("demo", "changes", "300", check=True)
    refresh(stack, "--incremental", "--steps", "ingest,load")
    marts_before = table_rows(stack, "marts.dim_product")
    lock = _lock(stack, "marts.dim_product")
    transform = Background(stack, ["refresh", "--incremental", "--steps", "transform"])
    transform.wait_for(r"START sql incremental model marts\.dim_product")
    time.sleep(1)
    _restart_postgres(stack)
    lock.close()
    assert transform.wait() != 0, transform.text[-3000:]
    assert "refresh failed at all:transform" in transform.text
    assert table_rows(stack, "marts.dim_product") == marts_before  # rolled back whole, nothing half-written
    refresh(stack, "--incremental", "--steps", "transform")
    recovered = snapshot(stack)
    assert table_rows(stack, "marts.dim_product") != marts_before  # the 300 changes did arrive
    refresh(stack, "--full", "--steps", STATE_STEPS)
    assert snapshot(stack) == recovered
    report("postgres_restart_during_transform", recovered, cdc_after_restart=_cdc_running(stack))


# -- dbt failure mid-run ------------------------------------------------------------------
def test_faults_dbt_failure_keeps_last_good_marts(stack):
    """The bronze table disappears under dbt (a botched migration): base_product (the table
    behind stg_product) cannot build, so the run fails. marts.dim_product keeps its last
    good rows, ingested_timestamp included, and the pending changes arrive on the first run
    that succeeds."""
    ready(stack)
    last_good = table_rows(stack, "marts.dim_product")
    stack.cli("demo", "changes", "200", "--seed", "11", check=True)
    refresh(stack, "--incremental", "--steps", "ingest,load")
    stack.psql("ALTER TABLE bronze.product_cdc RENAME TO product_cdc_moved_away")
    try:
        failed = refresh(stack, "--incremental", "--steps", "transform", ok=False)
        assert failed.returncode == 1, failed.stderr[-3000:]
        run = json.loads(failed.stdout)
        assert run["outcome"] == "failed" and run["failed_step"] == "all:transform"
        assert "base_product" in run["error"], run["error"]
        assert table_rows(stack, "marts.dim_product") == last_good
    finally:
        stack.psql("ALTER TABLE bronze.product_cdc_moved_away RENAME TO product_cdc")
    refresh(stack, "--incremental", "--steps", "transform,test")
    recovered = snapshot(stack)
    assert table_rows(stack, "marts.dim_product") != last_good
    refresh(stack, "--full", "--steps", STATE_STEPS)
    assert snapshot(stack) == recovered
    report("dbt_failure_mid_run", recovered, marts_rows_kept=len(last_good))


# -- Debezium replays events already delivered ----------------------------------------------
def test_faults_debezium_replay_is_deduplicated(stack):
    """After a connector crash Debezium re-sends what it sent since its last committed offset:
    the same keys and values at new Kafka offsets. Bronze keeps every Kafka record; staging
    keeps one row per product, chosen by source position, so staging and marts are unchanged."""
    ready(stack)
    settings = stack.settings
    refresh(stack, "--full", "--steps", STATE_STEPS)
    # Equal source positions go to the later Kafka record, so staging's kafka_offset may name
    # the replayed copy (checked below to carry the same event); every other column is compared.
    before = snapshot(stack, bronze=False, staging_exclude=("kafka_offset",))
    end = end_offset(settings, PRODUCT_TOPIC)
    replay = topic_messages(settings, PRODUCT_TOPIC, end - 400, end)
    assert len(replay) == 400
    p = producer(settings)
    for _, key, value, _ in replay:
        p.produce(PRODUCT_TOPIC, key=key, value=value)
    assert p.flush(30) == 0
    bronze_before = stack.psql("SELECT count(*) FROM bronze.product_cdc")[0][0]
    refresh(stack, "--incremental", "--steps", STATE_STEPS + ",test")
    assert stack.psql("SELECT count(*) FROM bronze.product_cdc")[0][0] == bronze_before + 400
    assert stack.psql("SELECT count(*) FROM bronze.product_cdc WHERE kafka_offset >= %s", (end,))[0][0] == 400
    after = snapshot(stack, bronze=False, staging_exclude=("kafka_offset",))
    assert after == before
    # Where staging now points at a replayed record, that record is the original's twin.
    mismatched = stack.psql(
        "SELECT count(*) FROM staging_staging.stg_product s JOIN bronze.product_cdc r ON r.kafka_offset = s.kafka_offset "
        "JOIN bronze.product_cdc o ON o.kafka_offset = s.kafka_offset - %s "
        "WHERE s.kafka_offset >= %s AND (o.cdc_payload IS DISTINCT FROM r.cdc_payload OR o.kafka_key <> r.kafka_key)",
        (400, end),
    )[0][0]
    assert mismatched == 0
    repointed = stack.psql("SELECT count(*) FROM staging_staging.stg_product WHERE kafka_offset >= %s", (end,))[0][0]
    refresh(stack, "--full", "--steps", STATE_STEPS)
    assert snapshot(stack, bronze=False, staging_exclude=("kafka_offset",)) == after
    report(
        "debezium_replay",
        after,
        replayed=400,
        bronze_rows=bronze_before + 400,
        staging_rows_now_naming_the_replayed_twin=repointed,
    )


# -- poison messages ------------------------------------------------------------------------
POISON_TABLE = dict(
    name="poison",
    source_table="Poison",
    topic="test.poison",
    raw_prefix="poison/raw",
    bronze_table="poison_cdc",
    dbt_selector="",
    staging_relation="stg_poison",
    marts_relation="dim_poison",
    suites=[],
)


def _poisons(good: list) -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, expected reason) of each kind of poison, built from real events."""
    _, key, value, _ = next(m for m in good if m[2] is not None)
    document = orjson.loads(value)
    envelope = document.get("payload", document)
    row_id = envelope["after"]["ID"]
    huge = json.loads(value)
    (huge.get("payload", huge))["after"]["Description"] = "x" * (5 * 1024 * 1024)
    other_key = orjson.dumps({"ID": row_id + 1})
    return [
        (key, value[: len(value) // 2], "value is not JSON"),
        (key, b'\xff\xfe{"op": "c"}', "value is not valid UTF-8"),
        (key, json.dumps(huge).encode(), "above the 4,194,304-byte limit"),
        (key, b'{"hello": "world", "op": "x"}', "value is not a Debezium change event"),
        (other_key, value, f"key ID={row_id + 1} does not match the value's ID={row_id}"),
    ]


def test_faults_poison_messages_are_quarantined(stack):
    from pipeline.config import TableConfig
    from pipeline.steps.ingest import ingest
    from pipeline.steps.load import load
    from pipeline.stores.kafka import ensure_topic
    from pipeline.stores.storage import RawStore

    ready(stack)
    settings = stack.settings
    table = TableConfig(**POISON_TABLE)
    ensure_topic(settings, table.topic)
    good = topic_messages(settings, PRODUCT_TOPIC, 0, 60)
    poisons = _poisons(good)
    p = producer(settings)
    expected_good, expected_poison, produced = [], {}, {}
    offset = 0
    for index, (_, key, value, _) in enumerate(good):
        p.produce(table.topic, key=key, value=value)
        expected_good.append(offset)
        offset += 1
        if index % 12 == 5 and poisons:
            pkey, pvalue, reason = poisons.pop(0)
            p.produce(table.topic, key=pkey, value=pvalue)
            expected_poison[offset] = reason
            produced[offset] = (pkey, pvalue)
            offset += 1
    assert not poisons and p.flush(30) == 0
    lines: list[str] = []
    result = ingest(settings, table, full=True, log=lines.append)
    assert (result.events, result.quarantined) == (len(expected_good), 5), lines
    store = RawStore(settings)
    quarantined = [
        orjson.loads(line) for obj in store.list(table.quarantine_prefix) for line in store.get(obj["Key"]).splitlines()
    ]
    reasons = {q["offset"]: q["reason"] for q in quarantined}
    assert set(reasons) == set(expected_poison), reasons
    for at, reason in expected_poison.items():
        assert reason in reasons[at], (at, reasons[at])
    # Each quarantined message is kept whole: its key and value bytes are the ones produced.

    def original(field: dict) -> bytes | None:
        return (
            base64.b64decode(field["base64"])
            if "base64" in field
            else (None if field["text"] is None else field["text"].encode())
        )

    for q in quarantined:
        assert (original(q["key"]), original(q["value"])) == produced[q["offset"]], q["offset"]
        assert q["value_bytes"] == len(produced[q["offset"]][1]) and "truncated" not in q["value"]
    big = next(q for q in quarantined if "byte limit" in q["reason"])
    assert big["value_bytes"] > 5 * 1024 * 1024 and len(big["value"]["text"]) == big["value_bytes"]
    assert "base64" in next(q for q in quarantined if "UTF-8" in q["reason"])["value"]
    # ... and indexed where the checks and the CLI find it.
    indexed = stack.psql(
        "SELECT kafka_offset, kafka_epoch, reason, value_bytes FROM bi_console.quarantine "
        "WHERE table_name = 'poison' ORDER BY 1"
    )
    assert [(r[0], r[1], r[3]) for r in indexed] == [(at, 0, len(produced[at][1])) for at in sorted(expected_poison)]
    assert all(expected_poison[r[0]] in r[2] for r in indexed), indexed
    loaded = load(settings, table, full=True, log=lines.append)
    assert (loaded.inserted, loaded.rejected) == (len(expected_good), 0)
    bronze = [r[0] for r in stack.psql("SELECT kafka_offset FROM bronze.poison_cdc ORDER BY 1")]
    assert bronze == expected_good
    # The raw events are the product topic's, byte for byte where it matters: the same payloads.
    same = stack.psql(
        "SELECT count(*) FROM bronze.poison_cdc p JOIN bronze.product_cdc o "
        "ON o.kafka_key = p.kafka_key AND o.cdc_payload IS NOT DISTINCT FROM p.cdc_payload"
    )[0][0]
    assert same >= len(expected_good)

    # A raw object with a malformed line: that line is rejected with where and why, the rest loads.
    good_line = store.get(next(iter(store.list(table.raw_objects_prefix)))["Key"]).splitlines()[0]
    record = orjson.loads(good_line)
    lines_in = [
        orjson.dumps({**record, "offset": 10_000}),
        b'{"topic": "test.poison", "partition": 0, "offs',
        orjson.dumps({**record, "offset": 10_001}),
        orjson.dumps({**record, "offset": "ten"}),
    ]
    key = f"{table.raw_objects_prefix}test.poison+0+{10_000:020d}+{10_003:020d}.jsonl"
    store.put(key, b"\n".join(lines_in) + b"\n")
    loaded = load(settings, table, full=False, log=lines.append)
    assert (loaded.objects, loaded.inserted, loaded.rejected) == (1, 2, 2)
    rejects = stack.psql(
        "SELECT object_key, line_number, reason FROM bi_console.load_rejects "
        "WHERE bronze_table = 'poison_cdc' ORDER BY line_number"
    )
    assert [(r[0], r[1]) for r in rejects] == [(key, 2), (key, 4)]
    assert rejects[0][2].startswith("not JSON") and rejects[1][2] == "'offset' is not an integer"
    assert stack.psql("SELECT count(*) FROM bronze.poison_cdc WHERE kafka_offset >= 10000")[0][0] == 2
    print(
        f"FAULT-RESULT poison_messages: {len(expected_good)} good events all in bronze.poison_cdc, "
        f"5 quarantined with reasons {sorted(reasons.values())}; malformed raw lines: 2 rejected, 2 loaded"
    )


# -- schema drift -----------------------------------------------------------------------------
def test_faults_schema_drift_new_source_column_reaches_bronze(stack):
    from pipeline.stores.db import connect_source

    ready(stack)
    settings = stack.settings
    start = end_offset(settings, PRODUCT_TOPIC)
    conn = connect_source(settings)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute('ALTER TABLE dbo."Product" ADD COLUMN IF NOT EXISTS "Color" varchar(20)')
        cur.execute(
            'UPDATE dbo."Product" SET "Color" = %s WHERE "ID" IN '
            '(SELECT "ID" FROM dbo."Product" ORDER BY "ID" LIMIT 25)',
            ("graphite",),
        )
        assert cur.rowcount == 25
    conn.close()
    deadline = time.monotonic() + 120
    while end_offset(settings, PRODUCT_TOPIC) < start + 25:
        assert time.monotonic() < deadline, "the source changes never reached Kafka"
        time.sleep(1)
    run = json.loads(refresh(stack, "--incremental", "--steps", STATE_STEPS + ",test").stdout)
    assert run["outcome"] == "ok"
    test_step = next(s for s in run["steps"] if s["step"] == "test")
    assert test_step["counts"].get("fail", 0) == 0 and test_step["counts"].get("pass", 0) > 0
    colored = stack.psql("SELECT count(*) FROM bronze.product_cdc WHERE cdc_payload->'after'->>'Color' = 'graphite'")
    assert colored[0][0] == 25
    assert len(table_rows(stack, "staging_staging.stg_product")) > 0
    # Issue 21: the column the source added reaches staging (as text, until the contract
    # gives its type), after the contract's 54.
    columns = stack.psql(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'staging_staging' "
        "AND table_name = 'stg_product' ORDER BY ordinal_position"
    )
    assert len(columns) == 55 and ("color",) in columns, columns
    assert stack.psql("SELECT count(*) FROM staging_staging.stg_product WHERE color = 'graphite'") == [(25,)]
    after = snapshot(stack)
    refresh(stack, "--full", "--steps", STATE_STEPS)
    assert snapshot(stack) == after
    report("schema_drift", after, bronze_rows_with_new_column=25)


# -- broker restart during ingest ---------------------------------------------------------------
CDC_COLUMNS = ("ingested_at", "cdc_operation", "source_timestamp", "is_snapshot", "kafka_offset")


def _wait_for_resnapshot(stack, timeout: float = 240) -> int:
    """Until the new snapshot holds every source row of the product table."""
    from pipeline.stores.db import connect_source
    from pipeline.stores.kafka import topic_offsets

    conn = connect_source(stack.settings)
    with conn.cursor() as cur:
        cur.execute('SELECT count(*) FROM dbo."Product"')
        rows = cur.fetchone()[0]
    conn.close()
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        offsets = topic_offsets(stack.settings, PRODUCT_TOPIC)
        count = offsets[0].high if offsets else 0
        if count >= rows:
            return count
        time.sleep(1)
    raise AssertionError(f"the re-snapshot reached {count} of {rows} source rows")


def _active_staging(stack) -> list[tuple]:
    columns = [
        r[0]
        for r in stack.psql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'staging_staging' "
            "AND table_name = 'stg_product' ORDER BY ordinal_position"
        )
        if r[0] not in CDC_COLUMNS
    ]
    select = ", ".join(f'"{c}"::text' for c in columns)
    return stack.psql(f"SELECT {select} FROM staging_staging.stg_product WHERE NOT deleted ORDER BY 1")


def _raw_offsets(stack, table) -> dict[int, set[int]]:
    """The offsets of every event line in the raw zone, by epoch, read from the lines themselves."""
    from pipeline.stores.storage import RawStore

    store = RawStore(stack.settings)
    found: dict[int, set[int]] = {}
    for obj in store.list(table.raw_objects_prefix):
        for line in store.lines(obj["Key"]):
            if line.strip():
                head = orjson.loads(line)
                found.setdefault(head.get("epoch", 0), set()).add(head["offset"])
    return found


def _wait_for_checkpoint(stack, low: int, high: int, proc, timeout: float = 180) -> int:
    """Until the recorded position is in low..high-1 (a run in flight recorded that far)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        at = checkpoint(stack)
        if at is not None and low <= at < high:
            return at
        time.sleep(0.02)
    raise AssertionError(f"the position never reached {low}..{high - 1} (last {checkpoint(stack)})")


def _suspend_between_transactions(stack, pid: int, timeout: float = 30):
    """Suspend the process at a moment when none of its transactions holds a transaction id.
    The cdc restart recreates the replication slot, and PostgreSQL creates a slot only once
    every transaction with an id, in every database of the cluster, has ended: a run frozen
    inside its load transaction would hold the restart forever (the embedded source shares
    the analytics cluster)."""
    frozen = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while True:
        frozen.suspend()
        open_writes = stack.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
        )[0][0]
        if open_writes == 0:
            return frozen
        frozen.resume()
        if time.monotonic() > deadline:
            raise AssertionError(f"the run never paused between transactions in {timeout:.0f} s")
        time.sleep(0.01)


def test_faults_broker_restart_during_ingest(stack):
    """The memory broker loses every topic when it restarts; the cdc engine notices (empty topics,
    stored source offsets) and re-snapshots into new ones. bi-console notices that the topic went
    back, says so in its normal output and its history, and goes on in a new epoch next to the
    old one: bronze and the raw zone keep every event read before, staging keeps the deleted
    products, the marts equal the fault-free result."""
    from pipeline.orchestration.refresh import read_history
    from pipeline.stores.storage import RawStore

    ready(stack)
    settings = stack.settings
    table = settings.table("product")
    refresh(stack, "--full", "--steps", STATE_STEPS)
    # A re-snapshot stamps its own read time as source.ts_ms: source_timestamp is when Debezium
    # captured the row, so, like the load time, it is not part of what must come back equal.
    capture_times = ("ingested_timestamp", "source_timestamp")
    expected_marts = table_rows(stack, "marts.dim_product", capture_times)
    expected_staging = _active_staging(stack)
    events_before = end_offset(settings, PRODUCT_TOPIC)
    bronze_before = stack.psql("SELECT count(*) FROM bronze.product_cdc")[0][0]
    raw_before = _raw_offsets(stack, table)
    raw_objects_before = len(list(RawStore(settings).list(table.raw_objects_prefix)))
    deleted_before = stack.psql("SELECT count(*) FROM staging_staging.stg_product WHERE deleted")[0][0]
    assert bronze_before == events_before and raw_before == {0: set(range(events_before))}
    assert deleted_before > 0
    runs_before = len(read_history(settings, limit=10_000))
    # Without BI_VERBOSE: what the operator sees by default must say what happened.
    quiet = {"BI_VERBOSE": ""}
    inflight = Background(
        stack, ["refresh", "--full", "--steps", STATE_STEPS], {"BI_INGEST_BATCH_SIZE": "1000", **quiet}
    )
    _wait_for_checkpoint(stack, 3000, 10_000, inflight.proc)
    # The run is frozen while the broker restarts, so that the restart lands mid-ingest whatever
    # the machine's speed (tansu takes seconds to stop; the run would otherwise read to the end).
    frozen = _suspend_between_transactions(stack, inflight.proc.pid)
    restart_log: list[str] = []
    try:
        stack.runtime.stop("kafka")
        stack.runtime.start("kafka", log=restart_log.append)
    finally:
        frozen.resume()
    assert any("restarting cdc" in line for line in restart_log), restart_log
    # The run in flight notices by itself (its consumer went back, or the log it reads changed)
    # instead of waiting forever, and goes on in the new epoch: nothing to fail.
    try:
        inflight_code = inflight.wait(400)
    except subprocess.TimeoutExpired:
        inflight.stop()
        raise AssertionError(f"the run in flight did not end:\n{inflight.text[-4000:]}") from None
    assert inflight_code == 0, inflight.text[-4000:]
    snapshot_events = _wait_for_resnapshot(stack)
    assert snapshot_events < events_before
    cdc_log = "\n".join(stack.runtime.process("cdc").tail(400))
    assert "the broker lost its data" in cdc_log
    rerun = refresh(stack, "--incremental", "--steps", STATE_STEPS + ",test", env=quiet)
    epoch_events = end_offset(settings, PRODUCT_TOPIC)
    assert epoch_events >= snapshot_events

    # History: one reset, noticed by the run in flight while it read.
    runs = read_history(settings, limit=10_000)[::-1][runs_before:]  # oldest first: the run in flight, the rerun
    assert [r["outcome"] for r in runs] == ["ok", "ok"], [(r["outcome"], r["error"]) for r in runs]
    resets = [reset for r in runs for reset in r["details"].get("topic_resets", [])]
    # The broker lost every topic: MeasureUnit's too, noticed when its turn came.
    assert [(r["table"], r["topic"], r["partition"], r["old_epoch"], r["new_epoch"]) for r in resets] == [
        ("product", PRODUCT_TOPIC, 0, 0, 1),
        ("measure_unit", "cord.ConcordDb.dbo.MeasureUnit", 0, 0, 1),
    ], resets
    assert runs[0]["details"]["topic_resets"][0]["table"] == "product"
    assert resets[0]["reason"].startswith("it went back while it was read"), resets[0]
    # Bronze: every event of the old epoch, and the new epoch next to it.
    assert stack.psql(
        "SELECT kafka_epoch, count(*), min(kafka_offset), max(kafka_offset) FROM bronze.product_cdc "
        "GROUP BY 1 ORDER BY 1"
    ) == [(0, events_before, 0, events_before - 1), (1, epoch_events, 0, epoch_events - 1)]
    # The raw zone: every line read before is still there, and the new epoch's.
    raw_after = _raw_offsets(stack, table)
    assert raw_after == {0: set(range(events_before)), 1: set(range(epoch_events))}
    # Staging keeps the hard-deleted products; the marts are the active ones, as without the fault.
    deleted_after = stack.psql("SELECT count(*) FROM staging_staging.stg_product WHERE deleted")[0][0]
    assert deleted_after >= deleted_before
    recovered_marts = table_rows(stack, "marts.dim_product", capture_times)
    assert recovered_marts == expected_marts
    assert _active_staging(stack) == expected_staging
    # Two epochs hold equal offsets: rows are compared in an order of every column.

    def ordered(snap: dict) -> dict:
        return {name: sorted(rows, key=lambda row: [(v is None, v or "") for v in row]) for name, rows in snap.items()}

    recovered = ordered(snapshot(stack))
    refresh(stack, "--full", "--steps", STATE_STEPS)
    again = ordered(snapshot(stack))
    for name in recovered:
        assert again[name] == recovered[name], (name, set(again[name]) ^ set(recovered[name]))
    # The default output (no BI_VERBOSE) said it, and what was kept.
    said = inflight.text + rerun.stderr
    notice = re.search(
        rf"^  ! topic {re.escape(PRODUCT_TOPIC)} partition 0 was reset "
        rf"\(it went back while it was read: .*?\): epoch 1 started at offset 0; epoch 0 keeps "
        rf"{events_before:,} offsets in \d+ raw objects and {bronze_before:,} events in bronze; "
        rf"nothing was deleted$",
        said,
        re.MULTILINE,
    )
    assert notice, said[-4000:]
    report(
        "broker_restart_during_ingest",
        {"marts": recovered_marts, "staging_active": expected_staging, "bronze": recovered["bronze"]},
        inflight_exit=inflight_code,
        events_before=events_before,
        raw_objects_before=raw_objects_before,
        resnapshot_events=epoch_events,
        deleted_kept=f"{deleted_before}->{deleted_after}",
        noticed=resets[0]["reason"],
    )
