"""The refresh: ingest -> load -> transform -> test -> validate (-> bi), for every
configured table, under a lock so that two runs never overlap.

Progress is reported as events (StepStarted, StepLog, StepFinished, RunFinished) to a
callback: the CLI prints them, the TUI posts them as messages. What the operator must hear
even without verbose output (a topic reset) is a notice: a log line, and a line of
StepFinished.notices. Each run is appended to a history file that survives restarts.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2
from confluent_kafka import KafkaException

from pipeline.config import ConfigError, Settings, TableConfig
from pipeline.config.security import redact
from pipeline.orchestration.plan import (
    DEFAULT_STEPS,
    PlanEntry,
    StepContext,
    StepNames,
    StepResult,
    TablesFailed,
    plan,
    superset_enabled,
    wanted_steps,
)
from pipeline.process.background_import import import_in_background
from pipeline.process.memory import release_freed_memory
from pipeline.steps import StepSkipped
from pipeline.steps.ingest import StepCancelled
from pipeline.steps.validate import import_gx_in_background
from pipeline.stores.db import ServiceUnreachable

__all__ = ["DEFAULT_STEPS", "StepNames", "superset_enabled"]  # re-exported for the CLI and the TUI


@dataclass
class StepStarted:
    run_id: str
    table: str
    step: str


@dataclass
class StepLog:
    run_id: str
    table: str
    step: str
    line: str


@dataclass
class StepFinished:
    run_id: str
    table: str
    step: str
    state: str  # ok | failed | cancelled | skipped (not run, or its service switched off: see notices)
    duration: float
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    notices: list[str] = field(default_factory=list)  # to be shown whatever the verbosity


@dataclass
class RefreshRun:
    run_id: str
    mode: str
    started_at: str
    steps: list[StepFinished] = field(default_factory=list)
    outcome: str = "running"  # ok | failed | cancelled
    failed_step: str | None = None
    error: str | None = None
    unreachable: bool = False
    duration: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    # What the operator asked for, None for "all": a run of one step is that step, not an incremental refresh.
    selected_steps: list[str] | None = None
    selected_tables: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunFinished:
    run: RefreshRun


# What a refresh reports as it goes, in this order: per step Started, Logs, Finished; then RunFinished.
RefreshEvent = StepStarted | StepLog | StepFinished | RunFinished


class RefreshLocked(Exception):
    """Another refresh holds the lock; the message names it."""


class RefreshLock:
    """An advisory file lock, released by the kernel if its holder dies (no stale locks)."""

    def __init__(self, settings: Settings):
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(settings.data_dir) / "refresh.lock"
        self.fd: int | None = None

    def acquire(self, holder: dict[str, Any]) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                other = json.loads(self.path.read_text() or "{}")
            except ValueError:
                other = {}
            raise RefreshLocked(
                f"another refresh is running: run {other.get('run_id', '?')} ({other.get('mode', '?')}, "
                f"pid {other.get('pid', '?')}, started {other.get('started_at', '?')}); "
                "it was not disturbed, try again when it ends"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def pause_request_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "refresh.pause"


def request_pause(settings: Settings, requester: dict[str, Any]) -> None:
    """Ask the continuous runner holding the lock to let go of it; it resumes once the
    request is withdrawn (or its requester's process is gone)."""
    path = pause_request_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(requester))


def withdraw_pause(settings: Settings) -> None:
    pause_request_path(settings).unlink(missing_ok=True)


def lock_holder(settings: Settings) -> dict[str, Any]:
    """What the lock file says of its holder ({} when nothing does)."""
    try:
        return dict(json.loads((Path(settings.data_dir) / "refresh.lock").read_text() or "{}"))
    except (OSError, ValueError):
        return {}


def _acquire_pausing_runner(
    settings: Settings, lock: RefreshLock, holder: dict[str, Any], on_wait: Callable[[str], None]
) -> bool:
    """Take the lock; when the continuous runner holds it, ask it to pause and wait for it.
    True when the runner was paused (the caller withdraws the request when it ends)."""
    try:
        lock.acquire(holder)
        return False
    except RefreshLocked:
        other = lock_holder(settings)
        if not other.get("runner"):
            raise
    wait = settings.file.runner.pause_wait_seconds
    on_wait(
        f"the continuous runner (run {other.get('run_id', '?')}, pid {other.get('pid', '?')}) holds the refresh "
        f"lock: asking it to pause for this refresh (waiting up to {wait:.0f}s); it resumes when this refresh ends"
    )
    request_pause(settings, holder)
    deadline = time.monotonic() + wait
    while True:
        try:
            lock.acquire(holder)
            on_wait("the continuous runner paused; this refresh runs now")
            return True
        except RefreshLocked:
            if time.monotonic() >= deadline:
                withdraw_pause(settings)
                raise RefreshLocked(
                    f"the continuous runner (pid {other.get('pid', '?')}) did not pause within {wait:.0f}s "
                    "([runner] pause_wait_seconds); nothing was changed, try again or stop it (`bi-console run` "
                    "ends on Ctrl-C or SIGTERM)"
                ) from None
            time.sleep(0.25)


# Run logs kept beside the history; the history's records outlive their logs.
RUN_LOGS_KEPT = 50


def history_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "refresh-history.jsonl"


def run_logs_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "runs"


def run_log_path(settings: Settings, run_id: str) -> Path:
    return run_logs_dir(settings) / f"{run_id}.log"


def run_label(run: dict[str, Any]) -> str:
    """What a run was, as the history shows it: "full", "incremental", or the steps (and
    tables) of a partial run, e.g. "step transform" or "steps ingest, load of orders"."""
    steps, tables = run.get("selected_steps"), run.get("selected_tables")
    if not steps:
        label = str(run.get("mode") or "?")
        return f"{label} of {', '.join(tables)}" if tables else label
    label = f"{'step' if len(steps) == 1 else 'steps'} {', '.join(steps)}"
    return f"{label} of {', '.join(tables)}" if tables else label


def read_run(settings: Settings, run_id: str) -> tuple[dict[str, Any] | None, list[str] | None]:
    """A past run's history record and its log lines; None for a record not in the history,
    None for a log pruned (or a run from before run logs were kept)."""
    record = next((run for run in read_history(settings, limit=10**9) if run.get("run_id") == run_id), None)
    try:
        lines = run_log_path(settings, run_id).read_text(errors="replace").splitlines()
    except OSError:
        lines = None
    return record, lines


class _RunLog:
    """The run's log, as the TUI's step log shows it: each line tagged with its table and step,
    and each step's start and result. Writing never fails the run."""

    def __init__(self, settings: Settings, run_id: str):
        self.settings = settings
        self.fh = None
        try:
            run_logs_dir(settings).mkdir(parents=True, exist_ok=True)
            self.fh = open(run_log_path(settings, run_id), "a", buffering=1)
        except OSError:
            pass

    def event(self, event: RefreshEvent) -> None:
        if self.fh is None:
            return
        if isinstance(event, StepLog):
            line = event.line
        elif isinstance(event, StepStarted):
            line = "started"
        elif isinstance(event, StepFinished):
            counts = " ".join(f"{k}={v}" for k, v in event.counts.items() if not isinstance(v, (dict, list)))
            line = (
                f"{event.state} in {event.duration:.1f}s"
                + (f": {event.error}" if event.error else "")
                + (f" · {counts}" if counts else "")
            )
        else:
            return
        try:
            self.fh.write(f"[{event.table}:{event.step}] {line}\n")
        except OSError:
            pass

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
        prune_run_logs(self.settings)


def prune_run_logs(settings: Settings, keep: int | None = None) -> None:
    keep = RUN_LOGS_KEPT if keep is None else keep
    try:
        logs = sorted(run_logs_dir(settings).glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in logs[keep:]:
        old.unlink(missing_ok=True)


def read_history(settings: Settings, limit: int = 20) -> list[dict[str, Any]]:
    path = history_path(settings)
    if not path.exists():
        return []
    runs = []
    for line in path.read_text().splitlines():
        try:
            runs.append(json.loads(line))
        except ValueError:
            continue
    return runs[-limit:][::-1]


def run_refresh(
    settings: Settings,
    *,
    mode: str = "incremental",
    steps: list[str] | None = None,
    tables: list[str] | None = None,
    on_event: Callable[[RefreshEvent], None] = lambda e: None,
    cancel: threading.Event | None = None,
    on_wait: Callable[[str], None] = lambda line: None,
    under_lock_of: str | None = None,
) -> RefreshRun:
    """Run the planned steps under the refresh lock. A continuous runner holding the lock is
    asked to pause (on_wait hears of it) and resumes afterwards. under_lock_of: the run id of
    the continuous runner this run works for (its quality checks): the runner holds the lock."""
    if mode not in ("full", "incremental"):
        raise ConfigError(f"refresh mode must be full or incremental, not {mode!r}")
    selected = [settings.table(name) for name in tables] if tables else list(settings.tables)
    wanted = wanted_steps(settings, steps)
    entries = plan(settings, wanted, [t.name for t in selected])
    run = RefreshRun(
        run_id=uuid.uuid4().hex[:12],
        mode=mode,
        started_at=datetime.now(timezone.utc).isoformat(),
        selected_steps=list(steps) if steps else None,
        selected_tables=[t.name for t in selected] if tables else None,
    )
    lock = RefreshLock(settings)
    holder = {"run_id": run.run_id, "mode": run_label(run.as_dict()), "pid": os.getpid(), "started_at": run.started_at}
    paused_runner = False
    if under_lock_of is None:
        paused_runner = _acquire_pausing_runner(settings, lock, holder, on_wait)
    else:
        run.details["continuous_runner"] = under_lock_of
    if paused_runner:
        run.details["paused_runner"] = True
    secrets = settings.secret_values()
    started = time.monotonic()
    run_log = _RunLog(settings, run.run_id)

    def record_and_report(event: RefreshEvent) -> None:
        run_log.event(event)
        on_event(event)

    try:
        runner = _Runner(settings, run, selected, mode, record_and_report, cancel, lambda line: redact(line, secrets))
        previous_step = None
        for entry in entries:
            if run.outcome != "running":
                break
            if entry.step.name != previous_step:
                _import_next_library(entry.step.name, wanted)
                previous_step = entry.step.name
            runner.run_entry(entry)
        if run.outcome == "running" and runner.partial_failure is not None:
            run.outcome = "failed"  # some tables' models failed; the others' steps ran
            run.failed_step, run.error = runner.partial_failure
        elif run.outcome == "running":
            run.outcome = "ok"
    finally:
        run.duration = time.monotonic() - started
        lock.release()
        if paused_runner:
            withdraw_pause(settings)
        try:
            with open(history_path(settings), "a") as fh:
                fh.write(json.dumps(run.as_dict(), default=str) + "\n")
        except OSError:
            pass
        run_log.close()
        record_and_report(RunFinished(run))
    return run


def _import_next_library(step: str, wanted: list[str]) -> None:
    """Load dbt while load runs and GX while dbt test runs: both steps mostly wait on
    PostgreSQL. One library at a time, each after the previous step imported its own
    modules, so that two imports never race over the same module."""
    if step == "load" and "transform" in wanted:
        import_in_background("dbt.cli.main", after=("pipeline.steps.load",))
    elif step == "test" and {"transform", "validate"} <= set(wanted):
        import_gx_in_background()


class _Runner:
    def __init__(
        self,
        settings: Settings,
        run: RefreshRun,
        tables: list[TableConfig],
        mode: str,
        on_event: Callable[[RefreshEvent], None],
        cancel: threading.Event | None,
        redact: Callable[[str], str],
    ):
        self.settings = settings
        self.run = run
        self.tables: list[TableConfig] = tables
        self.mode = mode
        self.on_event = on_event
        self.cancel = cancel or threading.Event()
        self.redact = redact
        self.full_tables: set[str] = {t.name for t in tables} if mode == "full" else set()
        self.notice: Callable[[str], None] = lambda line: None  # the running step's, set by _execute
        self.failed_tables: set[str] = set()  # tables whose models failed: their later steps are skipped
        self.partial_failure: tuple[str, str] | None = None  # (step, error) of such a failure

    def run_entry(self, entry: PlanEntry) -> None:
        table = self.settings.table(entry.table) if entry.step.per_table else None
        if table is not None and table.name in self.failed_tables:
            reason = f"skipped: the models of {table.name} failed in transform"

            def skipped(log: Callable[[str], None]) -> StepResult:
                raise StepSkipped(reason)

            self._execute(entry.step.name, entry.table, skipped)
            return
        tables = [t for t in self.tables if t.name not in self.failed_tables]

        def body(log: Callable[[str], None]) -> StepResult:
            context = StepContext(
                self.settings,
                tables,
                table,
                self.full_tables,
                log,
                notice=self.notice,
                cancel=self.cancel,
                details=self.run.details,
            )
            return entry.step.run(context)

        self._execute(entry.step.name, entry.table, body)

    def _execute(self, step: str, table: str, body: Callable[[Callable[[str], None]], StepResult]) -> None:
        run_id = self.run.run_id
        self.on_event(StepStarted(run_id, table, step))

        def log(line: str) -> None:
            self.on_event(StepLog(run_id, table, step, self.redact(line)))

        notices: list[str] = []

        def notice(line: str) -> None:
            notices.append(self.redact(line))
            log(f"{step}: {line}")

        started = time.monotonic()
        state, error = "ok", None
        partial = False
        counts: StepResult = {}
        self.notice = notice
        try:
            if self.cancel.is_set():
                raise StepCancelled(f"{step} cancelled before it started")
            counts = body(log) or {}
        except StepCancelled as exc:
            state, error = "cancelled", str(exc)
        except TablesFailed as exc:  # the other tables' steps go on; the run fails at its end
            state, error = "failed", self.redact(str(exc))
            self.failed_tables |= exc.tables
            self.partial_failure = (f"{table}:{step}", error)
            partial = True
        except StepSkipped as exc:  # before ServiceUnreachable: an optional service switched off
            state = "skipped"
            notice(f"skipped: {self.redact(exc.notice)}")
        except (ServiceUnreachable, KafkaException) as exc:
            state, error = "failed", self.redact(str(exc))
            self.run.unreachable = True
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            lost = postgres_lost(self.settings, step, exc)
            state, error = "failed", self.redact(lost or str(exc).strip() or type(exc).__name__)
            if lost:
                self.run.unreachable = True
        except Exception as exc:  # every failure ends the run with its message, never a traceback
            state, error = "failed", self.redact(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))
        release_freed_memory()
        finished = StepFinished(run_id, table, step, state, time.monotonic() - started, counts, error, notices)
        self.run.steps.append(finished)
        self.on_event(finished)
        if state not in ("ok", "skipped") and not partial:
            self.run.outcome = "cancelled" if state == "cancelled" else "failed"
            self.run.failed_step = f"{table}:{step}"
            self.run.error = error


def postgres_lost(settings: Settings, step: str, exc: Exception) -> str | None:
    """The message for a PostgreSQL that went away mid-step (killed, stopped, restarted),
    naming it as a failed connect does; None for an error of the server that is still up
    (a statement timeout, a deadlock, a full disk carry an SQLSTATE of their own)."""
    code = getattr(exc, "pgcode", None)
    if not isinstance(exc, psycopg2.InterfaceError) and code is not None and not code.startswith("57P"):
        return None  # 57P01-57P03: the server is shutting down or cannot accept connections
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (
        f"postgres (PostgreSQL at {settings.pg_host}:{settings.pg_port}) was lost during {step}: "
        f"{first}; start it and rerun"
    )
