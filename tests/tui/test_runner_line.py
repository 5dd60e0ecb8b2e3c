"""Issue 20: the Pipeline view's line of the continuous runner, from hand-written heartbeats."""

from __future__ import annotations

from pipeline.stores.runner_state import Heartbeat
from tui.pipeline_view import runner_text


def beat(state: str, age: float, **detail) -> Heartbeat:
    return Heartbeat(77, "etl-1", "2026-12-04 10:00:00+00", "2026-12-04 10:05:00+00", age, state, detail)


def test_no_runner_says_how_to_start_one():
    assert runner_text(None, 30, "c").plain == "continuous off · c starts `bi-console run`"


def test_a_stale_heartbeat_is_shown_dead():
    assert (
        runner_text(beat("running", 75, tables={}), 30, "c").plain
        == "continuous DEAD: no heartbeat for 75s · c starts it"
    )


def test_a_running_runner_shows_each_tables_lag_and_what_waits():
    detail = {
        "tables": {
            "product": {
                "source_to_marts": {"events": 120, "seconds": 2.25},
                "topic_to_raw": {"events": 100, "seconds": 2.25},
                "raw_to_bronze": {"events": 0, "seconds": 0.0},
                "bronze_to_marts": {"events": 20, "seconds": 1.0},
            },
            "measure_unit": {"source_to_marts": {"events": 0, "seconds": 0.0}},
        },
        "latency": {"p95": 1.84},
        "stages": {"load": {"error": "S3 away"}, "ingest": {"error": None}},
    }
    assert runner_text(beat("running", 1, **detail), 30, "c").plain == (
        "continuous running pid 77 · behind the source: product 2.2s (topic 100, bronze 20 waiting); "
        "measure_unit 0.0s · commit→marts p95 1.8s · retrying load · c stops it"
    )
