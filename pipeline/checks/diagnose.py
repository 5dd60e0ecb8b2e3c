"""Diagnosis of the runbook's troubleshooting problems, and their fixes, as plain data.

One function per problem of the runbook's Troubleshooting section, each returning a
list of `Check` (name, ok, evidence): the TUI's troubleshooting panels show them live
and the headless `--check` reports them. Every probe answers within about 2 s
(`dbt debug` excepted: it is dbt's own report). Fixes are functions too; they take a
`log` callable and raise on failure.

Also here: the snapshots behind the TUI's Connector and Quality views
(`connector_snapshot`, `quality_snapshot`), plain dataclasses with no UI in them.

No UI import here (an import-linter contract forbids pipeline -> textual/rich/tui/cli).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.config import Settings, TableConfig

Log = Callable[[str], None]
PROBE_TIMEOUT = 2.0
INTAKE_ROWS = 50  # quarantined messages and rejected rows the Quality view lists (each)

PROBLEMS = {
    "no_cdc_events": "No CDC events in Kafka",
    "bronze_load": "Bronze load fails",
    "dbt": "dbt run fails",
    "stale_bi": "BI shows stale data",
}


@dataclass
class Check:
    name: str
    ok: bool
    evidence: str
    severity: str = "error"  # error | warning | info | skipped (could not run: an earlier check failed)
    fix: str = ""  # what to do about it, when not ok

    def as_dict(self) -> dict:
        return asdict(self)


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _noop(_: str) -> None:
    pass


# -- probes ---------------------------------------------------------------------


def _pg_connect(settings: Settings, timeout: float = PROBE_TIMEOUT):
    import psycopg2

    return psycopg2.connect(**{**settings.pg_dsn(), "connect_timeout": max(1, int(timeout))})


def check_postgres(settings: Settings) -> tuple[Check, Any]:
    """The PostgreSQL check and an open connection (None when unreachable)."""
    import psycopg2

    started = time.monotonic()
    try:
        conn = _pg_connect(settings)
    except psycopg2.Error as exc:
        from pipeline.stores.db import explain_pg_error

        text = explain_pg_error(exc, settings.pg_host, settings.pg_port, settings.pg_user) \
            if isinstance(exc, psycopg2.OperationalError) else _first_line(exc)
        return Check("PostgreSQL reachable", False, text,
                     fix="start the postgres service (Services view) or check BI_PG_HOST/BI_PG_PORT"), None
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = %s", (int(PROBE_TIMEOUT * 1000),))
        cur.execute("SELECT 1, current_setting('server_version')")
        version = cur.fetchone()[1]
    ms = (time.monotonic() - started) * 1000
    return Check("PostgreSQL reachable", True,
                 f"SELECT 1 ok on {settings.pg_host}:{settings.pg_port}/{settings.pg_database} "
                 f"(PostgreSQL {version}, {ms:.0f} ms)"), conn


def _relation_exists(conn, schema: str, name: str) -> bool:
    from psycopg2 import sql

    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (sql.SQL("{}.{}").format(sql.Identifier(schema),
                                                                       sql.Identifier(name)).as_string(conn),))
        return cur.fetchone()[0] is not None


def _schema_exists(conn, schema: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        return cur.fetchone() is not None


def _count(conn, schema: str, name: str, where: str = "") -> int:
    from psycopg2 import sql

    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}.{} " + where).format(sql.Identifier(schema), sql.Identifier(name)))
        return int(cur.fetchone()[0])


def _checkpoints(conn, settings: Settings) -> dict[tuple[str, int], int]:
    from psycopg2 import sql

    meta = settings.file.meta_schema
    if not _relation_exists(conn, meta, "ingest_checkpoint"):
        return {}
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT topic, kafka_partition, next_offset FROM {}.ingest_checkpoint")
                    .format(sql.Identifier(meta)))
        return {(t, int(p)): int(o) for t, p, o in cur.fetchall()}


def connector_control(settings: Settings, runtime=None):
    if runtime is not None:
        if getattr(runtime, "name", "") == "compose":
            from pipeline.runtime.connect_client import KafkaConnectClient

            return KafkaConnectClient(settings.kafka_connect_url, settings.connector_name, timeout=PROBE_TIMEOUT)
        return runtime.connector()
    from pipeline.runtime.select import connector_for

    return connector_for(settings)


def connector_check(settings: Settings, runtime=None) -> tuple[Check, Any]:
    """The connector's state check and its ConnectorStatus (None when it cannot be read)."""
    try:
        status = connector_control(settings, runtime).status()
    except Exception as exc:  # a probe reports, it never raises
        return Check("Connector state", False, f"{settings.connector_name}: status unavailable: {_first_line(exc)}",
                     fix="start the cdc service / Kafka Connect"), None
    state = status.effective_state
    evidence = f"{status.name}: {state}"
    if state == "RETRYING" and status.retry_attempt is not None:
        evidence += f" (attempt #{status.retry_attempt} of {status.retry_limit or 'infinity'})"
    if status.tasks:
        evidence += " (tasks: " + ", ".join(f"{t.id} {t.state}" for t in status.tasks) + ")"
    if status.events_captured is not None:
        evidence += f", {status.events_captured} events captured"
    if state != "RUNNING" and status.last_error:
        evidence += f"; {_first_line(status.last_error)}"
    fix = {"FAILED": "restart the connector", "PAUSED": "resume the connector",
           "RETRYING": "fix the error it retries (its source database?); it resumes by itself",
           "STOPPED": "start the cdc service"}.get(state, "restart the connector (start the cdc service)")
    return Check("Connector state", state == "RUNNING", evidence, fix=fix if state != "RUNNING" else ""), status


# -- the four runbook problems ----------------------------------------------------


def diagnose_no_cdc_events(settings: Settings, runtime=None) -> list[Check]:
    """Runbook issue 1: 'No CDC events in Kafka' (consumer fetches 0 records)."""
    from pipeline.stores.kafka import probe_broker, topic_offsets

    checks: list[Check] = []
    broker_ok, evidence = probe_broker(settings, timeout=PROBE_TIMEOUT)
    checks.append(Check("Kafka broker reachable", broker_ok, evidence,
                        fix="" if broker_ok else "start the kafka service or check BI_KAFKA_BOOTSTRAP"))
    connector, _ = connector_check(settings, runtime)
    checks.append(connector)
    positions: dict = {}
    try:
        conn = _pg_connect(settings)
        try:
            positions = _checkpoints(conn, settings)
        finally:
            conn.close()
    except Exception:
        positions = {}
    for table in settings.tables:
        if not broker_ok:
            checks.append(Check(f"Topic {table.topic}", False, "not checked: the broker is unreachable",
                                severity="skipped"))
            continue
        try:
            offsets = topic_offsets(settings, table.topic, timeout=PROBE_TIMEOUT)
        except Exception as exc:
            checks.append(Check(f"Topic {table.topic}", False, f"cannot read offsets: {_first_line(exc)}"))
            continue
        if offsets is None:
            checks.append(Check(f"Topic {table.topic}", False, "topic does not exist (no event was ever captured)",
                                fix="check the connector captures the source table; restart the connector"))
            continue
        end = sum(p.high for p in offsets)
        events = sum(p.high - p.low for p in offsets)
        checks.append(Check(f"Topic {table.topic}", events > 0,
                            f"exists, {len(offsets)} partition(s), end offset {end}, {events} event(s)",
                            fix="" if events else "the topic is empty: is the connector RUNNING?"))
        lag = [p.high - positions[(table.topic, p.partition)] for p in offsets
               if (table.topic, p.partition) in positions]
        if lag:
            checks.append(Check(f"Ingest lag {table.name}", True,
                                f"ingest position {sum(positions[(table.topic, p.partition)] for p in offsets if (table.topic, p.partition) in positions)}"
                                f", lag {sum(lag)} event(s)", severity="info"))
    return checks


def diagnose_bronze_load(settings: Settings) -> list[Check]:
    """Runbook issue 2: 'Bronze load fails' (psycopg2 errors, connection refused)."""
    checks: list[Check] = []
    pg, conn = check_postgres(settings)
    checks.append(pg)
    try:
        from pipeline.stores.storage import RawStore

        s3_ok, s3_evidence = RawStore(settings, timeout=1.0, retries=1, read_timeout=1.0).probe()
    except Exception as exc:
        s3_ok, s3_evidence = False, _first_line(exc)
    checks.append(Check("Object store reachable", s3_ok, s3_evidence,
                        fix="" if s3_ok else "start the s3 service or check BI_S3_ENDPOINT"))
    names = [f"Schema {settings.file.bronze_schema}"] + [
        f"Table {settings.file.bronze_schema}.{t.bronze_table}" for t in settings.tables] + [
        f"Table {settings.file.meta_schema}.ingest_checkpoint"]
    if conn is None:
        return checks + [Check(n, False, "not checked: PostgreSQL is unreachable", severity="skipped") for n in names]
    try:
        f = settings.file
        ok = _schema_exists(conn, f.bronze_schema)
        checks.append(Check(names[0], ok, "exists" if ok else "schema does not exist",
                            fix="" if ok else "create the bronze schema and tables"))
        for table in settings.tables:
            if _relation_exists(conn, f.bronze_schema, table.bronze_table):
                checks.append(Check(f"Table {f.bronze_schema}.{table.bronze_table}", True,
                                    f"exists, {_count(conn, f.bronze_schema, table.bronze_table)} row(s)"))
            else:
                checks.append(Check(f"Table {f.bronze_schema}.{table.bronze_table}", False, "table does not exist",
                                    fix="create the bronze schema and tables"))
        ok = _relation_exists(conn, f.meta_schema, "ingest_checkpoint")
        checks.append(Check(names[-1], ok, "exists" if ok else "table does not exist",
                            fix="" if ok else "create the bronze schema and tables"))
        checks += _raw_zone_checks(settings, conn, reachable=s3_ok)
        checks += _intake_checks(settings)
    finally:
        conn.close()
    return checks


def _intake_checks(settings: Settings) -> list[Check]:
    """Messages ingest quarantined and rows load rejected: events that are not in bronze."""
    from pipeline.steps import quarantine
    checks = []
    for table in settings.tables:
        try:
            q = quarantine.summary(settings, table)
            r = quarantine.reject_summary(settings, table)
        except Exception as exc:  # a probe reports, it never raises
            checks.append(Check(f"Quarantine and rejects {table.name}", False, f"cannot read: {_first_line(exc)}"))
            continue
        evidence = f"{q.pending} quarantined message(s) not replayed ({q.total} in all)"
        if q.pending and q.newest_reason:
            evidence += f"; newest: {q.newest_reason}"
        checks.append(Check(f"Quarantine {table.name}", q.pending == 0, evidence, severity="warning",
                            fix="" if not q.pending else "`bi-console quarantine list` shows each with its reason; "
                                                         "fix the cause, then `bi-console quarantine replay`"))
        evidence = f"{r.total} rejected row(s)" + (f"; newest: {r.newest_reason}" if r.total and r.newest_reason else "")
        checks.append(Check(f"Rejected rows {table.name}", r.total == 0, evidence, severity="warning",
                            fix="" if not r.total else "`bi-console quarantine list` shows each with its offset "
                                                       "and PostgreSQL's reason"))
    return checks


def _raw_zone_checks(settings: Settings, conn, *, reachable: bool) -> list[Check]:
    """Every object the manifest says was loaded is still in the raw zone: the next full
    refresh rebuilds bronze from it."""
    from pipeline.checks.raw_zone import audit_raw_zone

    checks = []
    for table in settings.tables:
        name = f"Raw zone {table.name} matches the manifest"
        if not reachable:
            checks.append(Check(name, False, "not checked: the object store is unreachable", severity="skipped"))
            continue
        try:
            audit = audit_raw_zone(settings, table, conn)
        except Exception as exc:  # a probe reports, it never raises
            checks.append(Check(name, False, f"cannot compare: {_first_line(exc)}"))
            continue
        checks.append(Check(name, audit.ok, audit.evidence(settings.s3_bucket),
                            fix="" if audit.ok else "re-read the missing objects' offsets from the topic (fix key); "
                                                   "a full refresh now would drop their events from bronze"))
    return checks


def diagnose_dbt(settings: Settings, *, run_debug: bool = True) -> list[Check]:
    """Runbook issue 3: 'dbt run fails'. Runs `dbt debug` (a few seconds) unless run_debug=False."""
    checks: list[Check] = []
    pg, conn = check_postgres(settings)
    checks.append(pg)
    f = settings.file
    relations = []
    for table in settings.tables:
        relations += [(f"Source {f.bronze_schema}.{table.bronze_table}", f.bronze_schema, table.bronze_table),
                      (f"View {f.staging_schema}.{table.staging_relation}", f.staging_schema, table.staging_relation),
                      (f"Table {f.marts_schema}.{table.marts_relation}", f.marts_schema, table.marts_relation)]
    if conn is None:
        checks += [Check(name, False, "not checked: PostgreSQL is unreachable", severity="skipped")
                   for name, _, _ in relations]
    else:
        try:
            for name, schema, relation in relations:
                ok = _relation_exists(conn, schema, relation)
                fix = ("create the bronze schema and tables" if schema == f.bronze_schema
                       else "rerun dbt with debug logging")
                checks.append(Check(name, ok, "exists" if ok else "does not exist",
                                    fix="" if ok else fix, severity="error" if ok or schema == f.bronze_schema
                                    else "warning"))
        finally:
            conn.close()
    if run_debug:
        try:
            from pipeline.steps.transform import debug_in_child

            result = debug_in_child(settings)
            lines = [ln for ln in (result.output or "").splitlines() if ln.strip()]
            wanted = [ln.strip() for ln in lines if "OK" in ln or "ERROR" in ln or "All checks" in ln]
            evidence = "; ".join(wanted[-6:]) or (result.error or "no output")
            checks.append(Check("dbt debug", result.success, evidence,
                                fix="" if result.success else "read the dbt debug output; check BI_PG_* settings"))
        except Exception as exc:
            checks.append(Check("dbt debug", False, f"dbt debug could not run: {_first_line(exc)}"))
    return checks


def superset_configured(settings: Settings) -> tuple[bool, str]:
    try:
        import pipeline.steps.bi  # noqa: F401
    except Exception as exc:  # absent or broken optional part
        return False, f"Superset not configured ({_first_line(exc)})"
    from pipeline.orchestration.refresh import superset_enabled

    if not superset_enabled(settings):
        return False, "Superset not configured (start the stack with `stack up --with superset`)"
    return True, f"Superset at {settings.superset_url}"


def diagnose_stale_bi(settings: Settings) -> list[Check]:
    """Runbook issue 4: 'Superset shows stale data'. Delegates to pipeline.steps.bi.diagnose_stale."""
    configured, evidence = superset_configured(settings)
    if not configured:
        return [Check("Superset configured", False, evidence, severity="warning",
                      fix="`bi-console stack up --with superset`")]
    from pipeline.steps.bi import diagnose_stale

    checks = []
    for item in diagnose_stale(settings):
        ok = item.get("ok")
        checks.append(Check(item.get("name", "?"), ok is True, str(item.get("evidence", "")),
                            severity="skipped" if ok is None else "error", fix=item.get("fix") or ""))
    return checks


DIAGNOSES: dict[str, Callable[..., list[Check]]] = {
    "no_cdc_events": lambda settings, runtime=None: diagnose_no_cdc_events(settings, runtime),
    "bronze_load": lambda settings, runtime=None: diagnose_bronze_load(settings),
    "dbt": lambda settings, runtime=None: diagnose_dbt(settings),
    "stale_bi": lambda settings, runtime=None: diagnose_stale_bi(settings),
}


# -- fixes ------------------------------------------------------------------------


def fix_restart_connector(settings: Settings, runtime=None, log: Log = _noop, *, only_failed: bool = False) -> str:
    control = connector_control(settings, runtime)
    log(f"restarting connector {settings.connector_name}{' (failed tasks only)' if only_failed else ''}")
    try:
        control.restart(include_tasks=True, only_failed=only_failed, log=log)
    except TypeError:  # Kafka Connect's client takes no log
        control.restart(include_tasks=True, only_failed=only_failed)
    status = control.status()
    log(f"connector {status.name}: {status.effective_state}")
    return status.effective_state


@contextmanager
def holding_refresh_lock(settings: Settings, what: str) -> Iterator[None]:
    """A fix that writes bronze or runs dbt takes the refresh lock, as a refresh does: loads
    and dbt runs never overlap (RELIABILITY.md relies on it). Raises RefreshLocked, whose
    message names the run that holds it."""
    import os

    from pipeline.orchestration.refresh import RefreshLock

    lock = RefreshLock(settings)
    lock.acquire({"run_id": "fix", "mode": what, "pid": os.getpid(),
                  "started_at": datetime.now(timezone.utc).isoformat()})
    try:
        yield
    finally:
        lock.release()


def fix_create_bronze(settings: Settings, log: Log = _noop) -> list[str]:
    from pipeline.stores.bronze import ensure_bronze
    from pipeline.stores.db import connect

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
            text += (f"; {lost} object(s) are no longer in the topic ({', '.join(self.lost)}): their events stay "
                     "in bronze, but a full refresh would rebuild bronze without them; run "
                     "`bi-console refresh --full` only to accept the topic's current contents")
        return text


def fix_bronze_load(settings: Settings, log: Log = _noop) -> RawZoneRepair:
    """The 'Bronze load fails' fix: create what is missing of bronze, then rewrite the raw
    objects the manifest needs but the raw zone lost, from the topic while it still holds
    their offsets (same names, same lines)."""
    from pipeline.stores.db import connect
    from pipeline.checks.raw_zone import audit_raw_zone
    from pipeline.steps.ingest import recover_missing_objects

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


def fix_rerun_dbt_debug(settings: Settings, log: Log = _noop):
    from pipeline.steps.transform import run_in_child

    selector = " ".join(t.dbt_selector for t in settings.tables)
    with holding_refresh_lock(settings, "fix: dbt run --debug"):
        log(f"dbt run --debug --select {selector}")
        # In a process of its own: dbt would hold the TUI's GIL for seconds at a time.
        result = run_in_child(settings, selector, log, debug=True)
    log(f"dbt run {'succeeded' if result.success else 'FAILED'} in {result.elapsed:.1f}s {result.counts}")
    if not result.success:
        raise RuntimeError(f"dbt run failed: {result.error or ', '.join(n.name for n in result.failed)}")
    return result


def fix_refresh_bi(settings: Settings, log: Log = _noop) -> dict:
    configured, evidence = superset_configured(settings)
    if not configured:
        raise RuntimeError(evidence)
    from pipeline.steps.bi import run_bi_refresh

    with holding_refresh_lock(settings, "fix: BI cache refresh"):
        return run_bi_refresh(settings, log)


# -- snapshots for the views ------------------------------------------------------


@dataclass
class PartitionLag:
    topic: str
    partition: int
    low: int
    end: int
    position: int | None  # the ingest position (next offset to read), None if never ingested

    @property
    def lag(self) -> int | None:
        return None if self.position is None else max(0, self.end - self.position)


@dataclass
class ConnectorSnapshot:
    status: Any  # ConnectorStatus | None
    error: str | None = None
    partitions: list[PartitionLag] = field(default_factory=list)
    missing_topics: list[str] = field(default_factory=list)
    offsets_error: str | None = None


def connector_snapshot(settings: Settings, runtime=None) -> ConnectorSnapshot:
    from pipeline.stores.kafka import probe_broker, topic_offsets

    snap = ConnectorSnapshot(status=None)
    try:
        snap.status = connector_control(settings, runtime).status()
    except Exception as exc:
        snap.error = _first_line(exc)
    try:
        conn = _pg_connect(settings)
        try:
            positions = _checkpoints(conn, settings)
        finally:
            conn.close()
    except Exception:
        positions = {}
    broker_ok, evidence = probe_broker(settings, timeout=1.0)
    if not broker_ok:
        snap.offsets_error = evidence
        return snap
    try:
        for table in settings.tables:
            offsets = topic_offsets(settings, table.topic, timeout=PROBE_TIMEOUT)
            if offsets is None:
                snap.missing_topics.append(table.topic)
                continue
            for p in offsets:
                snap.partitions.append(PartitionLag(table.topic, p.partition, p.low, p.high,
                                                    positions.get((table.topic, p.partition))))
    except Exception as exc:
        snap.offsets_error = _first_line(exc)
    return snap


@dataclass
class LayerCounts:
    table: str
    bronze_total: int | None = None
    bronze_distinct: int | None = None
    staging_all: int | None = None
    staging_active: int | None = None
    marts: int | None = None

    def mismatches(self) -> set[str]:
        """Columns that disagree: distinct keys in bronze vs staging, active staging vs marts."""
        bad = set()
        if None not in (self.bronze_distinct, self.staging_all) and self.bronze_distinct != self.staging_all:
            bad |= {"bronze_distinct", "staging_all"}
        if None not in (self.staging_active, self.marts) and self.staging_active != self.marts:
            bad |= {"staging_active", "marts"}
        return bad


@dataclass
class QualitySnapshot:
    counts: list[LayerCounts] = field(default_factory=list)
    latest_ingest: datetime | None = None
    freshness_max_minutes: float = 60.0
    suppliers: list[tuple[str, int]] = field(default_factory=list)
    multilingual: list[tuple[str, int]] = field(default_factory=list)
    validation: dict[str, dict] = field(default_factory=dict)  # table -> ValidationResult.as_dict()
    quarantined: list[Any] = field(default_factory=list)  # pipeline.steps.quarantine.QuarantineEntry
    rejected: list[Any] = field(default_factory=list)  # pipeline.steps.quarantine.RejectEntry
    error: str | None = None

    def freshness_age(self, now: datetime | None = None) -> float | None:
        if self.latest_ingest is None:
            return None
        return ((now or datetime.now(timezone.utc)) - self.latest_ingest).total_seconds()

    @property
    def multilingual_coverage(self) -> float | None:
        total = sum(n for _, n in self.multilingual)
        if not total:
            return None
        return sum(n for s, n in self.multilingual if s == "Complete") / total


def read_validation_results(settings: Settings) -> dict[str, dict]:
    out = {}
    directory = Path(settings.data_dir) / "validation"
    for table in settings.tables:
        path = directory / f"{table.name}-latest.json"
        try:
            out[table.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def _has_column(conn, schema: str, relation: str, column: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                    "AND column_name = %s", (schema, relation, column))
        return cur.fetchone() is not None


def _layer_counts(conn, settings: Settings, table: TableConfig) -> LayerCounts:
    from pipeline.stores import queries
    records = [row["records"] for row in queries.layer_counts(conn, settings.file, table)]
    return LayerCounts(table.name, *records)


def quality_snapshot(settings: Settings) -> QualitySnapshot:
    """Layer row counts, freshness, supplier distribution, multilingual coverage and the
    latest Great Expectations results (read from `<data_dir>/validation/`)."""
    snap = QualitySnapshot(freshness_max_minutes=settings.file.thresholds.freshness_max_age_minutes)
    snap.validation = read_validation_results(settings)
    try:
        conn = _pg_connect(settings)
    except Exception as exc:
        snap.error = f"PostgreSQL unreachable: {_first_line(exc)}"
        return snap
    try:
        from pipeline.steps import quarantine
        snap.quarantined = [e for e in quarantine.list_entries(settings, limit=INTAKE_ROWS) if e.replayed_at is None]
        snap.rejected = quarantine.list_rejects(settings, limit=INTAKE_ROWS)
    except Exception as exc:
        snap.error = f"quarantine unreadable: {_first_line(exc)}"
    conn.autocommit = True
    try:
        with conn.cursor() as cur:  # a bound, generous for a loaded machine: this runs in a worker
            cur.execute("SET statement_timeout = 60000")
        for table in settings.tables:
            snap.counts.append(_layer_counts(conn, settings, table))
        from pipeline.stores import queries
        f = settings.file
        first = settings.tables[0] if settings.tables else None
        if first and _relation_exists(conn, f.marts_schema, first.marts_relation):
            # The runbook's validation queries read the first table's contract columns.
            def has(column: str) -> bool:
                return _has_column(conn, f.marts_schema, first.marts_relation, column)

            if has("ingested_timestamp") and has("last_modified_in_source"):
                snap.latest_ingest = queries.data_freshness(conn, f, first)[0]["latest_ingest"]
            if has("supplier_name"):
                snap.suppliers = [(str(r["supplier_name"]), int(r["product_count"]))
                                  for r in queries.supplier_distribution(conn, f, first)]
            if has("multilingual_status"):
                snap.multilingual = sorted((str(r["multilingual_status"]), int(r["product_count"]))
                                           for r in queries.multilingual_coverage(conn, f, first))
    except Exception as exc:
        snap.error = _first_line(exc)
    finally:
        conn.close()
    return snap
