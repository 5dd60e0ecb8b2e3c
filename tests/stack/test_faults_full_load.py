"""Issue 16: every layer stays readable through a failed full refresh.

A full load fills a shadow table and swaps it in at the end, in one transaction. These
tests fail a full load half-way, once by SIGKILL and once by a PostgreSQL error, and show
that bronze (count and every column of every row, load-time columns included) and its
manifest are what they were, that a session reading bronze during the load always saw the
whole old table, and that a good full refresh then replaces them.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.stack.test_faults import STATE_STEPS, Background, end_offset, refresh, report, snapshot
from tests.support.stack import table_rows

pytestmark = pytest.mark.faults

BATCH = {"BI_INGEST_BATCH_SIZE": "1000"}  # ~32 objects: a load is certainly mid-way at object 10
SHADOW = "bronze.product_cdc__full"
FULL_LOAD = ["refresh", "--full", "--steps", "load", "--table", "product"]


class Reader:
    """A session that counts bronze's rows while a load runs, as a dashboard would."""

    def __init__(self, stack):
        from pipeline.stores.db import connect

        self.conn = connect(stack.settings)
        self.conn.autocommit = True
        self.counts: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM bronze.product_cdc")
                    self.counts.append(cur.fetchone()[0])
            except Exception as exc:  # recorded: a reader must never see an error
                self.errors.append(str(exc))
            time.sleep(0.05)

    def stop(self) -> tuple[list[int], list[str]]:
        self._stop.set()
        self.thread.join(30)
        self.conn.close()
        return self.counts, self.errors


def bronze_state(stack) -> tuple[list[tuple], list[tuple]]:
    """Every column of every bronze row, and the table's manifest rows."""
    return (
        table_rows(stack, "bronze.product_cdc"),
        stack.psql(
            "SELECT object_key, etag, lines, inserted, rejected, sanitized, loaded_at::text "
            "FROM bi_console.load_manifest WHERE bronze_table = 'product_cdc' ORDER BY 1"
        ),
    )


def test_faults_failed_full_load_leaves_bronze_readable_and_unchanged(stack):
    stack.seeded()
    refresh(stack, "--full", "--steps", STATE_STEPS, env=BATCH)
    before = bronze_state(stack)
    old_count = len(before[0])
    assert old_count > 0 and len(before[1]) > 10
    # New events in the raw zone that the failed loads must not bring half-way into bronze.
    stack.cli("demo", "changes", "150", check=True)
    deadline = time.monotonic() + 120
    while end_offset(stack.settings, stack.settings.table("product").topic) < old_count + 150:
        assert time.monotonic() < deadline, "the demo changes never reached Kafka"
        time.sleep(1)
    refresh(stack, "--incremental", "--steps", "ingest", env=BATCH)
    assert bronze_state(stack) == before

    # 1. SIGKILL mid-way.
    reader = Reader(stack)
    killed = Background(stack, FULL_LOAD, BATCH)
    killed.wait_for(r"load: 10/\d+ objects")
    killed.proc.kill()
    killed.wait()
    counts, errors = reader.stop()
    assert stack.psql("SELECT to_regclass(%s) IS NOT NULL", (SHADOW,)) == [(True,)]  # it was mid-way
    assert bronze_state(stack) == before
    assert counts and set(counts) == {old_count} and not errors, (set(counts), errors[:3])
    kill_reads = len(counts)

    # 2. A PostgreSQL error mid-way: a constraint on the shadow refuses every row from object 10 on.
    reader = Reader(stack)
    failing = Background(stack, FULL_LOAD, BATCH)
    failing.wait_for(r"load: 10/\d+ objects")
    stack.psql(f"ALTER TABLE {SHADOW} ADD CONSTRAINT refuse_the_rest CHECK (false) NOT VALID")
    assert failing.wait() == 1, failing.text[-3000:]
    assert "refresh failed at product:load" in failing.text
    assert 'violates check constraint "refuse_the_rest"' in failing.text, failing.text[-3000:]
    counts, errors = reader.stop()
    assert bronze_state(stack) == before
    assert counts and set(counts) == {old_count} and not errors, (set(counts), errors[:3])
    error_reads = len(counts)

    # 3. A good full refresh drops the leftover shadow and replaces bronze; readers see old or new.
    reader = Reader(stack)
    refresh(stack, "--full", "--steps", "load,transform", env=BATCH)
    counts, errors = reader.stop()
    total = end_offset(stack.settings, stack.settings.table("product").topic)
    assert total >= old_count + 150
    assert stack.psql("SELECT to_regclass(%s)", (SHADOW,)) == [(None,)]
    # Independent expectation: one bronze row per Kafka offset of the topic, 0 .. end - 1.
    assert stack.psql(
        "SELECT count(*), count(DISTINCT kafka_offset), min(kafka_offset), max(kafka_offset) FROM bronze.product_cdc"
    ) == [(total, total, 0, total - 1)]
    assert set(counts) <= {old_count, total} and not errors, (set(counts), errors[:3])
    new_rows = set(table_rows(stack, "bronze.product_cdc", ("ingested_at",)))
    assert len(new_rows) == total and new_rows >= set(_without(before[0], stack, "ingested_at"))
    ((manifest_rows, inserted),) = stack.psql(
        "SELECT count(*), sum(inserted) FROM bi_console.load_manifest WHERE bronze_table = 'product_cdc'"
    )
    assert inserted == total and manifest_rows > len(before[1])
    assert stack.psql("SELECT count(*) FROM bi_console.load_manifest WHERE bronze_table LIKE '%\\_\\_full'") == [(0,)]
    # The canonical names survive the swap, so the next migration finds them.
    assert sorted(
        r[0]
        for r in stack.psql(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'bronze' AND tablename = 'product_cdc'"
        )
    ) == ["product_cdc_ingested_at_idx", "product_cdc_kafka_position_key", "product_cdc_record_key_idx"]
    recovered = snapshot(stack)
    refresh(stack, "--full", "--steps", STATE_STEPS, env=BATCH)
    assert snapshot(stack) == recovered
    report(
        "failed_full_load",
        recovered,
        bronze_rows_kept=old_count,
        reads_during_kill=kill_reads,
        reads_during_pg_error=error_reads,
        new_bronze_rows=total,
    )


def _without(rows: list[tuple], stack, column: str) -> list[tuple]:
    """`rows` of table_rows(bronze) with one column left out, by its position."""
    columns = [
        r[0]
        for r in stack.psql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'bronze' "
            "AND table_name = 'product_cdc' ORDER BY ordinal_position"
        )
    ]
    drop = columns.index(column)
    return [row[:drop] + row[drop + 1 :] for row in rows]
