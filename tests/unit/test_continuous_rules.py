"""Issue 20: what `--check` says of the continuous runner, from hand-written heartbeats; the
runner's lag arithmetic; its compose service and systemd unit."""

from __future__ import annotations

import configparser

import yaml

from pipeline.checks.rules import runner_alive, runner_freshness, runner_quality
from pipeline.orchestration.continuous import TableProgress, percentile, summary_line
from pipeline.stores.runner_state import Heartbeat
from tests.support import REPO


def beat(state: str = "running", age: float = 1.0, **detail) -> Heartbeat:
    return Heartbeat(4242, "etl-1", "2026-12-04 10:00:00+00", "2026-12-04 10:05:00+00", age, state, detail)


def lagging(seconds: float, events: int) -> dict:
    return {
        "tables": {
            "product": {
                "source_to_topic": {"events": None, "seconds": 0.4},
                "topic_to_raw": {"events": events, "seconds": seconds},
                "raw_to_bronze": {"events": 0, "seconds": 0.0},
                "bronze_to_marts": {"events": 0, "seconds": 0.0},
                "source_to_marts": {"events": events, "seconds": seconds},
            }
        }
    }


def test_no_heartbeat_is_no_runner_not_a_failure():
    assert runner_alive(None, 30).status == "skip"


def test_a_stale_heartbeat_is_a_dead_runner():
    verdict = runner_alive(beat(age=95.0), 30)
    assert verdict.status == "fail"
    assert "pid 4242 on etl-1" in verdict.evidence and "95s ago" in verdict.evidence
    assert "bi-console run" in verdict.fix


def test_a_fresh_heartbeat_passes_and_a_clean_stop_warns():
    assert runner_alive(beat(age=3.0), 30).status == "pass"
    assert runner_alive(beat(state="stopped", age=500.0), 30).status == "warn"


def test_a_failing_stage_is_a_warning_naming_it():
    verdict = runner_alive(beat(stages={"load": {"error": "S3 unreachable"}, "ingest": {"error": None}}), 30)
    assert verdict.status == "warn"
    assert "load: S3 unreachable" in verdict.evidence


def test_freshness_objective_fails_when_the_marts_trail_too_far():
    failing = runner_freshness(beat(**lagging(42.5, 1800)), "product", 10)
    assert failing.status == "fail"
    assert "42.5s behind" in failing.evidence and "topic→raw 1800 ev/42.5s" in failing.evidence
    assert runner_freshness(beat(**lagging(2.0, 30)), "product", 10).status == "pass"
    assert runner_freshness(beat(**lagging(2.0, 30)), "measure_unit", 10).status == "skip"


def test_quality_results_of_the_slow_cadence_fail_the_check():
    failed = {"stages": {"validate": {"result": {"failed": [{"step": "product:validate", "error": "3 rows"}]}}}}
    assert runner_quality(beat(**failed)).status == "fail"
    passed = {"stages": {"validate": {"result": {"failed": [], "run_id": "abc"}}}}
    assert runner_quality(beat(**passed)).status == "pass"
    assert runner_quality(beat()).status == "skip"


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert percentile(values, 0.5) == 10.0
    assert percentile(values, 0.95) == 19.0
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([], 0.5) is None


def test_stage_lags_count_waiting_events_from_the_newest_commit():
    progress = TableProgress(
        topic_end=1000,
        ingested=900,
        topic_commit_ms=100_000,
        topic_ms=100_400,
        unloaded_events=50,
        bronze_commit_ms=99_000,
        untransformed_events=20,
        marts_commit_ms=98_000,
    )
    stages = progress.stages(now=101.0)
    assert stages["topic_to_raw"] == {"events": 100, "seconds": 1.0}
    assert stages["raw_to_bronze"] == {"events": 50, "seconds": 1.0}
    assert stages["bronze_to_marts"] == {"events": 20, "seconds": 2.0}
    assert stages["source_to_marts"] == {"events": 170, "seconds": 3.0}
    assert stages["source_to_topic"] == {"events": None, "seconds": 0.4}
    caught_up = TableProgress(topic_end=1000, ingested=1000, marts_commit_ms=1_000).stages(now=5_000.0)
    assert caught_up["source_to_marts"] == {"events": 0, "seconds": 0.0}


def test_summary_line_names_the_failing_stage():
    line = summary_line(
        {
            "freshness_seconds": 1.5,
            "objective_seconds": 10,
            "latency": {"p50": 1.0, "p95": 2.0, "max": 3.0, "changes": 12},
            "tables": lagging(1.5, 7)["tables"],
            "stages": {"ingest": {"error": "broker away"}},
        }
    )
    assert "p95 2.0s" in line and "7 in topics" in line and "ingest: broker away" in line


def test_the_compose_runner_restarts_itself_and_is_probed():
    doc = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())
    runner = doc["services"]["runner"]
    assert runner["restart"] == "unless-stopped"
    assert runner["command"] == ["bi-console", "run"]
    assert runner["healthcheck"]["test"] == ["CMD", "bi-console", "run", "--probe"]
    # The console service shares the volume that holds the refresh lock, so a manual refresh pauses it.
    shared = "console_data:/home/bi/.local/share/bi-console"
    assert shared in runner["volumes"] and shared in doc["services"]["bi-console"]["volumes"]


def test_the_systemd_unit_runs_the_runner_and_restarts_it():
    unit = configparser.ConfigParser(interpolation=None)
    unit.read(REPO / "compose" / "systemd" / "bi-console-runner.service")
    assert unit["Service"]["ExecStart"].endswith(" run")
    assert unit["Service"]["Restart"] == "always"
    assert unit["Service"]["KillSignal"] == "SIGTERM"
