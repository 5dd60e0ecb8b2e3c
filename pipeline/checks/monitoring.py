"""The runbook's monitoring section as checks: service health, connector state, topic
end offsets and ingest lag, layer reconciliation, dbt tests, Great Expectations suites,
freshness, active rows, coverage and business-flag shares.

Each check gives a status (pass, warn, fail) and its evidence. `--check` prints them;
a failing service marks the run as unreachable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from psycopg2 import sql

from pipeline.config import Settings, TableConfig

Log = Callable[[str], None]


@dataclass
class CheckResult:
    name: str
    status: str  # pass | warn | fail
    evidence: str
    category: str
    duration: float = 0.0
    service: str | None = None  # set on service checks: a failure there means "unreachable"

    def as_dict(self) -> dict:
        return asdict(self)


class _Collector:
    def __init__(self, log: Log):
        self.results: list[CheckResult] = []
        self.log = log

    def run(self, name: str, category: str, body: Callable[[], tuple[str, str]], service: str | None = None):
        started = time.monotonic()
        try:
            status, evidence = body()
        except Exception as exc:  # a check that cannot run is a failed check, with the reason
            status, evidence = "fail", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        result = CheckResult(name, status, evidence, category, time.monotonic() - started, service)
        self.results.append(result)
        self.log(f"{status.upper():4} {name}: {evidence}")
        return result


def _service_checks(settings: Settings, c: _Collector) -> bool:
    """Each probe's evidence on failure is one line that names the setting to fix
    (BI_PG_PASSWORD, BI_KAFKA_BOOTSTRAP, BI_S3_ENDPOINT, ...): `--check` prints it as is."""
    from pipeline.config import ConfigError
    from pipeline.stores.db import ServiceUnreachable
    from pipeline.stores.kafka import probe_broker
    from pipeline.runtime import pgserver
    from pipeline.stores.storage import RawStore

    probes = {
        "postgres": lambda: pgserver.probe(settings),
        "kafka": lambda: probe_broker(settings, timeout=2.0),
        "s3": lambda: RawStore(settings, timeout=2.0, retries=1, read_timeout=2.0).probe(),
    }
    healthy = True
    for name, probe in probes.items():
        def body(probe=probe):
            try:
                ok, evidence = probe()
            except (ServiceUnreachable, ConfigError) as exc:  # already one line naming the setting
                return "fail", str(exc)
            return ("pass" if ok else "fail"), evidence

        healthy &= c.run(f"service:{name}", "services", body, service=name).status == "pass"
    _restart_loop_checks(settings, c)
    return healthy


def _connector_check(settings: Settings, c: _Collector) -> None:
    from pipeline.runtime.select import connector_for

    def body():
        status = connector_for(settings).status()
        state = status.effective_state
        evidence = f"{status.name} {status.summary}; {status.events_captured or 0} events captured"
        if state == "FAILED" and not status.last_error:
            evidence += ": no trace"
        # A retrying connector captures nothing until its error is fixed: as much a failure as FAILED.
        if state in ("FAILED", "RETRYING"):
            return "fail", evidence
        return ("pass" if state == "RUNNING" else "warn"), evidence

    c.run("connector", "connector", body, service="cdc")


def _restart_loop_checks(settings: Settings, c: _Collector) -> None:
    """A service the runtime sees in a restart loop (a compose container crashing over and
    over) fails a check of its own; the probes alone may catch it between two crashes."""
    from pipeline.runtime.model import RuntimeUnavailable
    from pipeline.runtime.select import select_runtime

    try:
        statuses = select_runtime(settings).status_all()
    except RuntimeUnavailable as exc:
        reason = str(exc)  # `exc` is unbound once the except clause ends
        c.run("services:runtime", "services", lambda: ("fail", reason))
        return
    for status in statuses:
        if status.state == "restarting":
            c.run(f"service:{status.name}:restarts", "services", lambda s=status: ("fail", s.health_detail))


def _topic_checks(settings: Settings, table: TableConfig, conn, c: _Collector) -> None:
    from pipeline.stores.kafka import topic_offsets

    def body():
        offsets = topic_offsets(settings, table.topic)
        if offsets is None:
            return "fail", f"topic {table.topic} does not exist"
        end = sum(p.high for p in offsets)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT kafka_partition, next_offset FROM {}.ingest_checkpoint WHERE topic = %s")
                        .format(sql.Identifier(settings.file.meta_schema)), (table.topic,))
            positions = dict(cur.fetchall())
        conn.commit()
        lag = sum(max(0, p.high - positions.get(p.partition, p.low)) for p in offsets)
        evidence = f"end offset {end}, ingest lag {lag}"
        if end == 0:
            return "warn", f"{evidence}: the topic is empty"
        return ("pass" if lag == 0 else "warn"), evidence

    c.run(f"topic:{table.name}", "kafka", body)


def _raw_zone_check(settings: Settings, table: TableConfig, conn, c: _Collector) -> None:
    from pipeline.checks.raw_zone import audit_raw_zone

    def body():
        audit = audit_raw_zone(settings, table, conn)
        conn.commit()
        evidence = audit.evidence(settings.s3_bucket)
        if audit.ok:
            return "pass", evidence
        return "fail", (f"{evidence}; a full refresh would drop their events from bronze: run "
                        "`bi-console raw-zone recover` (or the Troubleshoot fix), which re-reads them from the topic "
                        "while it holds their offsets")

    c.run(f"raw_zone:{table.name}", "raw_zone", body)


def _intake_checks(settings: Settings, table: TableConfig, since: datetime | None, c: _Collector) -> None:
    """Messages ingest quarantined and rows load rejected: data that is not in bronze."""
    from pipeline.steps import quarantine
    thresholds = settings.file.thresholds

    def status(count: int, limit: int) -> str:
        return "pass" if count == 0 else ("warn" if count <= limit else "fail")

    def newest(reason: str | None, at: datetime | None) -> str:
        return f"; newest {at:%Y-%m-%d %H:%M:%S}: {reason}" if reason and at else ""

    def quarantined():
        q = quarantine.summary(settings, table, since)
        evidence = (f"{q.pending} quarantined and not replayed ({q.total} in all, {q.new_since} new since the "
                    f"last check, {q.replayed} replayed, fail above {thresholds.quarantined_max})")
        if q.pending:
            evidence += newest(q.newest_reason, q.newest_at) + "; see `bi-console quarantine list`"
        return status(q.pending, thresholds.quarantined_max), evidence

    def rejected():
        r = quarantine.reject_summary(settings, table, since)
        evidence = (f"{r.total} rejected row(s) ({r.new_since} new since the last check, "
                    f"fail above {thresholds.rejected_max})")
        if r.total:
            evidence += newest(r.newest_reason, r.newest_at) + "; see `bi-console quarantine list`"
        return status(r.total, thresholds.rejected_max), evidence

    c.run(f"quarantine:{table.name}", "intake", quarantined)
    c.run(f"rejects:{table.name}", "intake", rejected)


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


def _count(conn, statement, params=None) -> int | float | None:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        value = cur.fetchone()[0]
    conn.commit()
    return value


def _table_checks(settings: Settings, table: TableConfig, conn, c: _Collector) -> None:
    from pipeline.stores.queries import layer_counts

    def reconciliation():
        counts = {row["layer"]: row["records"] for row in layer_counts(conn, settings.file, table)}
        conn.commit()
        values = list(counts.values())
        bronze_keys, staging_all, staging_active, marts = values[1], values[2], values[3], values[4]
        evidence = ", ".join(f"{k} {v}" for k, v in counts.items())
        if None in (bronze_keys, staging_all, staging_active, marts):
            return "fail", f"a layer is missing: {evidence}"
        ok = bronze_keys == staging_all and staging_active == marts
        return ("pass" if ok else "fail"), evidence

    c.run(f"reconciliation:{table.name}", "reconciliation", reconciliation)
    marts = sql.SQL("{}.{}").format(sql.Identifier(settings.file.marts_schema), sql.Identifier(table.marts_relation))
    thresholds = settings.file.thresholds
    checks = table.checks

    if checks.freshness_column:
        def freshness():
            age = _count(conn, sql.SQL("SELECT extract(epoch FROM now() - max({})) / 60 FROM {}")
                         .format(sql.Identifier(checks.freshness_column), marts))
            if age is None:
                return "fail", "no rows"
            ok = age <= thresholds.freshness_max_age_minutes
            return ("pass" if ok else "fail"), (f"newest {checks.freshness_column} is {age:.1f} min old "
                                                f"(max {thresholds.freshness_max_age_minutes:g})")

        c.run(f"freshness:{table.name}", "freshness", freshness)

    if checks.min_active_rows:
        def active_rows():
            rows = _count(conn, sql.SQL("SELECT count(*) FROM {}").format(marts))
            ok = rows >= thresholds.min_active_products
            return ("pass" if ok else "fail"), f"{rows} rows (min {thresholds.min_active_products})"

        c.run(f"active_rows:{table.name}", "volume", active_rows)

    if checks.coverage_column and checks.coverage_value is not None:
        def coverage():
            share = _count(conn, sql.SQL("SELECT avg(({} = %s)::int) FROM {}")
                           .format(sql.Identifier(checks.coverage_column), marts), (checks.coverage_value,))
            if share is None:
                return "fail", "no rows"
            ok = float(share) >= thresholds.min_multilingual_coverage
            return ("pass" if ok else "fail"), (f"{float(share):.1%} {checks.coverage_value} "
                                                f"(min {thresholds.min_multilingual_coverage:.0%})")

        c.run(f"coverage:{table.name}", "coverage", coverage)

    for flag in checks.flag_shares:
        def share(flag=flag):
            value = _count(conn, sql.SQL("SELECT avg({}::int) FROM {}").format(sql.Identifier(flag), marts))
            low, high = thresholds.share_bounds(flag)
            if value is None:
                return "warn", "no rows"
            ok = low <= float(value) <= high
            return ("pass" if ok else "warn"), f"{float(value):.1%} true (expected {low:.0%}..{high:.0%})"

        c.run(f"flag_share:{table.name}.{flag}", "business_flags", share)


def run_checks(settings: Settings, *, log: Log = lambda line: None, include_dbt: bool = True,
               include_gx: bool = True) -> list[CheckResult]:
    from pipeline.stores.db import connect

    c = _Collector(log)
    started_at = datetime.now(timezone.utc)
    if not _service_checks(settings, c):
        return c.results  # nothing else can be judged while a service is down
    _connector_check(settings, c)
    since = _previous_check_time(settings)
    conn = connect(settings)
    try:
        for table in settings.tables:
            _topic_checks(settings, table, conn, c)
            _raw_zone_check(settings, table, conn, c)
            _intake_checks(settings, table, since, c)
            _table_checks(settings, table, conn, c)
    finally:
        conn.close()
    _record_check_time(settings, started_at)
    if include_dbt:
        def dbt_tests():
            from pipeline.steps.transform import DbtProject

            selector = " ".join(t.dbt_selector for t in settings.tables)
            result = DbtProject(settings).test(selector, within_selection=True)
            counts = ", ".join(f"{k} {v}" for k, v in result.counts.items())
            if result.success:
                return "pass", counts
            failed = ", ".join(n.name for n in result.failed) or (result.error or "").splitlines()[0]
            return "fail", f"{counts}; failing: {failed}"

        c.run("dbt_tests", "dbt", dbt_tests)
    if include_gx:
        from pipeline.steps.validate import run_validation

        for table in settings.tables:
            if not table.suites:
                continue
            result = run_validation(settings, table, build_docs=False)
            for suite in result.suites:
                def body(suite=suite):
                    if suite.error:
                        return "fail", suite.error
                    failed = [f"{e.type}({e.column or e.check}) observed {e.observed_value}" for e in suite.failed]
                    warned = [f"{e.type}({e.column or e.check}) observed {e.observed_value}" for e in suite.warnings]
                    passed = sum(e.success for e in suite.expectations)
                    evidence = f"{passed}/{len(suite.expectations)} expectations"
                    if failed:
                        return "fail", f"{evidence}; failed: {'; '.join(failed)}"
                    if warned:
                        return "warn", f"{evidence}; warnings: {'; '.join(warned)}"
                    return "pass", evidence

                c.run(f"gx:{suite.name}", "great_expectations", body)
    return c.results
