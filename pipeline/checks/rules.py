"""Each rule of the checks, once: a rule judges what a probe read and returns a Verdict
(status, evidence, fix). `--check`, the Troubleshoot panels and the Quality view name
the verdicts and show them; none of them judges on its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.checks.model import Verdict, first_line
from pipeline.checks.probes import LayerCounts, MartsProfile, PartitionLag, SourceColumns, SourceState, TopicAccount
from pipeline.checks.raw_zone import RawZoneAudit
from pipeline.config import TableConfig, TableProfile, Thresholds
from pipeline.config.contracts import SourceContract, expected_json_kinds
from pipeline.runtime.model import ConnectorStatus
from pipeline.steps.quarantine import QuarantineSummary, RejectSummary
from pipeline.steps.validate import SuiteOutcome
from pipeline.stores.runner_state import Heartbeat


def _bounded(count: int, limit: int) -> str:
    """0 passes, up to the limit warns, above it fails."""
    return "pass" if count == 0 else ("warn" if count <= limit else "fail")


def service(healthy: bool, evidence: str, fix: str = "") -> Verdict:
    return Verdict("pass" if healthy else "fail", evidence, "" if healthy else fix)


CONNECTOR_FIXES = {
    "FAILED": "restart the connector",
    "PAUSED": "resume the connector",
    "RETRYING": "fix the error it retries (its source database?); it resumes by itself",
    "STOPPED": "start the cdc service",
}


def connector_state(status: ConnectorStatus) -> Verdict:
    """RUNNING passes. FAILED fails, and so does RETRYING: a retrying connector captures
    nothing until its error is fixed. Any other state (PAUSED, STOPPED, UNASSIGNED) warns."""
    state = status.effective_state
    evidence = f"{status.name}: {state}"
    if state == "RETRYING" and status.retry_attempt is not None:
        evidence += f" (attempt #{status.retry_attempt} of {status.retry_limit or 'infinity'})"
    if status.tasks:
        evidence += " (tasks: " + ", ".join(f"{t.id} {t.state}" for t in status.tasks) + ")"
    evidence += f", {status.events_captured or 0} events captured"
    if state != "RUNNING":
        evidence += (
            f"; {first_line(status.last_error)}" if status.last_error else (": no trace" if state == "FAILED" else "")
        )
    if state == "RUNNING":
        return Verdict("pass", evidence)
    fix = CONNECTOR_FIXES.get(state, "restart the connector (start the cdc service)")
    return Verdict("fail" if state in ("FAILED", "RETRYING") else "warn", evidence, fix)


def topic(partitions: list[PartitionLag] | None, lag_max: int) -> Verdict:
    """The topic exists and holds events; events not ingested yet warn, above lag_max fail."""
    if partitions is None:
        return Verdict(
            "fail",
            "topic does not exist (no event was ever captured)",
            "check the connector captures the source table; restart the connector",
        )
    end = sum(p.end for p in partitions)
    events = sum(p.end - p.low for p in partitions)
    # Never ingested: everything the topic still holds is lag.
    lag = sum(p.lag if p.lag is not None else p.end - p.low for p in partitions)
    evidence = f"exists, {len(partitions)} partition(s), end offset {end}, {events} event(s), ingest lag {lag}"
    if events == 0:
        return Verdict("warn", f"{evidence}: the topic is empty", "is the connector RUNNING?")
    status = _bounded(lag, lag_max)
    return Verdict(
        status,
        evidence + ("" if status == "pass" else f" (fail above {lag_max})"),
        "" if status == "pass" else "run a refresh (ingest reads what the topic holds)",
    )


def reconciliation(counts: LayerCounts) -> Verdict:
    """Distinct keys in bronze = rows in staging, and active rows in staging = rows in the marts."""
    figures = counts.figures()
    evidence = ", ".join(f"{layer} {value}" for layer, value in figures)
    if not counts.marts_modelled:
        evidence += ", marts not modelled"
    if None in [value for _, value in figures[1:]]:
        return Verdict("fail", f"a layer is missing: {evidence}", "run a refresh (transform builds the layers)")
    if counts.mismatches():
        return Verdict("fail", evidence, "run `bi-console refresh --full` to rebuild staging and the marts")
    return Verdict("pass", evidence)


def source_reconciliation(source: SourceState, marts_rows: int | None, layer: str = "marts") -> Verdict:
    """Active rows at the source = rows in the marts (in staging, `layer`, for a table whose
    marts are not modelled)."""
    evidence = f"source {source.active_rows} active row(s), {layer} {marts_rows}"
    if marts_rows is None:
        return Verdict("fail", f"{evidence}: the {layer} relation does not exist", "run a refresh")
    if source.active_rows != marts_rows:
        return Verdict(
            "fail",
            f"{evidence} (differ by {marts_rows - source.active_rows:+d})",
            "run a refresh; if they still differ, `bi-console refresh --full`",
        )
    return Verdict("pass", evidence)


def topic_reconciliation(account: TopicAccount) -> Verdict:
    """Topic end offsets = bronze rows + quarantined + rejected + not ingested yet."""
    accounted = account.bronze + account.quarantined + account.rejected + account.not_ingested
    evidence = (
        f"end offsets {account.end} vs bronze {account.bronze} + quarantined {account.quarantined} "
        f"+ rejected {account.rejected} + not ingested {account.not_ingested} = {accounted}"
        + (f" (epoch {account.epoch})" if account.epoch else "")
    )
    if accounted != account.end:
        return Verdict(
            "fail",
            f"{evidence}: {account.end - accounted:+d} event(s) unaccounted for",
            "`bi-console refresh --full` re-reads the topic into bronze",
        )
    return Verdict("pass", evidence)


def _clock(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else "none"


def freshness(source: SourceState, marts_latest: datetime | None, column: str, max_minutes: float) -> Verdict:
    """How far the marts' newest source commit time trails the source's latest change."""
    if source.latest_change is None:
        return Verdict(
            "warn", "the source has no modified time to compare (no row, or no source_modified_column configured)"
        )
    if marts_latest is None:
        return Verdict(
            "fail", f"source changed {_clock(source.latest_change)}, the marts hold no {column}", "run a refresh"
        )
    behind = max(0.0, (source.latest_change - marts_latest).total_seconds() / 60)
    evidence = (
        f"source's latest change {_clock(source.latest_change)}, marts' newest {column} "
        f"{_clock(marts_latest)}: {behind:.1f} min behind (max {max_minutes:g})"
    )
    if behind > max_minutes:
        return Verdict("fail", evidence, "is the connector RUNNING? then run a refresh")
    return Verdict("pass", evidence)


def raw_zone(audit: RawZoneAudit, bucket: str) -> Verdict:
    evidence = audit.evidence(bucket)
    if audit.ok:
        return Verdict("pass", evidence)
    return Verdict(
        "fail",
        f"{evidence}; a full refresh would drop their events from bronze",
        "run `bi-console raw-zone recover` (or the Troubleshoot fix), which re-reads them from the "
        "topic while it holds their offsets",
    )


def _newest(reason: str | None, at: datetime | None) -> str:
    return f"; newest {at:%Y-%m-%d %H:%M:%S}: {reason}" if reason and at else ""


def quarantined(summary: QuarantineSummary, limit: int) -> Verdict:
    evidence = (
        f"{summary.pending} quarantined and not replayed ({summary.total} in all, {summary.new_since} new "
        f"since the last check, {summary.replayed} replayed, fail above {limit})"
    )
    if summary.pending:
        evidence += _newest(summary.newest_reason, summary.newest_at) + "; see `bi-console quarantine list`"
    return Verdict(
        _bounded(summary.pending, limit),
        evidence,
        "`bi-console quarantine list` shows each with its reason; fix the cause, then `bi-console quarantine replay`",
    )


def rejected(summary: RejectSummary, limit: int) -> Verdict:
    evidence = f"{summary.total} rejected row(s) ({summary.new_since} new since the last check, fail above {limit})"
    if summary.total:
        evidence += _newest(summary.newest_reason, summary.newest_at) + "; see `bi-console quarantine list`"
    return Verdict(
        _bounded(summary.total, limit),
        evidence,
        "`bi-console quarantine list` shows each with its offset and PostgreSQL's reason",
    )


def gx_suite(suite: SuiteOutcome) -> Verdict:
    """A Great Expectations suite: failed error expectations fail it, failed warnings warn."""
    if suite.error:
        return Verdict("fail", suite.error, "run the transform, then validate again")
    failed = [e.summary for e in suite.failed]
    warned = [e.summary for e in suite.warnings]
    evidence = f"{sum(e.success for e in suite.expectations)}/{len(suite.expectations)} expectations"
    if failed:
        return Verdict("fail", f"{evidence}; failed: {'; '.join(failed)}", "the Quality view lists each expectation")
    if warned:
        return Verdict("warn", f"{evidence}; warnings: {'; '.join(warned)}")
    return Verdict("pass", evidence)


def not_modelled(table: TableConfig) -> Verdict:
    """A check of the marts, on a table with staging only."""
    return Verdict("skip", f"not modelled: {table.name} has staging only (no marts_relation)")


def not_covered(table: TableConfig) -> Verdict:
    """A table without a suite is not validated: never reported as a success."""
    return Verdict(
        "warn",
        f"not covered: {table.name} has no Great Expectations suite",
        "add a suite in expectations/ and name it in the table's `suites`, or give the table a source "
        "contract (`bi-console table add`)",
    )


def active_rows(rows: int, minimum: int) -> Verdict:
    return Verdict("pass" if rows >= minimum else "fail", f"{rows} rows (min {minimum})")


def coverage(share: float | None, value: str, minimum: float) -> Verdict:
    if share is None:
        return Verdict("fail", "no rows")
    return Verdict("pass" if share >= minimum else "fail", f"{share:.1%} {value} (min {minimum:.0%})")


def flag_share(share: float | None, low: float, high: float) -> Verdict:
    if share is None:
        return Verdict("warn", "no rows")
    return Verdict("pass" if low <= share <= high else "warn", f"{share:.1%} true (expected {low:.0%}..{high:.0%})")


def _share(value: float | None) -> str:
    return "none" if value is None else f"{value:.1%}"


def profile(expected: TableProfile, observed: MartsProfile, thresholds: Thresholds) -> Verdict:
    """The marts against production's profile: each share within profile_share_tolerance,
    each range within profile_range_tolerance of its width. Drift warns, with the numbers."""
    tolerance = thresholds.profile_share_tolerance
    drift: list[str] = []
    compared = 0

    def share(label: str, want: float, got: float | None) -> None:
        nonlocal compared
        compared += 1
        if got is None or abs(got - want) > tolerance:
            drift.append(f"{label} {_share(got)} vs production {_share(want)}")

    for column, wanted in expected.value_shares.items():
        shares = observed.value_shares.get(column, {})
        for value, want in wanted.items():
            share(f"{column}={value}", want, shares.get(value, 0.0) if observed.rows else None)
    for column, want in expected.true_shares.items():
        share(f"{column} true", want, observed.true_shares.get(column))
    for column, want in expected.filled_shares.items():
        share(f"{column} filled", want, observed.filled_shares.get(column))
    for column, (low, high) in expected.ranges.items():
        compared += 1
        got_low, got_high = observed.ranges.get(column, (None, None))
        margin = thresholds.profile_range_tolerance * (high - low)
        if got_low is None or got_high is None or got_low < low - margin or got_high > high + margin:
            shown = "no values" if got_low is None else f"{got_low:g}..{got_high:g}"
            drift.append(f"{column} range {shown} vs production {low:g}..{high:g}")
    summary = (
        f"{compared - len(drift)}/{compared} figures within tolerance of production "
        f"(shares ±{tolerance:.0%}) over {observed.rows} rows"
    )
    if drift:
        return Verdict(
            "warn",
            f"{summary}; drift: {'; '.join(drift)}",
            "compare with the source: is the data what production holds?",
        )
    return Verdict("pass", summary)


def _names(columns: list[str]) -> str:
    return ", ".join(columns[:5]) + (f" and {len(columns) - 5} more" if len(columns) > 5 else "")


def source_schema(contract: SourceContract, seen: SourceColumns, contract_file: str) -> Verdict:
    """The source's columns now (its newest events) against its contract. A column added or
    dropped at the source warns, with what to do; one that arrives as another JSON kind than
    its contract's type fails, since staging cannot decode it."""
    if not seen.kinds:
        return Verdict("pass", "no events in bronze yet: nothing to compare with the contract")
    listed = {c.source_column: c for c in contract.columns}
    added = sorted(set(seen.kinds) - set(listed))
    dropped = sorted(set(listed) - seen.newest)
    retyped = []
    for name, column in listed.items():
        expected = expected_json_kinds(column.source_type)
        arriving = seen.kinds.get(name, set())
        if expected is not None and arriving - expected:
            retyped.append(f"{name} arrives as {'/'.join(sorted(arriving))}, the contract says {column.source_type}")
    findings = []
    fixes = []
    if retyped:
        findings.append("retyped: " + "; ".join(retyped))
        fixes.append(f"write the new type into {contract_file} and run a full refresh")
    if added:
        findings.append(f"added at the source, not in the contract: {_names(added)} (staging carries them as text)")
        fixes.append(f"add them with their SQL Server types to {contract_file}")
    if dropped:
        findings.append(f"in the contract, absent from the newest event: {_names(dropped)} (dropped at the source)")
        fixes.append(
            "staging keeps them, NULL for new events; take them out of the contract once no dashboard reads them"
        )
    if not findings:
        return Verdict("pass", f"{len(listed)} columns, as the contract lists them")
    return Verdict("fail" if retyped else "warn", "; ".join(findings), "; ".join(fixes))


def _lag_text(stages: dict[str, dict[str, Any]]) -> str:
    names = {
        "source_to_topic": "source→topic",
        "topic_to_raw": "topic→raw",
        "raw_to_bronze": "raw→bronze",
        "bronze_to_marts": "bronze→marts",
    }
    parts = []
    for key, label in names.items():
        stage = stages.get(key, {})
        events, seconds = stage.get("events"), stage.get("seconds")
        parts.append(f"{label} {'?' if events is None else events} ev/{'?' if seconds is None else f'{seconds:.1f}s'}")
    return ", ".join(parts)


def runner_alive(beat: Heartbeat | None, timeout_seconds: float) -> Verdict:
    """The continuous runner's heartbeat: absent is no runner (skip), stale is a dead one (fail)."""
    if beat is None:
        return Verdict("skip", "no continuous runner has run against this database (`bi-console run` starts one)")
    where = f"pid {beat.pid} on {beat.host}"
    if beat.state == "stopped":
        return Verdict(
            "warn", f"the continuous runner ({where}) was stopped at {beat.beat_at}", "`bi-console run` starts it"
        )
    if beat.age_seconds > timeout_seconds:
        return Verdict(
            "fail",
            f"the continuous runner ({where}, {beat.state}) last beat {beat.age_seconds:.0f}s ago "
            f"(timeout {timeout_seconds:g}s): it died or hangs",
            "restart it: `bi-console run` (the compose service and the systemd unit restart it themselves)",
        )
    failing = [f"{name}: {s.get('error')}" for name, s in beat.detail.get("stages", {}).items() if s.get("error")]
    evidence = f"the continuous runner ({where}) is {beat.state}, last beat {beat.age_seconds:.0f}s ago"
    if beat.state == "paused":
        paused_for = beat.detail.get("paused_for") or {}
        evidence += f" for refresh {paused_for.get('run_id', '?')}"
    if failing:
        return Verdict("warn", f"{evidence}; retrying: {'; '.join(failing)[:500]}", "see the runner's log")
    return Verdict("pass", evidence)


def runner_freshness(beat: Heartbeat, table: str, objective_seconds: float) -> Verdict:
    """How far, while the runner runs, the table's marts trail the newest source commit."""
    stages = beat.detail.get("tables", {}).get(table)
    if stages is None:
        return Verdict("skip", f"the continuous runner does not run {table}")
    behind = float(stages.get("source_to_marts", {}).get("seconds") or 0.0)
    evidence = f"marts {behind:.1f}s behind the source (objective {objective_seconds:g}s): {_lag_text(stages)}"
    if behind > objective_seconds:
        return Verdict(
            "fail",
            evidence,
            "look for the stage with the most events waiting; the runner's log names a failing one",
        )
    return Verdict("pass", evidence)


def runner_quality(beat: Heartbeat) -> Verdict:
    """The runner's last dbt tests and Great Expectations run (its slow cadence)."""
    outcome = beat.detail.get("stages", {}).get("validate", {}).get("result") or {}
    if not outcome:
        return Verdict("skip", "the continuous runner has not validated yet (every [runner] validate_every_seconds)")
    failed = outcome.get("failed") or []
    if failed:
        return Verdict(
            "fail",
            "; ".join(f"{f.get('step')}: {str(f.get('error'))[:300]}" for f in failed),
            "see the Quality view; fix the data or the model, the runner validates again after the next change",
        )
    return Verdict("pass", f"dbt tests and Great Expectations passed (run {outcome.get('run_id', '?')})")
