"""The check engine's model and rules on hand-written figures (no stack): each rule
passes on good figures and fails or warns on bad ones, with the numbers in its evidence."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pipeline.checks import rules
from pipeline.checks.model import Check
from pipeline.checks.probes import MartsProfile, SourceState, TopicAccount
from pipeline.config import TableProfile, Thresholds

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_a_check_refuses_the_old_boolean_form():
    with pytest.raises(ValueError, match="status False"):
        Check("x", False, "evidence")  # type: ignore[arg-type]
    assert Check("x", "skip", "not checked").ok is None and Check("x", "warn", "e").severity == "warning"
    assert Check("x", "pass", "e", fix="never shown").fix == ""


def test_freshness_compares_the_source_with_the_marts():
    fresh = rules.freshness(
        SourceState(115, NOW - timedelta(minutes=5)), NOW - timedelta(minutes=4), "source_timestamp", 60
    )
    assert fresh.status == "pass" and "0.0 min behind (max 60)" in fresh.evidence
    stale = rules.freshness(SourceState(115, NOW), NOW - timedelta(minutes=90), "source_timestamp", 60)
    assert stale.status == "fail" and "90.0 min behind (max 60)" in stale.evidence
    assert rules.freshness(SourceState(115, NOW), None, "source_timestamp", 60).status == "fail"
    assert rules.freshness(SourceState(115, None), NOW, "source_timestamp", 60).status == "warn"


def test_source_and_topic_reconciliation():
    assert rules.source_reconciliation(SourceState(115, None), 115).status == "pass"
    short = rules.source_reconciliation(SourceState(115, None), 112)
    assert short.status == "fail" and "source 115 active row(s), marts 112 (differ by -3)" in short.evidence
    assert rules.topic_reconciliation(TopicAccount(100, 97, 1, 1, 1, 0)).status == "pass"
    lost = rules.topic_reconciliation(TopicAccount(100, 96, 1, 1, 1, 0))
    assert lost.status == "fail" and "+1 event(s) unaccounted for" in lost.evidence


PRODUCTION = TableProfile(
    value_shares={"supplier_name": {"SEM1": 0.4348, "SABO": 0.3565}},
    true_shares={"has_analogue": 0.6696},
    filled_shares={"source_amg_code": 1.0},
    ranges={"weight": (0.0, 0.35)},
)


def test_profile_within_tolerance_passes():
    observed = MartsProfile(
        115,
        value_shares={"supplier_name": {"SEM1": 0.40, "SABO": 0.38, "WBR0": 0.05}},
        true_shares={"has_analogue": 0.70},
        filled_shares={"source_amg_code": 0.98},
        ranges={"weight": (0.05, 0.36)},
    )
    verdict = rules.profile(PRODUCTION, observed, Thresholds())
    assert verdict.status == "pass" and verdict.evidence.startswith("5/5 figures within tolerance"), verdict


def test_profile_drift_warns_with_the_numbers():
    observed = MartsProfile(
        200,
        value_shares={"supplier_name": {"SEM1": 0.20, "SABO": 0.36}},
        true_shares={"has_analogue": 0.30},
        filled_shares={"source_amg_code": 0.5},
        ranges={"weight": (0.0, 25.0)},
    )
    verdict = rules.profile(PRODUCTION, observed, Thresholds())
    assert verdict.status == "warn", verdict
    for part in (
        "1/5 figures within tolerance",
        "supplier_name=SEM1 20.0% vs production 43.5%",
        "has_analogue true 30.0% vs production 67.0%",
        "source_amg_code filled 50.0% vs production 100.0%",
        "weight range 0..25 vs production 0..0.35",
    ):
        assert part in verdict.evidence, verdict.evidence
    loose = Thresholds(profile_share_tolerance=0.5, profile_range_tolerance=100)
    assert rules.profile(PRODUCTION, observed, loose).status == "pass"


def test_a_table_without_a_suite_is_not_covered():
    from pipeline.config import load_file_config

    measure_unit = next(t for t in load_file_config(None).tables if t.name == "measure_unit")
    assert measure_unit.suites == ["measure_unit_marts"]  # every shipped table has a suite
    verdict = rules.not_covered(measure_unit.model_copy(update={"suites": []}))
    assert verdict.status == "warn" and verdict.evidence.startswith("not covered")
