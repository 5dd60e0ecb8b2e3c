"""bench/README.md's figures are the committed runs' (bench/report.py)."""

from __future__ import annotations

import copy

from bench import report


def test_the_committed_readme_is_what_the_committed_results_render():
    results = report.load_results()
    assert results, "no committed run under bench/results/"
    text = report.README.read_text()
    assert report.render_readme(text, results) == text, "run `python -m bench.report` and commit bench/README.md"


def test_a_changed_figure_in_a_result_changes_the_readme():
    results = report.load_results()
    text = report.README.read_text()
    changed = copy.deepcopy(results)
    load = changed[0][1]["sizes"][0]["rows"]["load (bronze)"]
    load["rate_per_s"] += 1
    assert report.render_readme(text, changed) != text


def test_the_runbook_comparison_states_the_row_counts():
    size = {
        "rows": {
            "load (bronze)": {"work": 100_000, "unit": "rows", "rate_per_s": 5_000},
            "runbook step 3 loader": {"work": 50_000, "unit": "rows", "rate_per_s": 1_000},
        },
        "uptime_before": "1.0",
        "uptime_after": "2.0",
    }
    (sentence, _) = report.summary(size)
    assert sentence == (
        "Load against the runbook's Step 3 loader, on different row counts (ours 100,000, "
        "the runbook's 50,000), each into an empty table: ours 5,000 rows/s, "
        "the runbook's 1,000 rows/s, 5.0x."
    )


def _case(tables: int, events_per_table: int, seconds: dict[str, float], total: float) -> dict:
    steps = {
        name: {"seconds": s, "cpu_seconds": s / 2, "service_cpu_seconds": {"postgres": 0.5, "kafka": 0.01}}
        for name, s in seconds.items()
    }
    return {
        "tables": tables,
        "events_per_table": events_per_table,
        "events": tables * events_per_table,
        "bronze_rows": tables * events_per_table,
        "staging_rows": 150,
        "products_per_table": 60,
        "table_add_seconds": 1.5,
        "produce_seconds": 2.0,
        "uptime_before": "1.00 1.00 1.00",
        "uptime_after": "2.00 2.00 2.00",
        "memory_lowest_available_gib": 20.0,
        "full_refresh": {"seconds": total, "steps": steps},
    }


def test_the_tables_run_renders_each_tables_overhead():
    from bench.tables import per_table_overhead

    seconds = {"ingest": 30.0, "load": 10.0, "transform": 20.0, "test": 8.0, "validate": 40.0}
    many = _case(3, 100, seconds, 110.0)
    one = _case(1, 300, {**seconds, "ingest": 10.0, "transform": 12.0, "validate": 10.0}, 52.0)
    overhead = per_table_overhead(many, one)
    # (A - B) / 2 extra tables, by hand: ingest (30 - 10) / 2, transform (20 - 12) / 2, total (110 - 52) / 2.
    assert overhead["ingest"]["per_table_seconds"] == 10.0
    assert overhead["transform"]["per_table_seconds"] == 4.0
    assert overhead["load"]["per_table_seconds"] == 0.0
    assert overhead["total"]["per_table_seconds"] == 29.0
    assert overhead["total"]["many_us_per_event"] == 366_666.7  # 110 s / 300 events
    report_data = {
        "kind": "tables",
        "command": "python -m bench.tables --tables 3 --events-per-table 100",
        "machine": {
            "date": "2026-12-04 19:00 UTC",
            "cores": 2,
            "cpu": "x",
            "ram_gib": 8,
            "python": "3.11",
            "platform": "p",
        },
        "note": "a quiet machine",
        "many": many,
        "one": one,
        "overhead": overhead,
        "total_seconds": 200.0,
    }
    lines = report.format_tables(report_data).splitlines()
    assert lines[0] == (
        "Full refresh of 300 events over 3 tables: 110.0 s; over one table: 52.0 s. Each table beyond the "
        "first adds 29.00 s (53% of the 3 tables' refresh is per-table overhead)."
    )
    assert lines[4].startswith(
        "| ingest | 30.00 | 10.00 | 10.000 | 100000.0 | 33333.3 | own CPU 15.0 s, PostgreSQL 0.5 | "
    )
    block = report.render_block([("tables.json", report_data)])
    assert "### `bench/results/tables.json`: 2026-12-04 19:00 UTC, `python -m bench.tables" in block
    assert "Conditions: a quiet machine" in block and lines[0] in block
