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

import psycopg2
from confluent_kafka import KafkaException

from pipeline.config import ConfigError, Settings, TableConfig
from pipeline.stores.db import ServiceUnreachable, connect
from pipeline.process.memory import release_freed_memory
from pipeline.steps.ingest import StepCancelled

StepNames = ("ingest", "load", "transform", "test", "validate", "bi")
DEFAULT_STEPS = ("ingest", "load", "transform", "test", "validate")


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
    state: str  # ok | failed | cancelled | skipped
    duration: float
    counts: dict = field(default_factory=dict)
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
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunFinished:
    run: RefreshRun


class RefreshLocked(Exception):
    """Another refresh holds the lock; the message names it."""


class RefreshLock:
    """An advisory file lock, released by the kernel if its holder dies (no stale locks)."""

    def __init__(self, settings: Settings):
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(settings.data_dir) / "refresh.lock"
        self.fd: int | None = None

    def acquire(self, holder: dict) -> None:
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
                "it was not disturbed, try again when it ends") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def history_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "refresh-history.jsonl"


def read_history(settings: Settings, limit: int = 20) -> list[dict]:
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


def superset_enabled(settings: Settings) -> bool:
    return settings.runtime == "compose" or (Path(settings.data_dir) / "run" / "superset.enabled").exists()


def run_refresh(settings: Settings, *, mode: str = "incremental", steps: list[str] | None = None,
                tables: list[str] | None = None, on_event: Callable[[object], None] = lambda e: None,
                cancel: threading.Event | None = None) -> RefreshRun:
    from pipeline.config.security import redact

    if mode not in ("full", "incremental"):
        raise ConfigError(f"refresh mode must be full or incremental, not {mode!r}")
    selected = [settings.table(name) for name in tables] if tables else list(settings.tables)
    wanted = list(steps) if steps else [*DEFAULT_STEPS, *(["bi"] if superset_enabled(settings) else [])]
    run = RefreshRun(run_id=uuid.uuid4().hex[:12], mode=mode, started_at=datetime.now(timezone.utc).isoformat())
    lock = RefreshLock(settings)
    lock.acquire({"run_id": run.run_id, "mode": mode, "pid": os.getpid(), "started_at": run.started_at})
    secrets = settings.secret_values()
    started = time.monotonic()
    try:
        runner = _Runner(settings, run, selected, mode, on_event, cancel, lambda line: redact(line, secrets))
        for step in StepNames:
            if step in wanted and run.outcome == "running":
                _import_next_library(step, wanted)
                runner.run_step(step)
        if run.outcome == "running":
            run.outcome = "ok"
    finally:
        run.duration = time.monotonic() - started
        lock.release()
        try:
            with open(history_path(settings), "a") as fh:
                fh.write(json.dumps(run.as_dict(), default=str) + "\n")
        except OSError:
            pass
        on_event(RunFinished(run))
    return run


def _import_next_library(step: str, wanted: list[str]) -> None:
    """Load dbt while load runs and GX while dbt test runs: both steps mostly wait on
    PostgreSQL. One library at a time, each after the previous step imported its own
    modules, so that two imports never race over the same module."""
    from pipeline.process.background_import import import_in_background

    if step == "load" and "transform" in wanted:
        import_in_background("dbt.cli.main", after=("pipeline.steps.load",))
    elif step == "test" and {"transform", "validate"} <= set(wanted):
        from pipeline.steps.validate import import_gx_in_background

        import_gx_in_background()


class _Runner:
    def __init__(self, settings, run, tables, mode, on_event, cancel, redact):
        self.settings = settings
        self.run = run
        self.tables: list[TableConfig] = tables
        self.mode = mode
        self.on_event = on_event
        self.cancel = cancel or threading.Event()
        self.redact = redact
        self.full_tables: set[str] = {t.name for t in tables} if mode == "full" else set()
        self.notice: Callable[[str], None] = lambda line: None  # the running step's, set by _execute

    def run_step(self, step: str) -> None:
        if step in ("ingest", "load", "validate"):
            for table in self.tables:
                if self.run.outcome != "running":
                    return
                self._execute(step, table.name, lambda log, t=table: getattr(self, f"_{step}")(t, log))
        else:
            self._execute(step, "all", lambda log: getattr(self, f"_{step}")(log))

    def _execute(self, step: str, table: str, body: Callable) -> None:
        run_id = self.run.run_id
        self.on_event(StepStarted(run_id, table, step))

        def log(line: str) -> None:
            self.on_event(StepLog(run_id, table, step, self.redact(line)))

        notices: list[str] = []

        def notice(line: str) -> None:
            notices.append(self.redact(line))
            log(f"{step}: {line}")

        started = time.monotonic()
        state, counts, error = "ok", {}, None
        self.notice = notice
        try:
            if self.cancel.is_set():
                raise StepCancelled(f"{step} cancelled before it started")
            counts = body(log) or {}
        except StepCancelled as exc:
            state, error = "cancelled", str(exc)
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
        if state != "ok":
            self.run.outcome = "cancelled" if state == "cancelled" else "failed"
            self.run.failed_step = f"{table}:{step}"
            self.run.error = error

    # -- steps ----------------------------------------------------------------
    def _ingest(self, table: TableConfig, log) -> dict:
        from pipeline.steps.ingest import ingest

        notice = self.notice

        def on_reset(reset) -> None:
            # The run goes on in the new epoch: the earlier epochs stay in the raw zone and
            # bronze, so an incremental load and transform are enough.
            notice(reset.notice())
            self.run.details.setdefault("topic_resets", []).append(reset.as_detail())

        full = table.name in self.full_tables
        return ingest(self.settings, table, full=full, log=log, cancel=self.cancel, on_reset=on_reset).counts()

    def _load(self, table: TableConfig, log) -> dict:
        from pipeline.steps.load import load

        return load(self.settings, table, full=table.name in self.full_tables, log=log, cancel=self.cancel).counts()

    def _selector(self) -> str:
        return " ".join(t.dbt_selector for t in self.tables)

    def _database_answers(self) -> None:
        """dbt and GX report a refused password as their own error text (exit 1); one
        connection first makes it the one line naming BI_PG_PASSWORD (exit 3)."""
        connect(self.settings).close()

    def _transform(self, log) -> dict:
        from pipeline.steps.transform import DbtProject

        self._database_answers()
        full = bool(self.full_tables)
        result = DbtProject(self.settings, log).run(self._selector(), full_refresh=full)
        if not result.success:
            failed = ", ".join(f"{n.name}: {(n.message or '').strip()[:300]}" for n in result.failed)
            raise RuntimeError(f"dbt run failed: {failed or result.error}")
        return {**result.counts, "full_refresh": full}

    def _test(self, log) -> dict:
        from pipeline.steps.transform import DbtProject

        self._database_answers()
        result = DbtProject(self.settings, log).test(self._selector())
        if not result.success:
            failed = ", ".join(f"{n.name} ({n.failures} rows)" for n in result.failed)
            raise RuntimeError(f"dbt tests failed: {failed or result.error}")
        return result.counts

    def _validate(self, table: TableConfig, log) -> dict:
        if not table.suites:
            log(f"validate: no suites configured for {table.name}")
            return {"suites": 0}
        self._database_answers()
        from pipeline.steps.validate import run_validation

        result = run_validation(self.settings, table, log)
        self.run.details.setdefault("validation", {})[table.name] = result.as_dict()
        for suite in result.suites:
            for warning in suite.warnings:
                log(f"validate: WARNING {suite.name}: {warning.type} {warning.column or ''} observed {warning.observed_value}")
        if not result.success:
            failed = [f"{s.name}: {s.error or ', '.join(f'{e.type}({e.column or e.check}) observed {e.observed_value}' for e in s.failed)}"
                      for s in result.suites if not s.success]
            raise RuntimeError(f"Great Expectations suites failed: {'; '.join(failed)}")
        return result.counts

    def _bi(self, log) -> dict:
        from pipeline.steps.bi import run_bi_refresh

        return run_bi_refresh(self.settings, log)


def postgres_lost(settings: Settings, step: str, exc: Exception) -> str | None:
    """The message for a PostgreSQL that went away mid-step (killed, stopped, restarted),
    naming it as a failed connect does; None for an error of the server that is still up
    (a statement timeout, a deadlock, a full disk carry an SQLSTATE of their own)."""
    code = getattr(exc, "pgcode", None)
    if not isinstance(exc, psycopg2.InterfaceError) and code is not None and not code.startswith("57P"):
        return None  # 57P01-57P03: the server is shutting down or cannot accept connections
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return (f"postgres (PostgreSQL at {settings.pg_host}:{settings.pg_port}) was lost during {step}: "
            f"{first}; start it and rerun")
