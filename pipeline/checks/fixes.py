"""The Troubleshoot panels' fixes (and the CLI's repair commands): each takes a `log`
callable and raises on failure. A fix that writes bronze or runs dbt holds the refresh lock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pipeline.checks.probes import connector_control, superset_configured
from pipeline.checks.raw_zone import audit_raw_zone
from pipeline.config import Settings
from pipeline.orchestration.refresh import RefreshLock
from pipeline.process.log_sink import Log, no_log
from pipeline.runtime.model import Runtime
from pipeline.steps.bi import run_bi_refresh
from pipeline.steps.ingest import recover_missing_objects
from pipeline.steps.transform import DbtResult, run_in_child
from pipeline.stores.bronze import ensure_bronze
from pipeline.stores.db import connect


def fix_restart_connector(
    settings: Settings, runtime: Runtime | None = None, log: Log = no_log, *, only_failed: bool = False
) -> str:
    control = connector_control(settings, runtime)
    log(f"restarting connector {settings.connector_name}{' (failed tasks only)' if only_failed else ''}")
    control.restart(include_tasks=True, only_failed=only_failed, log=log)
    status = control.status()
    log(f"connector {status.name}: {status.effective_state}")
    return status.effective_state


@contextmanager
def holding_refresh_lock(settings: Settings, what: str) -> Iterator[None]:
    """A fix that writes bronze or runs dbt takes the refresh lock, as a refresh does: loads
    and dbt runs never overlap (RELIABILITY.md relies on it). Raises RefreshLocked, whose
    message names the run that holds it."""

    lock = RefreshLock(settings)
    lock.acquire(
        {"run_id": "fix", "mode": what, "pid": os.getpid(), "started_at": datetime.now(timezone.utc).isoformat()}
    )
    try:
        yield
    finally:
        lock.release()


def fix_create_bronze(settings: Settings, log: Log = no_log) -> list[str]:
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            for table in settings.tables:
                ensure_bronze(cur, settings.file, table)
                log(f"ensured {settings.file.bronze_schema}.{table.bronze_table} and the bookkeeping tables")
        conn.commit()
    finally:
        conn.close()
    return [t.bronze_table for t in settings.tables]


@dataclass
class RawZoneRepair:
    recovered: dict[str, list[str]] = field(default_factory=dict)  # table -> objects rewritten from the topic
    lost: dict[str, list[str]] = field(default_factory=dict)  # table -> objects the topic no longer holds

    def summary(self) -> str:
        recovered = sum(map(len, self.recovered.values()))
        lost = sum(map(len, self.lost.values()))
        if not recovered and not lost:
            return "bronze tables ready; the raw zone holds every loaded object"
        text = f"re-read {recovered} missing raw object(s) from the topic"
        if lost:
            text += (
                f"; {lost} object(s) are no longer in the topic ({', '.join(self.lost)}): their events stay "
                "in bronze, but a full refresh would rebuild bronze without them; run "
                "`bi-console refresh --full` only to accept the topic's current contents"
            )
        return text


def fix_bronze_load(settings: Settings, log: Log = no_log) -> RawZoneRepair:
    """The 'Bronze load fails' fix: create what is missing of bronze, then rewrite the raw
    objects the manifest needs but the raw zone lost, from the topic while it still holds
    their offsets (same names, same lines)."""

    repair = RawZoneRepair()
    with holding_refresh_lock(settings, "fix: repair bronze"):
        fix_create_bronze(settings, log)
        conn = connect(settings)
        try:
            for table in settings.tables:
                audit = audit_raw_zone(settings, table, conn)
                if audit.ok:
                    log(f"raw zone {table.name}: {audit.evidence(settings.s3_bucket)}")
                    continue
                log(f"raw zone {table.name}: {audit.evidence(settings.s3_bucket)}; re-reading from {table.topic}")
                result = recover_missing_objects(settings, table, audit.missing, log)
                repair.recovered[table.name] = result.recovered
                if result.lost:
                    repair.lost[table.name] = sorted(result.lost)
        finally:
            conn.close()
    log(repair.summary())
    return repair


def fix_rerun_dbt_debug(settings: Settings, log: Log = no_log) -> DbtResult:
    selector = " ".join(t.dbt_selector for t in settings.tables)
    with holding_refresh_lock(settings, "fix: dbt run --debug"):
        log(f"dbt run --debug --select {selector}")
        # In a process of its own: dbt would hold the TUI's GIL for seconds at a time.
        result = run_in_child(settings, selector, log, debug=True)
    log(f"dbt run {'succeeded' if result.success else 'FAILED'} in {result.elapsed:.1f}s {result.counts}")
    if not result.success:
        raise RuntimeError(f"dbt run failed: {result.error or ', '.join(n.name for n in result.failed)}")
    return result


def fix_refresh_bi(settings: Settings, log: Log = no_log) -> dict[str, Any]:
    configured, evidence = superset_configured(settings)
    if not configured:
        raise RuntimeError(evidence)

    with holding_refresh_lock(settings, "fix: BI cache refresh"):
        return run_bi_refresh(settings, log)
