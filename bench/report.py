"""python -m bench.report [--check]: bench/README.md's figures, rendered from the committed runs.

Every number between the README's results markers comes from a JSON in bench/results/, so a
figure in the README is a figure of a run someone can open. `--check` exits 1 when the README
differs from what the committed JSONs render (tests/unit/test_bench_report.py runs the same
comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import harness

README = Path(__file__).with_name("README.md")


def load_results(directory: Path = harness.RESULTS) -> list[tuple[str, dict]]:
    """(file name, report) of every committed run, in name order."""
    return [(path.name, json.loads(path.read_text())) for path in sorted(directory.glob("*.json"))]


def _row(size: dict, name: str) -> dict | None:
    return size.get("rows", {}).get(name)


def _rate(row: dict) -> str:
    return f"{row['rate_per_s']:,} {row['unit']}/s"


def summary(size: dict) -> list[str]:
    """The sentences that state one size's figures."""
    sentences = []
    load, step3 = _row(size, "load (bronze)"), _row(size, "runbook step 3 loader")
    if load and step3:
        if load["work"] == step3["work"]:
            rows = f"on the same {load['work']:,} rows"
        else:  # a --runbook-max-events cap: rates compared at different sizes
            rows = f"on different row counts (ours {load['work']:,}, the runbook's {step3['work']:,})"
        sentences.append(
            f"Load against the runbook's Step 3 loader, {rows}, each into an empty table: ours {_rate(load)}, "
            f"the runbook's {_rate(step3)}, {load['rate_per_s'] / step3['rate_per_s']:.1f}x."
        )
    ingest, step2 = _row(size, "ingest"), _row(size, "runbook step 2 copy")
    if ingest and step2:
        sentences.append(
            f"Ingest against the reimplemented Step 2 copy (an approximation, see above), "
            f"{ingest['work']:,} events ours, {step2['work']:,} that copy's: ours {_rate(ingest)}, that copy {_rate(step2)}, "
            f"{ingest['rate_per_s'] / step2['rate_per_s']:.1f}x."
        )
    full = _row(size, "full refresh (end to end)")
    if full:
        sentences.append(f"Full refresh of {full['work']:,} events: {full['seconds']:.1f} s ({full['note']}).")
    incremental = _row(size, "incremental refresh (+10k)")
    if incremental:
        sentences.append(
            f"Incremental refresh of {incremental['work']:,} new events on top: "
            f"{incremental['seconds']:.1f} s ({incremental['note']})."
        )
    ceiling = _row(size, "ceiling: PostgreSQL alone")
    if load and ceiling:
        sentences.append(
            f"PostgreSQL alone, fed rows built beforehand, stored {_rate(ceiling)}; "
            f"load's rate over that: {load['rate_per_s'] / ceiling['rate_per_s']:.2f}x."
        )
    sentences.append(f"Load average {size.get('uptime_before')} before the run and {size.get('uptime_after')} after.")
    return sentences


def _case(case: dict) -> str:
    return f"{case['tables']} × {case['events_per_table']:,}"


def _cpu_note(case: dict, step: str) -> str:
    """A step's own CPU and the services' CPU in one case of bench/tables.py."""
    measured = case["full_refresh"]["steps"][step]
    names = {"postgres": "PostgreSQL", "kafka": "broker", "s3": "S3"}
    services = ", ".join(
        f"{names.get(k, k)} {v:.1f}" for k, v in (measured.get("service_cpu_seconds") or {}).items() if v >= 0.05
    )
    return f"own CPU {measured.get('cpu_seconds', 0):.1f} s" + (f", {services}" if services else "")


def format_tables(report: dict) -> str:
    """bench/tables.py's run: many tables against one, per step, and each table's overhead."""
    many, one, overhead = report["many"], report["one"], report["overhead"]
    total = overhead["total"]
    share = total["per_table_seconds"] * (many["tables"] - one["tables"]) / total["many_seconds"]
    lines = [
        f"Full refresh of {many['events']:,} events over {many['tables']} tables: {total['many_seconds']:.1f} s; "
        f"over one table: {total['one_seconds']:.1f} s. Each table beyond the first adds "
        f"{total['per_table_seconds']:.2f} s ({share:.0%} of the {many['tables']} tables' refresh is per-table overhead).",
        "",
        f"| step | {_case(many)} s | {_case(one)} s | per extra table s | {_case(many)} µs/event | "
        f"{_case(one)} µs/event | {_case(many)}: CPU s | {_case(one)}: CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, row in overhead.items():
        cpu = ("", "") if name == "total" else (_cpu_note(many, name), _cpu_note(one, name))
        lines.append(
            f"| {name} | {row['many_seconds']:.2f} | {row['one_seconds']:.2f} | {row['per_table_seconds']:.3f} | "
            f"{row['many_us_per_event']} | {row['one_us_per_event']} | {cpu[0]} | {cpu[1]} |"
        )
    lines.append("")
    for case in (many, one):
        lines.append(
            f"{_case(case)}: {case['products_per_table']:,} products in each topic's snapshot, "
            f"{case['bronze_rows']:,} bronze rows, {case['staging_rows']:,} staging rows; {case['tables']} table(s) added in "
            f"{case['table_add_seconds']:.1f} s, events produced in {case['produce_seconds']:.1f} s (outside the refresh); "
            f"load average {case['uptime_before']} before, {case['uptime_after']} after; "
            f"lowest free memory {case['memory_lowest_available_gib']} GiB."
        )
    return "\n".join(lines)


def _latency_row(label: str, entry: dict) -> str:
    services = ", ".join(f"{k} {v:.0f}" for k, v in sorted(entry["services_cpu_seconds"].items()))
    return (
        f"| {label} | {entry['changes_per_second']:,} | {entry['changes']:,} | {entry['p50_seconds']:.2f} | "
        f"{entry['p95_seconds']:.2f} | {entry['max_seconds']:.2f} | {entry['runner_cpu_share_of_one_core']:.0%} | "
        f"{services} |"
    )


def format_continuous(report: dict) -> str:
    """bench/continuous.py's run: source commit → marts at steady rates, and the catch-up."""
    lines = [
        f"Bronze held {report['backlog']:,} backlog events before the rates; the runner caught up with that "
        f"backlog in {report['catch_up_seconds']:.0f} s ({report['catch_up_cpu_seconds']:.0f} CPU s of its own). "
        f"Each rate ran {report['seconds_per_rate']:.0f} s.",
        "",
        "| mode | changes/s | changes | p50 s | p95 s | max s | runner CPU (one core) | services CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for entry in report["rates"].values():
        lines.append(_latency_row("`bi-console run`", entry))
    if report.get("watch_every_1s"):
        lines.append(_latency_row("`watch --every 1s`", report["watch_every_1s"]))
    return "\n".join(lines)


def render_block(results: list[tuple[str, dict]]) -> str:
    lines = [
        harness.README_START,
        "<!-- generated by `python -m bench.report` from bench/results/*.json: "
        "edit the JSONs' runs, not this block -->",
        "",
    ]
    for name, report in results:
        machine = report["machine"]
        lines += [f"### `bench/results/{name}`: {machine['date']}, `{report['command']}`", ""]
        lines += [
            f"Machine: {machine['cores']} cores ({machine['cpu']}), {machine['ram_gib']} GiB RAM, "
            f"Python {machine['python']}, {machine['platform']}.",
            "",
        ]
        if report.get("note"):
            lines += [f"Conditions: {report['note']}", ""]
        if report.get("kind") == "continuous" or "rates" in report:
            lines += [format_continuous(report), ""]
            continue
        if report.get("kind") == "tables":
            lines += [format_tables(report), "", f"Whole run: {report['total_seconds']:.0f} s.", ""]
            continue
        for size in report["sizes"]:
            lines += [" ".join(summary(size)), ""]
        lines += [harness.format_table(report).replace("\n### ", "\n#### ").replace("### ", "#### ", 1), ""]
        lines += [f"Whole run: {report['total_seconds']:.0f} s.", ""]
    lines.append(harness.README_END)
    return "\n".join(lines)


def render_readme(text: str, results: list[tuple[str, dict]]) -> str:
    """text with its results block replaced by the one the results render."""
    head, rest = text.split(harness.README_START, 1)
    tail = rest.split(harness.README_END, 1)[1]
    return head + render_block(results) + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if bench/README.md is not what the JSONs render")
    args = parser.parse_args(argv)
    text = README.read_text()
    rendered = render_readme(text, load_results())
    if args.check:
        if rendered != text:
            print(
                "bench/README.md differs from `python -m bench.report`'s rendering of bench/results/*.json",
                file=sys.stderr,
            )
            return 1
        return 0
    README.write_text(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
