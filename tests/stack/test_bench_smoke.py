"""Issue 8: a small run of the benchmark harness (10,000 events) on its own embedded stack.

Checks that the harness runs every step and writes the table and the JSON with sane
numbers. It does not assert any speed: benchmarks are not part of pass/fail.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import REPO

EVENTS = 10_000


def test_bench_harness_smoke(tmp_path):
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--events",
            str(EVENTS),
            "--no-readme",
            "--output",
            str(output),
            "--min-free-gib",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        cwd=REPO,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    report = json.loads(output.read_text())
    assert report["machine"]["cores"] >= 1 and report["command"].startswith("python -m bench")
    (size,) = report["sizes"]
    assert size["events"] == EVENTS and not size.get("error")
    assert size["produce"]["topic_events"] == EVENTS

    steps = size["steps"]  # the full refresh's own steps, each measured inside it
    assert set(steps) == {"ingest", "load", "transform", "test", "validate"}
    assert steps["ingest"]["events"] == EVENTS and steps["ingest"]["quarantined"] == 0
    assert steps["load"]["inserted"] == EVENTS
    for name, step in steps.items():
        assert step["state"] == "ok" and step["within"] == "full refresh", (name, step)
        assert step["cpu_seconds"] > 0, (name, step)
    assert size["ceilings"]["broker"]["events"] == EVENTS  # the whole topic: fewer than the cap
    assert size["ceilings"]["s3"]["events"] == EVENTS  # the same two objects, stored again
    assert size["ceilings"]["postgres"]["rows"] == EVENTS  # two objects of 5,000, under the cap
    assert size["runbook"]["step3_load"]["rows"] == EVENTS
    assert size["runbook"]["step2_copy"]["events"] == EVENTS
    assert size["full_refresh"]["success"] and size["incremental_refresh"]["success"]
    assert set(size["full_refresh"]["steps"]) >= {"ingest", "load", "transform", "test", "validate"}
    assert size["bronze_rows"] == EVENTS + 10_000  # the incremental added 10,000 events
    assert size["active_products"] > 100

    rows = size["rows"]
    expected = {
        "ingest",
        "load (bronze)",
        "transform",
        "test",
        "validate",
        "runbook step 3 loader",
        "runbook step 2 copy",
        "ceiling: broker alone",
        "ceiling: S3 server alone",
        "ceiling: PostgreSQL alone",
        "full refresh (end to end)",
        "incremental refresh (+10k)",
    }
    assert expected <= set(rows)
    for name in expected:
        row = rows[name]
        assert 0 < row["seconds"] < 1500, (name, row)
        assert row["rate_per_s"] > 0, (name, row)
        assert 20 < row["peak_rss_mb"] < 4000, (name, row)  # the step's own process, in MB
    assert size["ratios"]["load_vs_runbook_step3"] > 0 and size["ratios"]["ingest_vs_runbook_step2"] > 0
    assert size["ratios"]["ingest_of_broker_ceiling"] > 0 and size["ratios"]["load_of_postgres_ceiling"] > 0
    assert size["targets"]["ingest events/s"]["service_ceiling"] == rows["ceiling: broker alone"]["rate_per_s"]
    assert {"ingest events/s", "load rows/s", "incremental +10k s"} <= set(size["targets"])
    floor = size["ingest_cpu_floor"]  # the broker's and S3's own work per event, next to ingest's
    assert floor["broker_us_per_event"] > 0 and floor["s3_us_per_event"] > 0
    assert floor["floor_us_per_event"] == pytest.approx(
        floor["broker_us_per_event"] + floor["s3_us_per_event"], abs=0.11
    )
    assert floor["ingest_us_per_event"] > 0 and floor["floor_max_events_per_s"] > 0

    table = result.stdout
    for name in expected:
        assert f"| {name} |" in table
    assert "Ratios (rate over rate)" in table and "Targets:" in table and "Ingest CPU per event" in table
