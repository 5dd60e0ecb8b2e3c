"""Continuous mode's benchmark (issue 20): source commit → visible in the marts, at steady rates.

    python -m bench.continuous --rates 10,100,1000 --seconds 300 --backlog 1000000 \
        --output bench/results/continuous.json --note "what else ran"

On a fresh embedded stack of its own (PostgreSQL, tansu, moto and the real Debezium engine on
the demo source):

1. seed the demo source; `--backlog` contract-shaped events go straight to the Product topic
   (bench/producer.py), so bronze holds a million events;
2. start `bi-console run` as a child process and time the catch-up: until the marts hold the
   newest backlog event (its source.ts_ms);
3. for each rate, commit UPDATEs to the demo source's dbo."Product" at that many rows a
   second (10 transactions a second, each of rate/10 rows) for `--seconds`, while a poller
   reads the marts' newest `source_timestamp` every 50 ms.

Latency of one transaction: the first poll at which the marts' newest source commit time is
at or after the transaction's `clock_timestamp()` taken just before its COMMIT. The pipeline
keeps a table's events in order, so the marts holding a later commit hold this one too; and
the commit record's time (Debezium's source.ts_ms, cut to the millisecond) is at or after
that clock reading cut the same way, so a transaction never counts as visible before it is. The runner's CPU is its process's and its
children's (the quality-check child) user + system time over the phase; the services' CPU
(PostgreSQL, tansu, moto, the cdc engine) is given beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from bench.harness import Stack, machine
from bench.producer import Generator, produce
from pipeline import demo
from pipeline.orchestration.continuous import percentile
from pipeline.runtime.embedded import EmbeddedRuntime
from pipeline.stores.db import connect, connect_source

POLL_SECONDS = 0.05
BACKLOG_FIRST_ID = 50_000_000
TRANSACTIONS_PER_SECOND = 10


def log(line: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


class MartsPoller(threading.Thread):
    """The marts' newest source commit time, every 50 ms: (poll time, newest commit epoch s)."""

    def __init__(self, settings: Any, relation: str):
        super().__init__(daemon=True)
        self.settings, self.relation = settings, relation
        self.samples: list[tuple[float, float]] = []
        self.stop_event = threading.Event()

    def newest(self) -> float | None:
        return self.samples[-1][1] if self.samples else None

    def run(self) -> None:
        conn = None
        while not self.stop_event.is_set():
            try:
                conn = conn or connect(self.settings)
                with conn.cursor() as cur:
                    cur.execute(f"SELECT extract(epoch FROM max(source_timestamp))::float8 FROM {self.relation}")
                    row = cur.fetchone()
                conn.commit()
                if row and row[0] is not None:
                    self.samples.append((time.time(), float(row[0])))
            except psycopg2.Error:
                conn = None  # the table is being created, or PostgreSQL restarts: ask again
            self.stop_event.wait(POLL_SECONDS)


def visible_at(samples: list[tuple[float, float]], committed: float) -> float | None:
    """When the marts first held a commit whose clock read `committed` just before COMMIT:
    Debezium's source.ts_ms is the commit time cut to the millisecond, so the clock is too."""
    floor_ms = math.floor(committed * 1000)
    for polled, newest in samples:
        if round(newest * 1000) >= floor_ms:
            return polled
    return None


def _product_ids(settings: Any) -> list[int]:
    model = demo.demo_model(settings, "product")
    with connect_source(settings) as conn, conn.cursor() as cur:
        cur.execute(f'SELECT "{model.key}" FROM {model.schema}."{model.table}" WHERE NOT "Deleted" ORDER BY 1')
        return [int(r[0]) for r in cur.fetchall()]


def steady_changes(settings: Any, rate: int, seconds: float, ids: list[int]) -> list[float]:
    """Commit `rate` updates a second for `seconds`; the clock reading before each COMMIT."""
    model = demo.demo_model(settings, "product")
    relation = f'{model.schema}."{model.table}"'
    per_transaction = max(1, rate // TRANSACTIONS_PER_SECOND)
    interval = per_transaction / rate
    conn = connect_source(settings)
    cur = conn.cursor()
    commits: list[float] = []
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        due = started + len(commits) * interval
        time.sleep(max(0.0, due - time.monotonic()))
        batch = [ids[(n + i) % len(ids)] for i in range(per_transaction)]
        n += per_transaction
        cur.execute(
            f'UPDATE {relation} SET "Weight" = round((random() * 20)::numeric, 3), '
            f'"Updated" = now()::timestamp WHERE "{model.key}" = ANY(%s)',
            (batch,),
        )
        cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
        commits.append(float(cur.fetchone()[0]))
        conn.commit()
    conn.close()
    return commits


def _cpu_seconds(process: psutil.Process) -> float:
    total = 0.0
    for proc in [process, *process.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += (
                times.user + times.system + getattr(times, "children_user", 0) + getattr(times, "children_system", 0)
            )
        except psutil.Error:
            pass
    return total


def _service_cpu(runtime: EmbeddedRuntime) -> dict[str, float]:
    out = {}
    for service in ("postgres", "kafka", "s3", "cdc"):
        record = runtime.process(service).record()
        proc = record.process() if record else None
        if proc is not None:
            out[service] = _cpu_seconds(proc)
    return out


def _stage_summary(settings: Any) -> dict[str, Any]:
    from pipeline.stores.runner_state import read_heartbeat

    beat = read_heartbeat(settings)
    return beat.detail if beat else {}


def measure_rate(
    settings: Any,
    stack: Stack,
    poller: MartsPoller,
    proc: psutil.Process,
    rate: int,
    seconds: float,
    ids: list[int],
    settle: float = 60.0,
) -> dict[str, Any]:
    time.sleep(3.0)
    poller.samples = poller.samples[-1:]
    cpu_before, services_before = _cpu_seconds(proc), _service_cpu(stack.runtime)
    started = time.time()
    commits = steady_changes(settings, rate, seconds, ids)
    deadline = time.time() + settle
    while visible_at(poller.samples[-1:], commits[-1]) is None and time.time() < deadline:
        time.sleep(0.2)
    wall = time.time() - started
    samples = list(poller.samples)
    latencies = [v - c for c in commits if (v := visible_at(samples, c)) is not None]
    services_after = _service_cpu(stack.runtime)
    cpu = _cpu_seconds(proc) - cpu_before
    entry = {
        "changes_per_second": rate,
        "transactions": len(commits),
        "changes": len(commits) * max(1, rate // TRANSACTIONS_PER_SECOND),
        "visible": len(latencies),
        "p50_seconds": round(percentile(latencies, 0.5) or -1, 3),
        "p95_seconds": round(percentile(latencies, 0.95) or -1, 3),
        "max_seconds": round(max(latencies, default=-1), 3),
        "runner_cpu_seconds": round(cpu, 1),
        "runner_cpu_share_of_one_core": round(cpu / wall, 3),
        "services_cpu_seconds": {
            k: round(services_after.get(k, 0) - services_before.get(k, 0), 1) for k in services_after
        },
        "wall_seconds": round(wall, 1),
    }
    log(
        f"{rate}/s: p50 {entry['p50_seconds']} s, p95 {entry['p95_seconds']} s, max {entry['max_seconds']} s, "
        f"CPU {entry['runner_cpu_share_of_one_core']:.0%} of a core ({entry['visible']}/{len(commits)} seen)"
    )
    return entry


def run(args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack.start(log)
    settings = stack.settings
    result: dict[str, Any] = {
        "kind": "continuous",
        "written": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "command": "python -m bench.continuous " + " ".join(sys.argv[1:]),
        "note": args.note,
        "machine": machine(),
        "backlog": args.backlog,
        "seconds_per_rate": args.seconds,
        "rates": {},
    }
    runner = None
    poller = None
    try:
        stack.runtime.start("cdc", log=lambda line: None)
        seeded = demo.seed(settings, log=lambda line: None)
        log(f"demo seeded: {seeded['products']} products")
        product = settings.table("product")
        if args.backlog:
            # IDs far from the demo's (7,800,000 up): a key's events all come from one connector,
            # whose source positions order them.
            generator = Generator(topic=product.topic, next_id=BACKLOG_FIRST_ID)
            log(f"producing {args.backlog:,} events to {product.topic}")
            produced = produce(settings.kafka_bootstrap, generator, args.backlog, log=lambda line: None)
            result["produce"] = produced
            log(f"produced in {produced.get('seconds', '?')} s")
        relation = f"{settings.file.marts_schema}.{product.marts_relation or 'dim_product'}"
        poller = MartsPoller(settings, relation)
        poller.start()
        env = {**os.environ, **settings.to_env()}
        runner_log = open(stack.root / "runner.log", "w")
        backlog_started = time.time()
        runner = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "run"], env=env, stdout=runner_log, stderr=subprocess.STDOUT
        )
        proc = psutil.Process(runner.pid)
        # The catch-up ends when the marts hold a change committed after the whole backlog
        # was in the topic: the events of one table stay in order.
        ids = _product_ids(settings)
        sentinel = steady_changes(settings, 1, 0.01, ids)[-1]
        while visible_at(poller.samples[-1:], sentinel) is None:
            if runner.poll() is not None:
                raise RuntimeError(f"the runner exited {runner.returncode}; see {stack.root / 'runner.log'}")
            if time.time() - backlog_started > args.catch_up_timeout:
                raise RuntimeError("the catch-up did not finish in time")
            time.sleep(0.5)
        result["catch_up_seconds"] = round(time.time() - backlog_started, 1)
        result["catch_up_cpu_seconds"] = round(_cpu_seconds(proc), 1)
        log(f"caught up in {result['catch_up_seconds']} s")
        for rate in args.rates:
            entry = measure_rate(settings, stack, poller, proc, rate, args.seconds, ids)
            entry["runner_heartbeat"] = _stage_summary(settings)
            result["rates"][str(rate)] = entry
        if args.watch_seconds:
            # Today's figure beside them: the serial loop, `watch --every 1s`, at the lowest rate.
            runner.terminate()
            runner.wait(120)
            runner = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "watch", "--every", "1s"],
                env=env,
                stdout=runner_log,
                stderr=subprocess.STDOUT,
            )
            proc = psutil.Process(runner.pid)
            time.sleep(5.0)
            result["watch_every_1s"] = measure_rate(
                settings, stack, poller, proc, args.rates[0], args.watch_seconds, ids, settle=120.0
            )
    finally:
        if poller is not None:
            poller.stop_event.set()
        if runner is not None and runner.poll() is None:
            runner.terminate()
            try:
                runner.wait(60)
            except subprocess.TimeoutExpired:
                runner.kill()
        stack.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="10,100,1000", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--seconds", type=float, default=300.0, help="per rate")
    parser.add_argument("--backlog", type=int, default=1_000_000, help="events in the topic before the runner starts")
    parser.add_argument(
        "--watch-seconds", type=float, default=120.0, help="`watch --every 1s` at the first rate; 0 skips"
    )
    parser.add_argument("--catch-up-timeout", type=float, default=1800.0)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the stack is stopped on the way out
    result = run(args)
    text = json.dumps(result, indent=2, default=str)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
