"""python -m bench.tables: what a table costs on its own (issue 21).

A full refresh of many small tables against one large table of the same shape and the same
number of events, each case on a fresh embedded stack (bench/harness.py's):

  * case A: `--tables` tables (default 30) of `--events-per-table` events (default 10,000);
  * case B: one table of tables × events-per-table events (300,000).

Every table is a copy of Product's shape under its own name (t01, t02, ...): its source
table dbo.T01 (Product's DDL, pipeline/demo/contract/concord_product.sqlserver.sql, renamed),
topic, raw prefix, bronze table, source contract and staging models, written by `table add`'s
own code (plan_table_add/apply_table_add) into a temporary config file and a temporary copy
of the dbt project (BI_CONFIG_FILE, BI_DBT_PROJECT_DIR). Staging only, each validated by its
generated contract suite, so both cases do the same work per event and differ only in how
many tables it is spread over. Per step (ingest, load, transform, test, validate) and in
total: each case's wall time, µs per event, and the per-table overhead
(A's time - B's time) / (A's tables - B's tables).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench import harness
from bench import report as bench_report
from bench.producer import PRODUCTS, Generator, produce

PRODUCT_DDL = harness.REPO / "pipeline" / "demo" / "contract" / "concord_product.sqlserver.sql"
STEPS = ("ingest", "load", "transform", "test", "validate")
_PRODUCT_TABLE = re.compile(r"\bCREATE TABLE dbo\.Product\b")


def table_names(count: int) -> list[str]:
    return [f"t{i:02d}" for i in range(1, count + 1)]


def add_tables(root: Path, names: list[str]) -> dict[str, Path]:
    """A config file and a copy of the dbt project holding `names`, each a copy of Product's
    shape added by `table add --from-ddl`; the settings that point a stack at them."""
    from pipeline.orchestration.table_add import apply_table_add, plan_table_add

    dbt_dir = root / "dbt"
    shutil.copytree(harness.REPO / "dbt", dbt_dir, ignore=shutil.ignore_patterns("target", "logs"))
    config_file = root / "bi-console.toml"
    # Its [[tables]] replace the shipped ones: the run refreshes these tables and no others.
    config_file.write_text("# bench/tables.py: tables added by `table add`'s code\n", encoding="utf-8")
    product_ddl = PRODUCT_DDL.read_text(encoding="utf-8")
    for name in names:
        ddl, renamed = _PRODUCT_TABLE.subn(f"CREATE TABLE dbo.{name.upper()}", product_ddl, count=1)
        if not renamed:
            raise RuntimeError(f"{PRODUCT_DDL}: no 'CREATE TABLE dbo.Product' to rename")
        ddl_file = root / "ddl" / f"{name.upper()}.sql"
        ddl_file.parent.mkdir(parents=True, exist_ok=True)
        ddl_file.write_text(ddl, encoding="utf-8")
        # Fresh settings per table: a Settings reads its config file once.
        settings = harness.bench_settings(root / "plan", config_file=config_file)
        apply_table_add(plan_table_add(settings, name, ddl_file=ddl_file, dbt_dir=dbt_dir))
    return {"config_file": config_file, "dbt_project_dir": dbt_dir}


def snapshot_size(events: int, products: int = PRODUCTS) -> int:
    """The products a history of `events` events of at most `products` products starts with
    (bench/producer.py's snapshot)."""
    return min(products, max(1, int(events * 0.6)))


def run_case(
    tables: int, events_per_table: int, *, products: int = PRODUCTS, log=print, min_available_gib: float = 2.5
) -> dict:
    """One case on a fresh stack: its tables added, their events produced (each topic a history
    of `products` products at most), one full refresh timed."""
    from pipeline.stores.kafka import ensure_topic, topic_event_count

    names = table_names(tables)
    label = f"{tables} × {events_per_table:,} events"
    result: dict = {
        "tables": tables,
        "events_per_table": events_per_table,
        "events": tables * events_per_table,
        "products_per_table": snapshot_size(events_per_table, products),
        "uptime_before": harness._loadavg(),
    }
    project = Path(tempfile.mkdtemp(prefix="bi-bench-tables-"))
    try:
        started = time.monotonic()
        overrides = add_tables(project, names)
        result["table_add_seconds"] = round(time.monotonic() - started, 2)
        log(f"== {label}: table(s) added in {result['table_add_seconds']:.1f}s; starting the embedded stack")
        stack = harness.Stack.start(log, **overrides)
        guard = harness.MemoryGuard(stack.runtime, min_available_gib, log)
        guard.start()
        try:
            produce_seconds = 0.0
            for name in names:
                table = stack.settings.table(name)
                ensure_topic(stack.settings, table.topic)
                produced = produce(
                    stack.settings.kafka_bootstrap,
                    Generator(table.topic, source_table=table.source_table, products=products),
                    events_per_table,
                    log=lambda line: None,
                )
                held = topic_event_count(stack.settings, table.topic)
                if held != events_per_table:
                    raise RuntimeError(f"topic {table.topic} holds {held} events, {events_per_table} were produced")
                produce_seconds += produced["seconds"]
            result["produce_seconds"] = round(produce_seconds, 2)
            log(f"   produced {result['events']:,} events to {tables} topics in {produce_seconds:.1f}s")
            refresh = harness.run_child(stack, "refresh", {"mode": "full", "tables": names}, guard)
            if not refresh["success"]:
                raise RuntimeError(f"full refresh failed: {refresh.get('error')}")
            result["full_refresh"] = refresh
            result["bronze_rows"] = sum(
                harness._scalar(stack, f"SELECT count(*) FROM {stack.settings.file.bronze_schema}.{t.bronze_table}")
                for t in (stack.settings.table(n) for n in names)
            )
            result["staging_rows"] = sum(
                harness._scalar(
                    stack, f"SELECT count(*) FROM {stack.settings.file.staging_schema}.{t.staging_relation}"
                )
                for t in (stack.settings.table(n) for n in names)
            )
            steps = ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in refresh["steps"].items())
            log(f"   full refresh {refresh['seconds']:.1f}s ({steps})")
        finally:
            guard.stop_event.set()
            guard.join(timeout=5)
            result["memory_lowest_available_gib"] = round(guard.lowest_available / harness.GiB, 1)
            stack.stop()
    finally:
        shutil.rmtree(project, ignore_errors=True)
        result["uptime_after"] = harness._loadavg()
    return result


def per_table_overhead(many: dict, one: dict) -> dict:
    """Per step and in total: each case's seconds and µs per event, and what each table beyond
    the first adds, (many's seconds - one's) / (many's tables - one's)."""
    extra_tables = many["tables"] - one["tables"]
    rows = {}
    for name in (*STEPS, "total"):
        seconds = {}
        for key, case in (("many", many), ("one", one)):
            refresh = case["full_refresh"]
            seconds[key] = refresh["seconds"] if name == "total" else refresh["steps"][name]["seconds"]
        rows[name] = {
            "many_seconds": round(seconds["many"], 2),
            "one_seconds": round(seconds["one"], 2),
            "many_us_per_event": round(seconds["many"] / many["events"] * 1e6, 1),
            "one_us_per_event": round(seconds["one"] / one["events"] * 1e6, 1),
            "per_table_seconds": round((seconds["many"] - seconds["one"]) / extra_tables, 3),
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tables", description=__doc__)
    parser.add_argument("--tables", type=int, default=30, help="case A's tables (default %(default)s)")
    parser.add_argument(
        "--events-per-table", type=int, default=10_000, help="case A's events per table (default %(default)s)"
    )
    parser.add_argument(
        "--output", type=Path, default=harness.RESULTS / "tables.json", help="JSON results file (default %(default)s)"
    )
    parser.add_argument("--no-readme", action="store_true", help="do not update bench/README.md")
    parser.add_argument("--note", default="", help="the conditions of the run (what else the machine ran)")
    parser.add_argument("--min-free-gib", type=float, default=2.5, help="stop when available memory falls below this")
    args = parser.parse_args(argv)
    if args.tables < 2:
        parser.error("--tables: at least 2 (the overhead is the difference to one table)")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    command = "python -m bench.tables " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    report: dict = {
        "kind": "tables",
        "command": command,
        "machine": harness.machine(),
        "note": args.note,
        "memory_available_before_gib": round(psutil.virtual_memory().available / harness.GiB, 1),
    }
    started = time.monotonic()
    report["many"] = run_case(args.tables, args.events_per_table, log=log, min_available_gib=args.min_free_gib)
    # One table with A's events and A's snapshot products, then as many changes (the same shares,
    # from one random stream instead of A's), so its staging ends with about as many rows as A's.
    report["one"] = run_case(
        1,
        args.tables * args.events_per_table,
        products=args.tables * snapshot_size(args.events_per_table),
        log=log,
        min_available_gib=args.min_free_gib,
    )
    report["overhead"] = per_table_overhead(report["many"], report["one"])
    report["total_seconds"] = round(time.monotonic() - started, 1)
    print(bench_report.format_tables(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if not args.no_readme:
        bench_report.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
