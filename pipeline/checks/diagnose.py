"""Diagnosis of the runbook's troubleshooting problems: one function per problem of its
Troubleshooting section, each returning the `Check`s the TUI's panels show live. They
read through the probes and judge with the rules `--check` uses. Every probe answers
within about 2 s (`dbt debug` excepted: it is dbt's own report).

Fixes are pipeline/checks/fixes.py; the Connector and Quality views' data are
pipeline/checks/views.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg2
from psycopg2.extensions import connection

from pipeline.checks import probes, rules
from pipeline.checks.model import Check, first_line, judged, skipped
from pipeline.checks.stale_bi import diagnose_stale
from pipeline.config import Settings
from pipeline.runtime.model import ConnectorStatus, Runtime
from pipeline.steps.transform import debug_in_child
from pipeline.stores.db import explain_pg_error, one_row
from pipeline.stores.kafka import probe_broker
from pipeline.stores.storage import RawStore

PROBLEMS = {
    "no_cdc_events": "No CDC events in Kafka",
    "bronze_load": "Bronze load fails",
    "dbt": "dbt run fails",
    "stale_bi": "BI shows stale data",
}

CREATE_BRONZE = "create the bronze schema and tables"


def check_postgres(settings: Settings) -> tuple[Check, Any]:
    """The PostgreSQL check and an open connection (None when unreachable)."""
    started = time.monotonic()
    try:
        conn = probes.pg_connect(settings)
    except psycopg2.Error as exc:
        text = (
            explain_pg_error(exc, settings.pg_host, settings.pg_port, settings.pg_user)
            if isinstance(exc, psycopg2.OperationalError)
            else first_line(exc)
        )
        return Check(
            "PostgreSQL reachable",
            "fail",
            text,
            fix="start the postgres service (Services view) or check BI_PG_HOST/BI_PG_PORT",
        ), None
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = %s", (int(probes.PROBE_TIMEOUT * 1000),))
        cur.execute("SELECT 1, current_setting('server_version')")
        version = one_row(cur)[1]
    ms = (time.monotonic() - started) * 1000
    return Check(
        "PostgreSQL reachable",
        "pass",
        f"SELECT 1 ok on {settings.pg_host}:{settings.pg_port}/{settings.pg_database} "
        f"(PostgreSQL {version}, {ms:.0f} ms)",
    ), conn


def connector_check(settings: Settings, runtime: Runtime | None = None) -> tuple[Check, ConnectorStatus | None]:
    """The connector's state check and its ConnectorStatus (None when it cannot be read)."""
    try:
        status = probes.connector_status(settings, runtime)
    except Exception as exc:  # a probe reports, it never raises
        return Check(
            "Connector state",
            "fail",
            f"{settings.connector_name}: status unavailable: {first_line(exc)}",
            fix="start the cdc service / Kafka Connect",
        ), None
    return judged("Connector state", rules.connector_state(status), "connector", "cdc"), status


# -- the four runbook problems ----------------------------------------------------


def diagnose_no_cdc_events(settings: Settings, runtime: Runtime | None = None) -> list[Check]:
    """Runbook issue 1: 'No CDC events in Kafka' (consumer fetches 0 records)."""
    broker_ok, evidence = probe_broker(settings, timeout=probes.PROBE_TIMEOUT)
    checks = [
        judged(
            "Kafka broker reachable",
            rules.service(broker_ok, evidence, "start the kafka service or check BI_KAFKA_BOOTSTRAP"),
        )
    ]
    checks.append(connector_check(settings, runtime)[0])
    positions = probes.checkpoint_positions_or_empty(settings)
    lag_max = settings.file.thresholds.ingest_lag_max_events
    for table in settings.tables:
        name = f"Topic {table.topic}"
        if not broker_ok:
            checks.append(skipped(name, "the broker is unreachable"))
            continue
        try:
            partitions = probes.topic_partitions(settings, table.topic, positions)
        except Exception as exc:
            checks.append(Check(name, "fail", f"cannot read offsets: {first_line(exc)}"))
            continue
        checks.append(judged(name, rules.topic(partitions, lag_max), "kafka"))
    return checks


def diagnose_bronze_load(settings: Settings) -> list[Check]:
    """Runbook issue 2: 'Bronze load fails' (psycopg2 errors, connection refused)."""
    pg, conn = check_postgres(settings)
    checks = [pg]
    try:
        s3_ok, s3_evidence = RawStore(settings, timeout=1.0, retries=1, read_timeout=1.0).probe()
    except Exception as exc:
        s3_ok, s3_evidence = False, first_line(exc)
    checks.append(
        judged(
            "Object store reachable", rules.service(s3_ok, s3_evidence, "start the s3 service or check BI_S3_ENDPOINT")
        )
    )
    f = settings.file
    names = (
        [f"Schema {f.bronze_schema}"]
        + [f"Table {f.bronze_schema}.{t.bronze_table}" for t in settings.tables]
        + [f"Table {f.meta_schema}.ingest_checkpoint"]
    )
    if conn is None:
        return checks + [skipped(n, "PostgreSQL is unreachable") for n in names]
    try:
        ok = probes.schema_exists(conn, f.bronze_schema)
        checks.append(
            Check(names[0], "pass" if ok else "fail", "exists" if ok else "schema does not exist", fix=CREATE_BRONZE)
        )
        for table in settings.tables:
            name = f"Table {f.bronze_schema}.{table.bronze_table}"
            if probes.relation_exists(conn, f.bronze_schema, table.bronze_table):
                rows = probes.row_count(conn, f.bronze_schema, table.bronze_table)
                checks.append(Check(name, "pass", f"exists, {rows} row(s)"))
            else:
                checks.append(Check(name, "fail", "table does not exist", fix=CREATE_BRONZE))
        ok = probes.relation_exists(conn, f.meta_schema, "ingest_checkpoint")
        checks.append(
            Check(names[-1], "pass" if ok else "fail", "exists" if ok else "table does not exist", fix=CREATE_BRONZE)
        )
        checks += _raw_zone_checks(settings, conn, reachable=s3_ok)
        checks += _intake_checks(settings)
    finally:
        conn.close()
    return checks


def _intake_checks(settings: Settings) -> list[Check]:
    """Messages ingest quarantined and rows load rejected: events that are not in bronze."""
    thresholds = settings.file.thresholds
    checks = []
    for table in settings.tables:
        try:
            quarantined, rejected = probes.intake_summaries(settings, table)
        except Exception as exc:  # a probe reports, it never raises
            checks.append(Check(f"Quarantine and rejects {table.name}", "fail", f"cannot read: {first_line(exc)}"))
            continue
        checks.append(
            judged(f"Quarantine {table.name}", rules.quarantined(quarantined, thresholds.quarantined_max), "intake")
        )
        checks.append(
            judged(f"Rejected rows {table.name}", rules.rejected(rejected, thresholds.rejected_max), "intake")
        )
    return checks


def _raw_zone_checks(settings: Settings, conn: connection, *, reachable: bool) -> list[Check]:
    """Every object the manifest says was loaded is still in the raw zone: the next full
    refresh rebuilds bronze from it."""
    checks = []
    for table in settings.tables:
        name = f"Raw zone {table.name} matches the manifest"
        if not reachable:
            checks.append(skipped(name, "the object store is unreachable"))
            continue
        try:
            audit = probes.raw_zone_audit(settings, table, conn)
        except Exception as exc:  # a probe reports, it never raises
            checks.append(Check(name, "fail", f"cannot compare: {first_line(exc)}"))
            continue
        checks.append(judged(name, rules.raw_zone(audit, settings.s3_bucket), "raw_zone"))
    return checks


def diagnose_dbt(settings: Settings, *, run_debug: bool = True) -> list[Check]:
    """Runbook issue 3: 'dbt run fails'. Runs `dbt debug` (a few seconds) unless run_debug=False."""
    pg, conn = check_postgres(settings)
    checks = [pg]
    f = settings.file
    relations = []
    for table in settings.tables:
        relations += [
            (f"Source {f.bronze_schema}.{table.bronze_table}", f.bronze_schema, table.bronze_table),
            (f"View {f.staging_schema}.{table.staging_relation}", f.staging_schema, table.staging_relation),
        ]
        if table.marts_relation is not None:  # a table with staging only has no marts to look for
            relations.append((f"Table {f.marts_schema}.{table.marts_relation}", f.marts_schema, table.marts_relation))
    if conn is None:
        checks += [skipped(name, "PostgreSQL is unreachable") for name, _, _ in relations]
    else:
        try:
            for name, schema, relation in relations:
                if probes.relation_exists(conn, schema, relation):
                    checks.append(Check(name, "pass", "exists"))
                elif schema == f.bronze_schema:
                    checks.append(Check(name, "fail", "does not exist", fix=CREATE_BRONZE))
                else:  # dbt builds it: a missing model is what the dbt run is for
                    checks.append(Check(name, "warn", "does not exist", fix="rerun dbt with debug logging"))
        finally:
            conn.close()
    if run_debug:
        try:
            result = debug_in_child(settings)
            lines = [ln for ln in (result.output or "").splitlines() if ln.strip()]
            wanted = [ln.strip() for ln in lines if "OK" in ln or "ERROR" in ln or "All checks" in ln]
            evidence = "; ".join(wanted[-6:]) or (result.error or "no output")
            checks.append(
                Check(
                    "dbt debug",
                    "pass" if result.success else "fail",
                    evidence,
                    fix="read the dbt debug output; check BI_PG_* settings",
                )
            )
        except Exception as exc:
            checks.append(Check("dbt debug", "fail", f"dbt debug could not run: {first_line(exc)}"))
    return checks


def diagnose_stale_bi(settings: Settings) -> list[Check]:
    """Runbook issue 4: 'Superset shows stale data' (pipeline/checks/stale_bi.py)."""
    configured, evidence = probes.superset_configured(settings)
    if not configured:
        return [Check("Superset configured", "warn", evidence, fix="`bi-console stack up --with superset`")]
    return diagnose_stale(settings)


DIAGNOSES: dict[str, Callable[..., list[Check]]] = {
    "no_cdc_events": lambda settings, runtime=None: diagnose_no_cdc_events(settings, runtime),
    "bronze_load": lambda settings, runtime=None: diagnose_bronze_load(settings),
    "dbt": lambda settings, runtime=None: diagnose_dbt(settings),
    "stale_bi": lambda settings, runtime=None: diagnose_stale_bi(settings),
}
