"""Every probe of the checks, in one place: what the services, the connector, the
checkpoints, the layers, the raw zone, the source and the marts say. A probe reads and
returns data; the rules (pipeline/checks/rules.py) judge it. Every probe answers within
about PROBE_TIMEOUT seconds or raises.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection

from pipeline.checks.raw_zone import RawZoneAudit, audit_raw_zone
from pipeline.config import ConfigError, Settings, TableConfig
from pipeline.orchestration.refresh import superset_enabled
from pipeline.runtime import pgserver
from pipeline.runtime.model import ConnectorControl, ConnectorStatus, Runtime, ServiceStatus
from pipeline.runtime.select import connector_for, select_runtime
from pipeline.steps import quarantine
from pipeline.stores import queries
from pipeline.stores.db import connect_source, one_row
from pipeline.stores.kafka import probe_broker, topic_offsets
from pipeline.stores.storage import RawStore
from pipeline.superset.install import health

PROBE_TIMEOUT = 2.0


def _rel(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def _scalar(conn: connection, statement: str | sql.Composable, params: tuple[Any, ...] | None = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return one_row(cur)[0]


def pg_connect(settings: Settings, timeout: float = PROBE_TIMEOUT) -> connection:
    conn: connection = psycopg2.connect(**{**settings.pg_dsn(), "connect_timeout": max(1, int(timeout))})
    return conn


# -- services --------------------------------------------------------------------


def service_probes(settings: Settings) -> dict[str, Callable[[], tuple[bool, str]]]:
    """Service -> probe answering (healthy, evidence). A failure's evidence is one line that
    names the setting to fix (BI_PG_PASSWORD, BI_KAFKA_BOOTSTRAP, BI_S3_ENDPOINT, ...)."""

    return {
        "postgres": lambda: pgserver.probe(settings),
        "kafka": lambda: probe_broker(settings, timeout=PROBE_TIMEOUT),
        "s3": lambda: RawStore(settings, timeout=PROBE_TIMEOUT, retries=1, read_timeout=PROBE_TIMEOUT).probe(),
    }


def superset_health(settings: Settings) -> tuple[bool, str]:
    return health(settings)


def superset_configured(settings: Settings) -> tuple[bool, str]:
    if not superset_enabled(settings):
        return False, "Superset not configured (start the stack with `stack up --with superset`)"
    return True, f"Superset at {settings.superset_url}"


def restarting_services(settings: Settings) -> list[ServiceStatus]:
    """Services the runtime sees in a restart loop (ServiceStatus). Raises RuntimeUnavailable."""

    return [s for s in select_runtime(settings).status_all() if s.state == "restarting"]


# -- connector -------------------------------------------------------------------


def connector_control(settings: Settings, runtime: Runtime | None = None) -> ConnectorControl:
    """The given runtime's connector control, or the configured runtime's when none is given."""
    return runtime.connector() if runtime is not None else connector_for(settings)


def connector_status(settings: Settings, runtime: Runtime | None = None) -> ConnectorStatus:
    return connector_control(settings, runtime).status()


# -- Kafka and the ingest position ------------------------------------------------


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


def checkpoint_positions(conn: connection, settings: Settings) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the next offset ingest reads; {} before the first ingest."""
    meta = settings.file.meta_schema
    if not relation_exists(conn, meta, "ingest_checkpoint"):
        return {}
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT topic, kafka_partition, next_offset FROM {}.ingest_checkpoint").format(sql.Identifier(meta))
        )
        return {(t, int(p)): int(o) for t, p, o in cur.fetchall()}


def checkpoint_positions_or_empty(settings: Settings) -> dict[tuple[str, int], int]:
    """The positions for a view or panel that shows lag only when it can."""
    try:
        conn = pg_connect(settings)
    except psycopg2.Error:
        return {}
    try:
        return checkpoint_positions(conn, settings)
    except psycopg2.Error:
        return {}
    finally:
        conn.close()


def topic_partitions(
    settings: Settings, topic: str, positions: dict[tuple[str, int], int]
) -> list[PartitionLag] | None:
    """Each partition's watermarks and ingest position; None when the topic does not exist."""

    offsets = topic_offsets(settings, topic, timeout=PROBE_TIMEOUT)
    if offsets is None:
        return None
    return [PartitionLag(topic, p.partition, p.low, p.high, positions.get((topic, p.partition))) for p in offsets]


@dataclass
class TopicAccount:
    """Where a topic's events went, in its current epoch: bronze rows, quarantined (not
    replayed) messages, rejected rows, and those not ingested yet."""

    end: int
    bronze: int
    quarantined: int
    rejected: int
    not_ingested: int
    epoch: int


def topic_account(
    conn: connection, settings: Settings, table: TableConfig, partitions: list[PartitionLag]
) -> TopicAccount:
    f = settings.file
    bronze = _rel(f.bronze_schema, table.bronze_table)
    epoch = int(
        _scalar(
            conn,
            sql.SQL("SELECT coalesce(max(kafka_epoch), 0) FROM {} WHERE kafka_topic = %s").format(bronze),
            (table.topic,),
        )
    )
    rows = int(
        _scalar(
            conn,
            sql.SQL("SELECT count(*) FROM {} WHERE kafka_topic = %s AND kafka_epoch = %s").format(bronze),
            (table.topic, epoch),
        )
    )
    quarantined = rejected = 0
    if relation_exists(conn, f.meta_schema, "quarantine"):
        quarantined = int(
            _scalar(
                conn,
                sql.SQL(
                    "SELECT count(*) FROM {} WHERE table_name = %s AND topic = %s AND kafka_epoch = %s AND replayed_at IS NULL"
                ).format(_rel(f.meta_schema, "quarantine")),
                (table.name, table.topic, epoch),
            )
        )
    if relation_exists(conn, f.meta_schema, "load_rejects"):
        # A line that is not JSON names no position: it is counted where its object was loaded.
        rejected = int(
            _scalar(
                conn,
                sql.SQL("SELECT count(*) FROM {} WHERE bronze_table = %s AND coalesce(kafka_epoch, %s) = %s").format(
                    _rel(f.meta_schema, "load_rejects")
                ),
                (table.bronze_table, epoch, epoch),
            )
        )
    end = sum(p.end for p in partitions)
    not_ingested = sum(p.end - (p.position if p.position is not None else p.low) for p in partitions)
    return TopicAccount(end, rows, quarantined, rejected, max(0, not_ingested), epoch)


# -- PostgreSQL relations --------------------------------------------------------


def relation_exists(conn: connection, schema: str, name: str) -> bool:
    return _scalar(conn, "SELECT to_regclass(%s)", (_rel(schema, name).as_string(conn),)) is not None


def schema_exists(conn: connection, schema: str) -> bool:
    return int(_scalar(conn, "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,))) > 0


def has_column(conn: connection, schema: str, relation: str, column: str) -> bool:
    return (
        int(
            _scalar(
                conn,
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s AND column_name = %s",
                (schema, relation, column),
            )
        )
        > 0
    )


def row_count(conn: connection, schema: str, name: str) -> int:
    return int(_scalar(conn, sql.SQL("SELECT count(*) FROM {}").format(_rel(schema, name))))


@dataclass
class LayerCounts:
    table: str
    bronze_total: int | None = None
    bronze_distinct: int | None = None
    staging_all: int | None = None
    staging_active: int | None = None
    marts: int | None = None
    # False for a table with staging only: its marts are not modelled, not missing.
    marts_modelled: bool = True

    LABELS = (
        queries.LAYER_BRONZE,
        queries.LAYER_BRONZE_KEYS,
        queries.LAYER_STAGING_ALL,
        queries.LAYER_STAGING_ACTIVE,
        queries.LAYER_MARTS,
    )

    def figures(self) -> list[tuple[str, int | None]]:
        """(the runbook's layer name, count), in layer order; the marts only where modelled."""
        figures = list(
            zip(
                self.LABELS,
                (self.bronze_total, self.bronze_distinct, self.staging_all, self.staging_active, self.marts),
                strict=True,
            )
        )
        return figures if self.marts_modelled else figures[:-1]

    def mismatches(self) -> set[str]:
        """Columns that disagree: distinct keys in bronze vs staging, active staging vs marts."""
        bad = set()
        if None not in (self.bronze_distinct, self.staging_all) and self.bronze_distinct != self.staging_all:
            bad |= {"bronze_distinct", "staging_all"}
        if None not in (self.staging_active, self.marts) and self.staging_active != self.marts:
            bad |= {"staging_active", "marts"}
        return bad


def layer_counts(conn: connection, settings: Settings, table: TableConfig) -> LayerCounts:
    by_layer = {row["layer"]: row["records"] for row in queries.layer_counts(conn, settings.file, table)}
    bronze_total, bronze_distinct, staging_all, staging_active, marts = (
        by_layer.get(label) for label in LayerCounts.LABELS
    )
    return LayerCounts(
        table.name,
        bronze_total,
        bronze_distinct,
        staging_all,
        staging_active,
        marts,
        marts_modelled=table.marts_relation is not None,
    )


# -- the source and the marts -----------------------------------------------------


@dataclass
class SourceState:
    active_rows: int
    latest_change: datetime | None  # None when no modified-time column is configured or no row


def source_state(settings: Settings, table: TableConfig) -> SourceState:
    """The source table's active rows and latest change, read from the source database as
    the table config says (its modified-time and deleted columns). Naive times are UTC."""

    checks = table.checks
    source = _rel(table.source_schema, table.source_table)
    active = (
        sql.SQL("NOT coalesce({}, false)").format(sql.Identifier(checks.source_deleted_column))
        if checks.source_deleted_column
        else sql.SQL("true")
    )
    latest = (
        sql.SQL("max({})").format(sql.Identifier(checks.source_modified_column))
        if checks.source_modified_column
        else sql.SQL("NULL")
    )
    conn = connect_source(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET statement_timeout = {int(PROBE_TIMEOUT * 5000)}")
            cur.execute(sql.SQL("SELECT count(*) FILTER (WHERE {}), {} FROM {}").format(active, latest, source))
            rows, changed = one_row(cur)
    finally:
        conn.close()
    if isinstance(changed, datetime) and changed.tzinfo is None:
        changed = changed.replace(tzinfo=timezone.utc)
    return SourceState(int(rows), changed)


def marts_relation(settings: Settings, table: TableConfig) -> tuple[str, str]:
    """(schema, relation) of the table's marts; a table with staging only has none, and a
    check that reads the marts is not run for it (monitoring skips it as not modelled)."""
    if table.marts_relation is None:
        raise ConfigError(f"table {table.name!r} has no marts layer (tables.marts_relation is not set)")
    return settings.file.marts_schema, table.marts_relation


def marts_latest(conn: connection, settings: Settings, table: TableConfig, column: str) -> datetime | None:
    value = _scalar(
        conn,
        sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), _rel(*marts_relation(settings, table))),
    )
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    latest: datetime | None = value
    return latest


def marts_share(
    conn: connection,
    settings: Settings,
    table: TableConfig,
    expression: sql.Composable,
    params: tuple[Any, ...] | None = None,
) -> float | None:
    """avg(expression) over the marts relation (None when it is empty)."""
    value = _scalar(
        conn,
        sql.SQL("SELECT avg(({})::int) FROM {}").format(expression, _rel(*marts_relation(settings, table))),
        params,
    )
    return None if value is None else float(value)


def marts_range(
    conn: connection, settings: Settings, table: TableConfig, column: str
) -> tuple[float | None, float | None]:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT min({0}), max({0}) FROM {1}").format(
                sql.Identifier(column), _rel(*marts_relation(settings, table))
            )
        )
        low, high = one_row(cur)
    return (None if low is None else float(low)), (None if high is None else float(high))


def marts_value_shares(conn: connection, settings: Settings, table: TableConfig, column: str) -> dict[str, float]:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {0}::text, count(*)::float / sum(count(*)) OVER () FROM {1} GROUP BY {0}").format(
                sql.Identifier(column), _rel(*marts_relation(settings, table))
            )
        )
        return {str(value): float(share) for value, share in cur.fetchall()}


@dataclass
class MartsProfile:
    rows: int
    value_shares: dict[str, dict[str, float]] = field(default_factory=dict)
    true_shares: dict[str, float | None] = field(default_factory=dict)
    filled_shares: dict[str, float | None] = field(default_factory=dict)
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)


def marts_profile(conn: connection, settings: Settings, table: TableConfig) -> MartsProfile:
    """The marts' figures for each column the table's production profile names."""
    profile = table.profile
    out = MartsProfile(row_count(conn, *marts_relation(settings, table)))
    for column in profile.value_shares:
        out.value_shares[column] = marts_value_shares(conn, settings, table, column)
    for column in profile.true_shares:
        out.true_shares[column] = marts_share(conn, settings, table, sql.Identifier(column))
    for column in profile.filled_shares:
        out.filled_shares[column] = marts_share(
            conn, settings, table, sql.SQL("{} IS NOT NULL").format(sql.Identifier(column))
        )
    for column in profile.ranges:
        out.ranges[column] = marts_range(conn, settings, table, column)
    return out


# -- intake, raw zone, validation -------------------------------------------------


def intake_summaries(
    settings: Settings, table: TableConfig, since: datetime | None = None
) -> tuple[quarantine.QuarantineSummary, quarantine.RejectSummary]:
    """(QuarantineSummary, RejectSummary): what did not reach bronze."""

    return quarantine.summary(settings, table, since), quarantine.reject_summary(settings, table, since)


def raw_zone_audit(settings: Settings, table: TableConfig, conn: connection) -> RawZoneAudit:
    return audit_raw_zone(settings, table, conn)


def latest_validation(settings: Settings) -> dict[str, dict[str, Any]]:
    """Table -> its latest Great Expectations result (ValidationResult.as_dict())."""
    out: dict[str, dict[str, Any]] = {}
    directory = Path(settings.data_dir) / "validation"
    for table in settings.tables:
        try:
            out[table.name] = json.loads((directory / f"{table.name}-latest.json").read_text())
        except (OSError, ValueError):
            continue
    return out


# The newest state-carrying events a schema check reads: the source's current columns.
SCHEMA_SAMPLE_EVENTS = 1000


@dataclass(frozen=True)
class SourceColumns:
    """What the source sends now, whatever its contract says: the JSON kinds of each column's
    non-null values over the newest events, and the columns of the newest event alone (Debezium
    writes every column of a row, so one missing there is gone from the source)."""

    kinds: dict[str, set[str]] = field(default_factory=dict)
    newest: set[str] = field(default_factory=set)


def source_columns_seen(conn: connection, settings: Settings, table: TableConfig) -> SourceColumns:
    """The table's SourceColumns from bronze; empty before any event."""
    if not relation_exists(conn, settings.file.bronze_schema, table.bronze_table):
        return SourceColumns()
    statement = sql.SQL(
        "SELECT k.key, coalesce(array_agg(DISTINCT jsonb_typeof(k.value)) FILTER "
        "(WHERE jsonb_typeof(k.value) <> 'null'), '{{}}'), bool_or(newest.position = 1) "
        "FROM (SELECT CASE WHEN b.cdc_operation = 'd' THEN e.envelope -> 'before' "
        "ELSE e.envelope -> 'after' END AS row_data, "
        "row_number() OVER (ORDER BY b.ingested_at DESC, b.kafka_offset DESC) AS position FROM {} AS b "
        "CROSS JOIN LATERAL (SELECT CASE WHEN b.cdc_payload ? 'schema' AND b.cdc_payload ? 'payload' "
        "THEN b.cdc_payload -> 'payload' ELSE b.cdc_payload END AS envelope) AS e "
        "WHERE b.cdc_operation IS NOT NULL ORDER BY b.ingested_at DESC, b.kafka_offset DESC LIMIT %s) AS newest "
        "CROSS JOIN LATERAL jsonb_each(newest.row_data) AS k GROUP BY k.key"
    ).format(_rel(settings.file.bronze_schema, table.bronze_table))
    with conn.cursor() as cur:
        cur.execute(statement, (SCHEMA_SAMPLE_EVENTS,))
        rows = cur.fetchall()
    return SourceColumns({key: set(kinds) for key, kinds, _ in rows}, {key for key, _, in_newest in rows if in_newest})
