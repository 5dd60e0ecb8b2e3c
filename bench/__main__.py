"""python -m bench --events N | --scaling  (see bench/README.md)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from bench import harness
from bench import report as bench_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--events", type=int, help="run one size")
    group.add_argument("--scaling", action="store_true", help="run 100k, 300k and 1M (linearity)")
    parser.add_argument("--sizes", help="comma-separated sizes for --scaling (default 100000,300000,1000000)")
    parser.add_argument("--output", type=Path, default=harness.RESULTS / "latest.json", help="JSON results file")
    parser.add_argument("--no-readme", action="store_true", help="do not update bench/README.md")
    parser.add_argument(
        "--note",
        default="",
        help="the conditions of the run (what else the machine ran), kept in the JSON and shown with its figures",
    )
    parser.add_argument(
        "--runbook-max-events",
        type=int,
        default=harness.DEFAULT_RUNBOOK_MAX_EVENTS,
        help="cap the runbook's Step 2/3 at this many events (rates are compared; 0: no cap; "
        "default %(default)s: the runbook's way runs at ~2k rows/s)",
    )
    parser.add_argument(
        "--phases",
        default=",".join(harness.PHASES),
        help="phases after produce: " + ", ".join(harness.PHASES + harness.OPTIONAL_PHASES) + " (default: %(default)s)",
    )
    parser.add_argument("--skip-runbook", action="store_true", help="do not run the runbook's way")
    parser.add_argument(
        "--min-free-gib",
        type=float,
        default=2.5,
        help="stop the run when the machine's available memory falls below this",
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="write pyinstrument profiles of ingest and load into this directory"
    )
    parser.add_argument(
        "--compression",
        default="auto",
        choices=["auto", "none", "lz4", "zstd", "gzip", "snappy"],
        help="producer compression; auto: none (Kafka Connect's default) below "
        f"{harness.COMPRESS_FROM_EVENTS:,} events, lz4 from there on, because this "
        "broker build keeps topics in memory (1M plain events would take ~11 GB)",
    )
    args = parser.parse_args(argv)

    sizes = [args.events] if args.events else [int(s) for s in (args.sizes or "100000,300000,1000000").split(",")]
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    report = {"command": command, "machine": harness.machine(), "note": args.note, "sizes": []}
    started = time.monotonic()
    for size in sizes:
        result = harness.run_size(
            size,
            log=lambda line: print(line, file=sys.stderr, flush=True),
            runbook_max_events=args.runbook_max_events or None,
            skip_runbook=args.skip_runbook,
            min_available_gib=args.min_free_gib,
            profile_dir=args.profile,
            compression=harness.compression_for(size, args.compression),
            phases={p.strip() for p in args.phases.split(",") if p.strip()},
        )
        report["sizes"].append(result)
        if result.get("error") and "memory guard" in result["error"]:
            break
    if len(report["sizes"]) > 1:
        report["linearity"] = harness.linearity(report["sizes"])
    report["total_seconds"] = round(time.monotonic() - started, 1)
    table = harness.format_table(report)
    print(table)
    print(f"total {report['total_seconds']:.0f}s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if not args.no_readme:
        bench_report.main([])  # renders the runs under bench/results/: this one when --output is there
    return 1 if any(r.get("error") for r in report["sizes"]) else 0


if __name__ == "__main__":
    sys.exit(main())
