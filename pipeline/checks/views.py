"""The data behind the TUI's Connector and Quality views: plain dataclasses, no UI in
them, read through the probes and judged by the same checks as `--check`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg2.extensions import connection

from pipeline.checks import monitoring, probes, rules
from pipeline.checks.model import Check, first_line, judged
from pipeline.checks.probes import LayerCounts, PartitionLag
from pipeline.config import Settings, TableConfig
from pipeline.runtime.model import Runtime
from pipeline.steps import quarantine
from pipeline.steps.contract_suite import suite_names
from pipeline.stores import queries
from pipeline.stores.kafka import probe_broker

INTAKE_ROWS = 50  # quarantined messages and rejected rows the Quality view lists (each)


@dataclass
class ConnectorSnapshot:
    status: Any  # ConnectorStatus | None
    error: str | None = None
    partitions: list[PartitionLag] = field(default_factory=list)
    missing_topics: list[str] = field(default_factory=list)
    offsets_error: str | None = None


def connector_snapshot(settings: Settings, runtime: Runtime | None = None) -> ConnectorSnapshot:
    snap = ConnectorSnapshot(status=None)
    try:
        snap.status = probes.connector_status(settings, runtime)
    except Exception as exc:
        snap.error = first_line(exc)
    positions = probes.checkpoint_positions_or_empty(settings)
    broker_ok, evidence = probe_broker(settings, timeout=1.0)
    if not broker_ok:
        snap.offsets_error = evidence
        return snap
    try:
        for table in settings.tables:
            partitions = probes.topic_partitions(settings, table.topic, positions)
            if partitions is None:
                snap.missing_topics.append(table.topic)
                continue
            snap.partitions += partitions
    except Exception as exc:
        snap.offsets_error = first_line(exc)
    return snap


@dataclass
class QualitySnapshot:
    counts: list[LayerCounts] = field(default_factory=list)
    # How far the first table's marts trail the source (the freshness check's figure), seconds.
    freshness_lag: float | None = None
    freshness_max_minutes: float = 60.0
    suppliers: list[tuple[str, int]] = field(default_factory=list)
    multilingual: list[tuple[str, int]] = field(default_factory=list)
    validation: dict[str, dict[str, Any]] = field(default_factory=dict)  # table -> ValidationResult.as_dict()
    quarantined: list[quarantine.QuarantineEntry] = field(default_factory=list)
    rejected: list[quarantine.RejectEntry] = field(default_factory=list)
    # The data checks of `--check` (reconciliation, freshness, profile, coverage by suites, ...)
    checks: list[Check] = field(default_factory=list)
    error: str | None = None

    @property
    def multilingual_coverage(self) -> float | None:
        total = sum(n for _, n in self.multilingual)
        if not total:
            return None
        return sum(n for s, n in self.multilingual if s == "Complete") / total


def _freshness_lag(settings: Settings, conn: connection, table: TableConfig) -> float | None:
    column = table.checks.freshness_column
    if not column:
        return None
    source = probes.source_state(settings, table)
    latest = probes.marts_latest(conn, settings, table, column)
    if source.latest_change is None or latest is None:
        return None
    return max(0.0, (source.latest_change - latest).total_seconds())


def quality_snapshot(settings: Settings) -> QualitySnapshot:
    """Layer row counts, freshness against the source, supplier distribution, multilingual
    coverage, the data checks, and the latest Great Expectations results (read from
    `<data_dir>/validation/`)."""

    snap = QualitySnapshot(freshness_max_minutes=settings.file.thresholds.freshness_max_age_minutes)
    snap.validation = probes.latest_validation(settings)
    try:
        conn = probes.pg_connect(settings)
    except Exception as exc:
        snap.error = f"PostgreSQL unreachable: {first_line(exc)}"
        return snap
    try:
        snap.quarantined = [e for e in quarantine.list_entries(settings, limit=INTAKE_ROWS) if e.replayed_at is None]
        snap.rejected = quarantine.list_rejects(settings, limit=INTAKE_ROWS)
    except Exception as exc:
        snap.error = f"quarantine unreadable: {first_line(exc)}"
    conn.autocommit = True
    try:
        with conn.cursor() as cur:  # a bound, generous for a loaded machine: this runs in a worker
            cur.execute("SET statement_timeout = 60000")
        collector = monitoring.Collector()
        for table in settings.tables:
            snap.counts.append(probes.layer_counts(conn, settings, table))
            monitoring.table_checks(settings, table, conn, collector)
            if not suite_names(table, settings.dbt_project_dir):
                snap.checks.append(judged(f"gx:{table.name}", rules.not_covered(table), "great_expectations"))
        snap.checks[:0] = collector.results
        f = settings.file
        first = settings.tables[0] if settings.tables else None
        first_marts = first.marts_relation if first else None
        if first and first_marts and probes.relation_exists(conn, f.marts_schema, first_marts):
            # The runbook's validation queries read the first table's contract columns.
            def has(column: str) -> bool:
                assert first_marts is not None  # checked above; mypy does not carry it into the closure
                return probes.has_column(conn, f.marts_schema, first_marts, column)

            if first.checks.freshness_column and has(first.checks.freshness_column):
                try:
                    snap.freshness_lag = _freshness_lag(settings, conn, first)
                except Exception as exc:  # the source unreachable: the freshness check says so
                    snap.error = f"source unreadable: {first_line(exc)}"
            if has("supplier_name"):
                snap.suppliers = [
                    (str(r["supplier_name"]), int(r["product_count"]))
                    for r in queries.supplier_distribution(conn, f, first)
                ]
            if has("multilingual_status"):
                snap.multilingual = sorted(
                    (str(r["multilingual_status"]), int(r["product_count"]))
                    for r in queries.multilingual_coverage(conn, f, first)
                )
    except Exception as exc:
        snap.error = first_line(exc)
    finally:
        conn.close()
    return snap
