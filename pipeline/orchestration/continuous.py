"""The continuous runner (`bi-console run`): the refresh's stages working at once.

    ingest ──objects──▶ load ──bronze changed──▶ transform (warm dbt) ──▶ validate, bi (slow cadence)

- ingest keeps reading every table's topic; an object is written at a size or an age (~1 s);
- load takes each object as soon as its position is recorded (and, at start and after any
  error, every object not in bronze yet: a resume);
- transform runs dbt's incremental models as soon as bronze has new rows, in a DbtProject
  that parsed the project once;
- dbt tests and Great Expectations run at most every `validate_every_seconds`, and the BI
  cache refresh `bi_debounce_seconds` after the last change: both off the hot path, their
  results in the heartbeat, where `--check` reads them.

Every position lives where the one-shot refresh keeps it (ingest checkpoints, the load
manifest, staging's own watermark), so the runner resumes after any restart, its own or a
service's, and a manual refresh in between sees the same state. The runner holds the refresh
lock while it works; a manual refresh asks it to pause (`request_pause`) and it lets go.

Freshness: every object carries the source commit time of its newest event (Debezium
`source.ts_ms`), so each stage knows how far behind the source it is; the heartbeat holds each
stage's lag in events and seconds, and the commit → marts latencies of recent changes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from psycopg2.extensions import connection

from pipeline.config import Settings, TableConfig
from pipeline.config.security import redact
from pipeline.orchestration.plan import superset_enabled, tables_of_failed_models
from pipeline.orchestration.refresh import RefreshLock, RefreshLocked, pause_request_path
from pipeline.orchestration.refresh_process import run_refresh_in_child
from pipeline.process.log_sink import Log
from pipeline.steps.bi import run_bi_refresh
from pipeline.steps.ingest import Checkpoints, StepCancelled, WrittenObject, ingest
from pipeline.steps.load import BronzeAppender
from pipeline.steps.transform import DbtProject
from pipeline.stores.db import connect
from pipeline.stores.kafka import client_config, topic_offsets
from pipeline.stores.runner_state import Heartbeat, ensure_heartbeat_table, write_heartbeat
from pipeline.stores.storage import RawStore

LATENCIES_KEPT = 2000  # commit → marts latencies kept for the heartbeat's percentiles
ANALYZE_EVERY_ROWS = 50_000  # bronze statistics refreshed after this many new rows
RESCAN_EVERY_SECONDS = 60.0  # load also lists the raw zone this often: objects of another writer
BACKOFF_MAX_SECONDS = 15.0
SUMMARY_EVERY_SECONDS = 30.0
FAILED_TABLE_REST_SECONDS = 30.0  # a table whose models failed is retried this often


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}s"


def summary_line(snapshot: dict[str, Any]) -> str:
    """One line of what the runner's heartbeat says: its freshness, latencies and backlogs."""
    latency = snapshot.get("latency", {})
    backlog = {
        stage: sum((stages.get(stage, {}).get("events") or 0) for stages in snapshot.get("tables", {}).values())
        for stage in ("topic_to_raw", "raw_to_bronze", "bronze_to_marts")
    }
    errors = [f"{name}: {s['error']}" for name, s in snapshot.get("stages", {}).items() if s.get("error")]
    return (
        f"run: marts {_seconds(snapshot.get('freshness_seconds'))} behind the source "
        f"(objective {_seconds(snapshot.get('objective_seconds'))}); commit → marts p50 {_seconds(latency.get('p50'))} "
        f"p95 {_seconds(latency.get('p95'))} max {_seconds(latency.get('max'))} over {latency.get('changes', 0)} objects; "
        f"waiting: {backlog['topic_to_raw']} in topics, {backlog['raw_to_bronze']} in the raw zone, "
        f"{backlog['bronze_to_marts']} in bronze" + (f"; failing: {'; '.join(errors)}" if errors else "")
    )


def _pause_requester(settings: Settings) -> dict[str, Any] | None:
    """The pending pause request, None when there is none or its requester is gone."""
    path = pause_request_path(settings)
    try:
        requester = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return None
    pid = requester.get("pid")
    if isinstance(pid, int) and not _alive(pid):
        path.unlink(missing_ok=True)  # its refresh died: nothing waits for the lock any more
        return None
    return dict(requester)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (share 0.95 for p95), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-share * len(ordered) // 1))))
    return ordered[rank - 1]


@dataclass
class _Pending:
    """Events of one object on their way: loaded into bronze, not yet through the transform."""

    table: str
    events: int
    commit_ms: int | None


@dataclass
class TableProgress:
    """Where one table's newest events are, stage by stage (commit times in epoch ms)."""

    topic_end: int | None = None  # the topic's end offsets, summed over partitions
    ingested: int | None = None  # the recorded ingest positions, summed
    topic_commit_ms: int | None = None  # newest event in the raw zone: its source commit ...
    topic_ms: int | None = None  # ... and when it reached the topic
    raw_at: float | None = None  # ... and the raw zone
    unloaded_events: int = 0
    bronze_commit_ms: int | None = None
    untransformed_events: int = 0
    marts_commit_ms: int | None = None
    marts_at: float | None = None

    def stages(self, now: float) -> dict[str, dict[str, Any]]:
        """Each stage's lag: events not yet past it and, in seconds, how long after its source
        commit the newest event still waiting for it was committed... as far as the runner can
        tell: source → topic is Debezium's own delay for the newest event it wrote."""

        def behind(commit_ms: int | None, waiting: int) -> float:
            if not waiting or commit_ms is None:
                return 0.0
            return max(0.0, now - commit_ms / 1000)

        topic_backlog = (
            max(0, self.topic_end - self.ingested) if self.topic_end is not None and self.ingested is not None else None
        )
        debezium = (
            max(0.0, (self.topic_ms - self.topic_commit_ms) / 1000)
            if self.topic_ms is not None and self.topic_commit_ms is not None
            else None
        )
        waiting_marts = (topic_backlog or 0) + self.unloaded_events + self.untransformed_events
        return {
            "source_to_topic": {"events": None, "seconds": debezium},
            "topic_to_raw": {"events": topic_backlog, "seconds": behind(self.topic_commit_ms, topic_backlog or 0)},
            "raw_to_bronze": {
                "events": self.unloaded_events,
                "seconds": behind(self.topic_commit_ms, self.unloaded_events),
            },
            "bronze_to_marts": {
                "events": self.untransformed_events,
                "seconds": behind(self.bronze_commit_ms, self.untransformed_events),
            },
            "source_to_marts": {"events": waiting_marts, "seconds": behind(self.marts_commit_ms, waiting_marts)},
        }


@dataclass
class StageState:
    runs: int = 0
    busy: bool = False
    last_ok_at: float | None = None
    last_seconds: float | None = None
    error: str | None = None
    error_at: float | None = None
    partial_error: str | None = None  # a round that did its work but not all (some tables' models failed)
    result: dict[str, Any] = field(default_factory=dict)


class ContinuousRunner:
    """The long-lived runner. `run(stop)` blocks until `stop` is set, then stops cleanly."""

    def __init__(self, settings: Settings, tables: list[str] | None = None, log: Log = print):
        self.settings = settings
        self.config = settings.file.runner
        self.tables: list[TableConfig] = [settings.table(t) for t in tables] if tables else list(settings.tables)
        secrets = settings.secret_values()
        self.log: Log = lambda line: log(redact(line, secrets))
        self.run_id = uuid.uuid4().hex[:12]
        self.started_at = time.time()
        self.stop = threading.Event()
        self.lock = threading.Lock()  # guards the fields below
        self.progress = {t.name: TableProgress() for t in self.tables}
        self.stage_states = {name: StageState() for name in ("ingest", "load", "transform", "validate", "bi")}
        self.latencies: deque[float] = deque(maxlen=LATENCIES_KEPT)
        self.to_load: dict[str, deque[WrittenObject]] = {t.name: deque() for t in self.tables}
        self.loaded: list[_Pending] = []
        self.changed_tables: set[str] = set()
        self.bronze_changed = threading.Event()
        self.objects_written = threading.Event()
        self.transformed_since_validation = False
        self.bi_due: float | None = None
        self.state = "starting"
        self.paused_for: dict[str, Any] | None = None
        self.running = threading.Event()  # cleared while paused: stages start no new work
        self.yield_now = threading.Event()  # set on a pause or the stop: long work stops at a safe point
        self.idle = threading.Condition()
        self.busy = 0
        self.refresh_lock = RefreshLock(settings)
        self.store = RawStore(settings)
        self._appenders: dict[str, BronzeAppender] = {}
        self._next_scan = 0.0  # load lists the raw zone at start, after an error, and every minute
        self._rows_since_analyze: dict[str, int] = {}
        self._dbt: DbtProject | None = None
        self._next_full_pass = 0.0  # the transform's next full pass (the first run is one)
        self._failing_until: dict[str, float] = {}  # tables whose models failed -> when to retry them
        self._beat_conn: connection | None = None
        self._watermarks: Consumer | None = None
        self._ingested: dict[tuple[str, int], int] = {}  # (topic, partition) -> the offset read up to

    # -- the whole runner ----------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> None:
        if stop is not None:
            self.stop = stop
        threading.Thread(target=self._forward_stop, daemon=True).start()
        self._acquire_lock()
        self._prepare()
        self.running.set()
        self.state = "running"
        self.log(f"run: continuous runner {self.run_id} started (pid {os.getpid()}) for {self._names()}")
        threads = [
            threading.Thread(target=self._loop, args=(name, body), name=f"runner-{name}", daemon=True)
            for name, body in (
                ("ingest", self._ingest_once),
                ("load", self._load_once),
                ("transform", self._transform_once),
                ("validate", self._validate_once),
                ("bi", self._bi_once),
            )
        ]
        for thread in threads:
            thread.start()
        try:
            self._control()
        finally:
            self.stop.set()
            self.running.set()  # a paused stage wakes to see the stop
            self.bronze_changed.set()
            self.objects_written.set()
            for thread in threads:
                thread.join(timeout=120)
            self.state = "stopped"
            self._beat()
            self.refresh_lock.release()
            self.log(f"run: continuous runner {self.run_id} stopped")

    def _prepare(self) -> None:
        """The meta and bronze tables, once, before the stages start: two stages creating them
        at once would race in PostgreSQL's catalog."""
        while not self.stop.is_set():
            try:
                Checkpoints(self.settings).close()
                for table in self.tables:
                    self._appenders[table.name] = BronzeAppender(self.settings, table, lambda line: None, self.store)
                return
            except Exception as exc:  # PostgreSQL not up yet: the runner waits for it
                self.log(f"run: cannot prepare the meta and bronze tables yet: {str(exc).strip()[:200]}")
                self.stop.wait(5.0)

    def _forward_stop(self) -> None:
        self.stop.wait()
        self.yield_now.set()

    def _names(self) -> str:
        return ", ".join(t.name for t in self.tables)

    def _acquire_lock(self) -> None:
        holder = {
            "run_id": self.run_id,
            "mode": "continuous runner",
            "runner": True,
            "pid": os.getpid(),
            "started_at": datetime.now(timezone.utc).isoformat(),
        }
        waited_since = time.monotonic()
        while True:
            try:
                self.refresh_lock.acquire(holder)
                return
            except RefreshLocked as exc:
                if self.stop.is_set():
                    raise
                if time.monotonic() - waited_since < 1.0:
                    self.log(f"run: waiting for the refresh lock: {exc}")
                self.state = "waiting"
                self._beat()
                self.stop.wait(2.0)

    def _control(self) -> None:
        """The heartbeat, the topic backlog and the pause protocol, until stop."""
        next_beat = 0.0
        next_summary = time.monotonic() + SUMMARY_EVERY_SECONDS
        while not self.stop.is_set():
            now = time.monotonic()
            requester = _pause_requester(self.settings)
            if requester is not None and self.paused_for is None:
                self._pause(requester)
            elif requester is None and self.paused_for is not None:
                self._resume()
            if now >= next_beat:
                self._measure_topics()
                self._beat()
                next_beat = now + self.config.heartbeat_every_seconds
            if now >= next_summary:
                self.log(summary_line(self.snapshot()))
                next_summary = now + SUMMARY_EVERY_SECONDS
            self.stop.wait(0.2)

    def _pause(self, requester: dict[str, Any]) -> None:
        who = f"run {requester.get('run_id', '?')} (pid {requester.get('pid', '?')})"
        self.log(f"run: pausing for the manual refresh {who}: stopping the work in hand at a safe point")
        with self.idle:
            self.running.clear()
            self.yield_now.set()
            idle = self.idle.wait_for(lambda: self.busy == 0, timeout=self.config.pause_wait_seconds)
        if not idle:
            self.log(f"run: could not pause within {self.config.pause_wait_seconds:.0f}s; running on")
            self.yield_now.clear()
            self.running.set()
            return
        self.paused_for = requester
        self.state = "paused"
        self.refresh_lock.release()
        self._beat()
        self.log(f"run: paused; the refresh lock is {who}'s until it ends")

    def _resume(self) -> None:
        self.paused_for = None
        self._acquire_lock()
        self.state = "running"
        self.yield_now.clear()
        self.running.set()
        with self.lock:  # the manual refresh may have loaded rows and rebuilt the models
            self.changed_tables |= {t.name for t in self.tables}
        self.bronze_changed.set()
        self.log("run: resumed after the manual refresh")

    @contextmanager
    def _working(self) -> Iterator[bool]:
        """Counted as busy for the pause; yields False when a pause began meanwhile."""
        with self.idle:
            if not self.running.is_set():
                yield False
                return
            self.busy += 1
        try:
            yield True
        finally:
            with self.idle:
                self.busy -= 1
                self.idle.notify_all()

    def _loop(self, name: str, body: Callable[[], bool]) -> None:
        """One stage: its body until stop; a failure is logged, kept for the heartbeat, and
        retried after a back-off, never the end of the runner."""
        state = self.stage_states[name]
        backoff = 0.5
        while not self.stop.is_set():
            self.running.wait()
            if self.stop.is_set():
                break
            started = time.monotonic()
            try:
                with self._working() as may_work:
                    if not may_work:
                        continue
                    state.busy = True
                    did_work = body()
                state.busy = False
                if did_work:
                    state.runs += 1
                    state.last_ok_at, state.last_seconds = time.time(), time.monotonic() - started
                    if state.error is not None and state.partial_error is None:
                        self.log(f"run: {name} works again")
                    state.error = state.partial_error
                backoff = 0.5
            except StepCancelled:
                state.busy = False  # a pause or the stop: the work is taken up again from its position
            except Exception as exc:  # every failure is retried: a restarted service comes back
                state.busy = False
                message = str(exc).strip() or type(exc).__name__
                if message != state.error:
                    self.log(f"run: {name} failed: {message}; retrying")
                state.error, state.error_at = message, time.time()
                self.stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    # -- stages ----------------------------------------------------------------

    def _ingest_once(self) -> bool:
        wrote = False

        def on_object(written: WrittenObject) -> None:
            nonlocal wrote
            wrote = True
            progress = self.progress[table.name]
            with self.lock:
                self.to_load[table.name].append(written)
                progress.unloaded_events += written.events
                if written.newest_commit_ms is not None:
                    progress.topic_commit_ms = written.newest_commit_ms
                progress.topic_ms, progress.raw_at = written.newest_topic_ms, written.written_at
            self.objects_written.set()

        for table in self.tables:
            if self.stop.is_set() or not self.running.is_set():
                break
            ends = self._topic_ends(table.topic)
            if ends is not None and all(
                self._ingested.get((table.topic, partition), -1) >= high for partition, high in ends.items()
            ):
                continue  # nothing new: a pass would only cost a consumer and an S3 listing
            result = ingest(
                self.settings,
                table,
                full=False,
                log=lambda line: None,
                cancel=self.yield_now,
                batch_size=self.config.object_max_events,
                store=self.store,
                max_age_seconds=self.config.object_max_age_seconds,
                on_object=on_object,
            )
            for partition, high in (ends or {}).items():
                read_to = result.partitions.get(partition, (high, high))[1]
                self._ingested[(table.topic, partition)] = max(read_to, high)
        if not wrote:
            self.stop.wait(0.1)  # nothing new: the broker is asked again shortly
        return wrote

    def _topic_ends(self, topic: str) -> dict[int, int] | None:
        """Each partition's high watermark as the broker reports it (on tansu, the last batch's
        first offset + 1): above the position read, there is something new. None: ask ingest."""
        try:
            if self._watermarks is None:
                self._watermarks = Consumer(
                    client_config(self.settings, **{"group.id": "bi-console-offsets", "enable.auto.commit": False})
                )
            metadata = self._watermarks.list_topics(topic, timeout=2.0)
            info = metadata.topics.get(topic)
            if info is None or info.error is not None or not info.partitions:
                return None
            return {
                partition: self._watermarks.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=2.0, cached=False
                )[1]
                for partition in info.partitions
            }
        except Exception:
            self._watermarks = None  # the broker restarted: a new client next time
            return None

    def _load_once(self) -> bool:
        loaded_any = False
        try:
            scan = time.monotonic() >= self._next_scan
            for table in self.tables:
                if self.stop.is_set() or not self.running.is_set():
                    break
                appender = self._appenders.get(table.name)
                if appender is None:
                    appender = self._appenders[table.name] = BronzeAppender(
                        self.settings, table, lambda line: None, self.store
                    )
                with self.lock:
                    queued = list(self.to_load[table.name])
                objects = [{"Key": o.key, "ETag": o.etag} for o in queued]
                if scan:  # a resume: objects written before a restart, or by a manual ingest
                    known = {o.key for o in queued}
                    objects = [o for o in appender.not_loaded() if o["Key"] not in known] + objects
                if not objects:
                    continue
                result = appender.append(objects, cancel=self.yield_now)
                with self.lock:
                    for _ in queued:
                        self.to_load[table.name].popleft()
                    progress = self.progress[table.name]
                    events = sum(o.events for o in queued)
                    progress.unloaded_events = max(0, progress.unloaded_events - events)
                    commit = max((o.newest_commit_ms for o in queued if o.newest_commit_ms is not None), default=None)
                    if result.inserted or queued:
                        self.loaded.append(_Pending(table.name, result.inserted, commit))
                        progress.untransformed_events += result.inserted
                        if commit is not None:
                            progress.bronze_commit_ms = commit
                    if result.inserted:
                        self.changed_tables.add(table.name)
                if result.inserted:
                    loaded_any = True
                    rows = self._rows_since_analyze.get(table.name, 0) + result.inserted
                    if rows >= ANALYZE_EVERY_ROWS:
                        appender.analyze()
                        rows = 0
                    self._rows_since_analyze[table.name] = rows
            if scan:
                self._next_scan = time.monotonic() + RESCAN_EVERY_SECONDS
        except Exception:
            for appender in self._appenders.values():  # a lost connection: new ones next time
                try:
                    appender.close()
                except Exception:
                    pass
            self._appenders.clear()
            self._next_scan = 0.0
            raise
        if loaded_any:
            self.bronze_changed.set()
        else:
            self.objects_written.wait(0.5)
            self.objects_written.clear()
        return loaded_any

    def _transform_once(self) -> bool:
        if not self.bronze_changed.wait(0.5):
            return False
        self.bronze_changed.clear()
        with self.lock:
            batch, self.loaded = self.loaded, []
            tables, self.changed_tables = set(self.changed_tables), set()
        now = time.monotonic()
        resting = {name for name, at in self._failing_until.items() if at > now}
        if tables & resting:  # their models failed: retried after a rest, the others go on
            with self.lock:
                self.changed_tables |= tables & resting
                held = [p for p in batch if p.table in resting]
                self.loaded = held + self.loaded
            batch = [p for p in batch if p.table not in resting]
            tables -= resting
        if not tables:
            self._marts_reached(batch)
            return False
        try:
            if self._dbt is None:
                dbt = DbtProject(self.settings, lambda line: None)
                dbt.warm()
                self._dbt = dbt
            selector = " ".join(t.dbt_selector for t in self.tables if t.name in tables)
            # A full pass (every key compared, whole-table prunes) first and then every
            # validate_every_seconds; the hot path in between.
            full_pass = time.monotonic() >= self._next_full_pass
            if full_pass:
                selector = " ".join(t.dbt_selector for t in self.tables if t.name not in resting)
            result = self._dbt.run(selector, hot_path=not full_pass)
            state = self.stage_states["transform"]
            state.partial_error = None
            if not result.success:
                failed = ", ".join(f"{n.name}: {(n.message or '').strip()[:300]}" for n in result.failed)
                broken = tables_of_failed_models([t for t in self.tables if t.name in tables], result)
                if broken is None or broken >= tables:
                    raise RuntimeError(f"dbt run failed: {failed or result.error}")
                # Some tables' models failed: the others' changes reached the marts.
                state.partial_error = f"the models of {', '.join(sorted(broken))} failed: {failed}"
                self.log(f"run: transform: {state.partial_error}; retried in {FAILED_TABLE_REST_SECONDS:.0f}s")
                for name in broken:
                    self._failing_until[name] = time.monotonic() + FAILED_TABLE_REST_SECONDS
                with self.lock:
                    self.loaded = [p for p in batch if p.table in broken] + self.loaded
                    self.changed_tables |= broken
                batch = [p for p in batch if p.table not in broken]
            else:
                self._failing_until.clear()
            if full_pass:
                self._next_full_pass = time.monotonic() + self.config.validate_every_seconds
        except Exception:
            with self.lock:  # tried again on the next round, with whatever arrived meanwhile
                self.loaded = batch + self.loaded
                self.changed_tables |= tables
            self.bronze_changed.set()
            raise
        self._marts_reached(batch)
        self.stage_states["transform"].result = {
            "models": result.counts,
            "seconds": round(result.elapsed, 3),
            "full_pass": full_pass,
        }
        with self.lock:
            self.transformed_since_validation = True
            self.bi_due = self.bi_due or (time.monotonic() + self.config.bi_debounce_seconds)
        return True

    def _marts_reached(self, batch: list[_Pending]) -> None:
        now = time.time()
        with self.lock:
            for pending in batch:
                progress = self.progress[pending.table]
                progress.untransformed_events = max(0, progress.untransformed_events - pending.events)
                if pending.commit_ms is not None:
                    self.latencies.append(max(0.0, now - pending.commit_ms / 1000))
                    progress.marts_commit_ms = max(progress.marts_commit_ms or 0, pending.commit_ms)
                progress.marts_at = now

    def _validate_once(self) -> bool:
        state = self.stage_states["validate"]
        due = (state.last_ok_at or self.started_at) + self.config.validate_every_seconds
        if time.time() < due or not self.transformed_since_validation:
            self.stop.wait(1.0)
            return False
        with self.lock:
            self.transformed_since_validation = False
        outcome: dict[str, Any] = {"at": time.time(), "failed": []}
        # In a child process, as the TUI runs a refresh: dbt cannot run twice in one process,
        # and the transform keeps its warm dbt to itself.
        run = run_refresh_in_child(
            self.settings,
            steps=["test", "validate"],
            tables=[t.name for t in self.tables],
            cancel=self.stop,
            under_lock_of=self.run_id,
        )
        for step in run.steps:
            if step.state not in ("ok", "skipped"):
                outcome["failed"].append({"step": f"{step.table}:{step.step}", "error": (step.error or "")[:1000]})
        outcome["run_id"] = run.run_id
        outcome["ok"] = not outcome["failed"]
        state.result = outcome
        if outcome["failed"]:
            self.log(f"run: quality checks failed: {'; '.join(f['step'] for f in outcome['failed'])}")
        return True

    def _bi_once(self) -> bool:
        with self.lock:
            due = self.bi_due
        if due is None or time.monotonic() < due:
            self.stop.wait(0.5)
            return False
        with self.lock:
            self.bi_due = None
        if not superset_enabled(self.settings):
            self.stage_states["bi"].result = {"skipped": "Superset is not enabled in this stack"}
            return False
        self.stage_states["bi"].result = run_bi_refresh(self.settings, lambda line: None)
        return True

    # -- what the heartbeat says ---------------------------------------------------

    def _measure_topics(self) -> None:
        """The topics' end offsets and the recorded positions: the events ingest has yet to read."""
        try:
            checkpoints = Checkpoints(self.settings)
        except Exception:
            return
        try:
            for table in self.tables:
                offsets = topic_offsets(self.settings, table.topic, timeout=2.0)
                if offsets is None:
                    continue
                ingested = 0
                for part in offsets:
                    saved = checkpoints.get(table.topic, part.partition)
                    ingested += max(saved.next_offset, part.low) if saved else part.low
                with self.lock:
                    progress = self.progress[table.name]
                    progress.topic_end, progress.ingested = sum(p.high for p in offsets), ingested
        except Exception:
            pass  # the broker is away: the ingest stage's error says so
        finally:
            checkpoints.close()

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        with self.lock:
            latencies = list(self.latencies)
            tables = {name: progress.stages(now) for name, progress in self.progress.items()}
        worst = max((stages["source_to_marts"]["seconds"] or 0.0 for stages in tables.values()), default=0.0)
        return {
            "run_id": self.run_id,
            "tables": tables,
            "freshness_seconds": round(worst, 3),
            "objective_seconds": self.config.freshness_objective_seconds,
            "latency": {
                "changes": len(latencies),
                "p50": percentile(latencies, 0.5),
                "p95": percentile(latencies, 0.95),
                "max": max(latencies, default=None),
            },
            "stages": {
                name: {
                    "runs": s.runs,
                    "busy": s.busy,
                    "last_ok_at": s.last_ok_at,
                    "last_seconds": s.last_seconds,
                    "error": s.error,
                    "error_at": s.error_at,
                    "result": s.result,
                }
                for name, s in self.stage_states.items()
            },
            "paused_for": self.paused_for,
        }

    def _beat(self) -> None:
        try:
            if self._beat_conn is None or self._beat_conn.closed:
                self._beat_conn = connect(self.settings)
                ensure_heartbeat_table(self._beat_conn, self.settings)
            write_heartbeat(self._beat_conn, self.settings, self.started_at, self.state, self.snapshot())
        except Exception as exc:
            if self._beat_conn is not None:
                try:
                    self._beat_conn.close()
                except Exception:
                    pass
                self._beat_conn = None
            self.log(f"run: heartbeat not written: {str(exc).strip()[:200]}")


def start_in_background(settings: Settings) -> int:
    """Start `bi-console run` as a process of its own (it outlives the TUI that started it);
    its log goes to <data_dir>/logs/runner.log. Returns its pid."""
    log_dir = Path(settings.data_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "runner.log", "ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **settings.to_env()},
            start_new_session=True,
        )
    return child.pid


def stop_running(beat: Heartbeat | None) -> str:
    """Ask the runner of this heartbeat to stop (SIGTERM: it finishes the work in hand).
    Returns what was done, for the operator; raises RuntimeError when it cannot be done here."""
    if beat is None or beat.state == "stopped":
        raise RuntimeError("no continuous runner is running")
    if beat.host != socket.gethostname():
        raise RuntimeError(f"the continuous runner runs on {beat.host} (pid {beat.pid}): stop it there")
    try:
        os.kill(beat.pid, signal.SIGTERM)
    except ProcessLookupError:
        raise RuntimeError(f"the continuous runner (pid {beat.pid}) is gone; its heartbeat is stale") from None
    return f"asked the continuous runner (pid {beat.pid}) to stop; it finishes the work in hand first"
