"""Issue 21: bench/tables.py at a toy size (2 tables × 200 events against 1 × 400), each case
on its own embedded stack. Checks that every table is added, refreshed and counted; it does
not assert any speed: benchmarks are not part of pass/fail."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

STEPS = {"ingest", "load", "transform", "test", "validate"}


def test_bench_tables_smoke(tmp_path):
    output = tmp_path / "tables.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.tables",
            "--tables",
            "2",
            "--events-per-table",
            "200",
            "--no-readme",
            "--output",
            str(output),
            "--min-free-gib",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    report = json.loads(output.read_text())
    assert report["kind"] == "tables" and report["command"].startswith("python -m bench.tables")
    many, one = report["many"], report["one"]
    assert (many["tables"], many["events_per_table"], many["events"]) == (2, 200, 400)
    assert (one["tables"], one["events_per_table"], one["events"]) == (1, 400, 400)
    for case in (many, one):
        refresh = case["full_refresh"]
        assert refresh["success"] and set(refresh["steps"]) == STEPS
        steps = refresh["steps"]
        assert steps["ingest"]["runs"] == case["tables"]  # a per-table step: once per table
        assert steps["load"]["runs"] == case["tables"] and steps["validate"]["runs"] == case["tables"]
        assert steps["transform"]["runs"] == 1 and steps["test"]["runs"] == 1
        assert steps["ingest"]["events"] == case["events"] and steps["ingest"]["quarantined"] == 0
        assert steps["load"]["inserted"] == case["events"]
        assert case["bronze_rows"] == case["events"]
        for name, step in steps.items():
            assert step["state"] == "ok" and step["cpu_seconds"] > 0, (name, step)
    # B's one history starts with A's 2 × 120 snapshot products; the changes after it are as
    # many, drawn from one random stream instead of two, so staging ends with about as many rows.
    assert (many["products_per_table"], one["products_per_table"]) == (120, 240)
    assert many["staging_rows"] > 240 and abs(one["staging_rows"] - many["staging_rows"]) <= 25
    # Case A's two contract suites against case B's one.
    assert many["full_refresh"]["steps"]["validate"]["suites"] == 2
    assert one["full_refresh"]["steps"]["validate"]["suites"] == 1
    overhead = report["overhead"]
    assert set(overhead) == STEPS | {"total"}
    total = overhead["total"]
    assert total["many_seconds"] == round(many["full_refresh"]["seconds"], 2)
    assert total["per_table_seconds"] == round(
        (many["full_refresh"]["seconds"] - one["full_refresh"]["seconds"]) / 1, 3
    )
    assert "| transform |" in result.stdout and "Each table beyond the first adds" in result.stdout
