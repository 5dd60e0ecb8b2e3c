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
