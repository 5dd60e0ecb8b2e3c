"""The runbook's monitoring section as checks, for `--check`: service health, connector
state, topic end offsets and ingest lag, reconciliation (layers, source, topic), the raw
zone, intake, freshness against the source, volume, coverage, business-flag shares, the
production profile, dbt tests and Great Expectations suites.

The probes are pipeline/checks/probes.py, the rules pipeline/checks/rules.py; this module
names the checks and orders them. A failing service marks the run as unreachable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from psycopg2 import sql
from psycopg2.extensions import connection

from pipeline.checks import probes, rules
from pipeline.checks.model import Check, Verdict, measure
from pipeline.config import ConfigError, Settings, TableConfig
from pipeline.config.contracts import contract_path, find_contract
from pipeline.process.log_sink import Log
from pipeline.runtime.model import RuntimeUnavailable, ServiceStatus
from pipeline.steps.contract_suite import suite_names
from pipeline.steps.quarantine import QuarantineSummary, RejectSummary
from pipeline.steps.transform import DbtProject
from pipeline.steps.validate import SuiteOutcome, run_validation
from pipeline.stores.db import ServiceUnreachable, connect
from pipeline.stores.runner_state import Heartbeat, read_heartbeat

T = TypeVar("T")


class Collector:
    def __init__(self, log: Log = lambda line: None):
        self.results: list[Check] = []
        self.log = log

    def run(self, name: str, category: str, body: Callable[[], Verdict], service: str | None = None) -> Check:
        check = measure(name, category, body, service)
        self.results.append(check)
        self.log(f"{check.status.upper():4} {name}: {check.evidence}")
        return check


def _service_checks(settings: Settings, c: Collector) -> bool:
    healthy = True
    for name, probe in probes.service_probes(settings).items():

        def body(probe: Callable[[], tuple[bool, str]] = probe) -> Verdict:
            try:
                return rules.service(*probe())
            except (ServiceUnreachable, ConfigError) as exc:  # already one line naming the setting
                return Verdict("fail", str(exc))

        healthy &= c.run(f"service:{name}", "services", body, service=name).status == "pass"
    _restart_loop_checks(settings, c)
    return healthy


def _restart_loop_checks(settings: Settings, c: Collector) -> None:
    """A service the runtime sees in a restart loop (a compose container crashing over and
    over) fails a check of its own; the probes alone may catch it between two crashes."""
    try:
        restarting = probes.restarting_services(settings)
    except RuntimeUnavailable as exc:
        reason = str(exc)  # `exc` is unbound once the except clause ends
        c.run("services:runtime", "services", lambda: Verdict("fail", reason))
        return
    for status in restarting:

        def restart_loop(looping: ServiceStatus = status) -> Verdict:
            return Verdict("fail", looping.health_detail)

        c.run(f"service:{status.name}:restarts", "services", restart_loop)


def _last_check_path(settings: Settings) -> Path:
    return Path(settings.data_dir) / "last-check.json"


def _previous_check_time(settings: Settings) -> datetime | None:
    try:
        return datetime.fromisoformat(json.loads(_last_check_path(settings).read_text())["started_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record_check_time(settings: Settings, started_at: datetime) -> None:
    path = _last_check_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"started_at": started_at.isoformat()}))
        tmp.replace(path)
    except OSError:
        pass  # "new since the last check" then counts from an older check: nothing is hidden


def _committed(conn: connection, read: Callable[[], T]) -> T:
    """Run a read and end its transaction, so that one check's error does not abort the next."""
    try:
        return read()
    finally:
        conn.rollback()


def table_checks(
    settings: Settings,
    table: TableConfig,
    conn: connection,
    c: Collector,
    *,
    since: datetime | None = None,
    with_topic: bool = True,
) -> None:
    """Every check of one table that reads the stack's data (not dbt, not GX)."""
    thresholds = settings.file.thresholds
    partitions: list[probes.PartitionLag] | None = []

    if with_topic:

        def topic() -> Verdict:
            nonlocal partitions
            positions = _committed(conn, lambda: probes.checkpoint_positions(conn, settings))
            partitions = probes.topic_partitions(settings, table.topic, positions)
            return rules.topic(partitions, thresholds.ingest_lag_max_events)

        c.run(f"topic:{table.name}", "kafka", topic)

        def raw_zone() -> Verdict:
            return _committed(
                conn, lambda: rules.raw_zone(probes.raw_zone_audit(settings, table, conn), settings.s3_bucket)
            )

        c.run(f"raw_zone:{table.name}", "raw_zone", raw_zone)

    summaries: list[tuple[QuarantineSummary, RejectSummary]] = []

    def intake() -> tuple[QuarantineSummary, RejectSummary]:
        if not summaries:  # one read of the bookkeeping tables for both checks
            summaries.append(probes.intake_summaries(settings, table, since))
        return summaries[0]

    c.run(f"quarantine:{table.name}", "intake", lambda: rules.quarantined(intake()[0], thresholds.quarantined_max))
    c.run(f"rejects:{table.name}", "intake", lambda: rules.rejected(intake()[1], thresholds.rejected_max))

    layers: list[probes.LayerCounts] = []

    def reconciliation() -> Verdict:
        layers.append(_committed(conn, lambda: probes.layer_counts(conn, settings, table)))
        return rules.reconciliation(layers[0])

    c.run(f"reconciliation:{table.name}", "reconciliation", reconciliation)
    contract = find_contract(settings.dbt_project_dir, table.name)
    if contract is not None:
        contract_file = str(contract_path(settings.dbt_project_dir, table.name))
        c.run(
            f"schema:{table.name}",
            "schema",
            lambda: rules.source_schema(
                contract, _committed(conn, lambda: probes.source_columns_seen(conn, settings, table)), contract_file
            ),
        )
    marts_rows = layers[0].marts if layers else None  # None: the marts relation is missing or unreadable
    modelled = table.marts_relation is not None
    if with_topic and partitions is not None:

        def topic_reconciliation() -> Verdict:
            if not partitions:
                raise RuntimeError("the topic's offsets could not be read")
            return _committed(
                conn, lambda: rules.topic_reconciliation(probes.topic_account(conn, settings, table, partitions))
            )

        c.run(f"reconciliation:{table.name}:topic", "reconciliation", topic_reconciliation)

    checks = table.checks
    source: list[probes.SourceState] = []

    def source_state() -> probes.SourceState:
        if not source:
            source.append(probes.source_state(settings, table))
        return source[0]

    # A table with staging only is reconciled with the source on its active staging rows.
    last_rows, last_layer = (
        (marts_rows, "marts") if modelled else (layers[0].staging_active if layers else None, "staging")
    )
    c.run(
        f"reconciliation:{table.name}:source",
        "reconciliation",
        lambda: rules.source_reconciliation(source_state(), last_rows, last_layer),
    )
    if not modelled:
        marts_checks = [
            f"freshness:{table.name}" if checks.freshness_column else None,
            f"active_rows:{table.name}" if checks.min_active_rows else None,
            f"coverage:{table.name}" if checks.coverage_column else None,
            *(f"flag_share:{table.name}.{flag}" for flag in checks.flag_shares),
            f"profile:{table.name}" if not table.profile.empty else None,
        ]
        for name in filter(None, marts_checks):
            c.run(name, "marts", lambda: rules.not_modelled(table))
        return
    if checks.freshness_column:
        freshness_column: str = checks.freshness_column

        def freshness() -> Verdict:
            latest = (
                _committed(conn, lambda: probes.marts_latest(conn, settings, table, freshness_column))
                if marts_rows is not None
                else None
            )
            return rules.freshness(source_state(), latest, freshness_column, thresholds.freshness_max_age_minutes)

        c.run(f"freshness:{table.name}", "freshness", freshness)

    if checks.min_active_rows:
        c.run(
            f"active_rows:{table.name}",
            "volume",
            lambda: rules.active_rows(marts_rows or 0, thresholds.min_active_products),
        )

    def share(expression: sql.Composable, params: tuple[Any, ...] | None = None) -> float | None:
        return _committed(conn, lambda: probes.marts_share(conn, settings, table, expression, params))

    if checks.coverage_column and checks.coverage_value is not None:
        coverage_column: str = checks.coverage_column
        coverage_value: str = checks.coverage_value
        c.run(
            f"coverage:{table.name}",
            "coverage",
            lambda: rules.coverage(
                share(sql.SQL("{} = %s").format(sql.Identifier(coverage_column)), (coverage_value,)),
                coverage_value,
                thresholds.min_multilingual_coverage,
            ),
        )

    for flag in checks.flag_shares:

        def flag_share(flag: str = flag) -> Verdict:
            return rules.flag_share(share(sql.Identifier(flag)), *thresholds.share_bounds(flag))

        c.run(f"flag_share:{table.name}.{flag}", "business_flags", flag_share)

    if not table.profile.empty:
        c.run(
            f"profile:{table.name}",
            "profile",
            lambda: rules.profile(
                table.profile, _committed(conn, lambda: probes.marts_profile(conn, settings, table)), thresholds
            ),
        )


def gx_checks(settings: Settings, table: TableConfig, c: Collector, *, dbt_dir: Path | None = None) -> None:
    """One check per suite of the table (its contract's suite when it has none configured)."""
    if not suite_names(table, dbt_dir or settings.dbt_project_dir):
        c.run(f"gx:{table.name}", "great_expectations", lambda: rules.not_covered(table))
        return
    result = run_validation(settings, table, build_docs=False, dbt_dir=dbt_dir)
    for suite in result.suites:

        def suite_check(suite: SuiteOutcome = suite) -> Verdict:
            return rules.gx_suite(suite)

        c.run(f"gx:{suite.name}", "great_expectations", suite_check)


def runner_checks(settings: Settings, c: Collector) -> None:
    """The continuous runner: alive, and, while it runs, each table's freshness objective and
    its last quality run."""
    config = settings.file.runner
    beat = read_heartbeat(settings)
    c.run("runner", "runner", lambda: rules.runner_alive(beat, config.heartbeat_timeout_seconds))
    if beat is None or beat.state == "stopped" or beat.age_seconds > config.heartbeat_timeout_seconds:
        return
    running: Heartbeat = beat
    for table in settings.tables:

        def freshness(name: str = table.name) -> Verdict:
            return rules.runner_freshness(running, name, config.freshness_objective_seconds)

        c.run(f"runner_freshness:{table.name}", "runner", freshness)
    c.run("runner_quality", "runner", lambda: rules.runner_quality(running))


def run_checks(
    settings: Settings, *, log: Log = lambda line: None, include_dbt: bool = True, include_gx: bool = True
) -> list[Check]:
    c = Collector(log)
    started_at = datetime.now(timezone.utc)
    if not _service_checks(settings, c):
        return c.results  # nothing else can be judged while a service is down
    c.run("connector", "connector", lambda: rules.connector_state(probes.connector_status(settings)), service="cdc")
    since = _previous_check_time(settings)
    conn = connect(settings)
    try:
        for table in settings.tables:
            table_checks(settings, table, conn, c, since=since)
    finally:
        conn.close()
    _record_check_time(settings, started_at)
    runner_checks(settings, c)
    if include_dbt:

        def dbt_tests() -> Verdict:
            selector = " ".join(t.dbt_selector for t in settings.tables)
            result = DbtProject(settings).test(selector, within_selection=True)
            counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
            if result.success:
                return Verdict("pass", counts)
            failed = ", ".join(n.name for n in result.failed) or (result.error or "").splitlines()[0]
            return Verdict("fail", f"{counts}; failing: {failed}")

        c.run("dbt_tests", "dbt", dbt_tests)
    if include_gx:
        for table in settings.tables:
            gx_checks(settings, table, c)
    return c.results
