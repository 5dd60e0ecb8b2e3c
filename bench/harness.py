"""The benchmark harness: an embedded stack of its own, synthetic CDC events, and every
step timed in its own process (wall time, rate, peak RSS), next to the runbook's way.

Per size:
  1. start PostgreSQL, tansu (memory) and moto on free ports in a temporary directory
     (the `cdc` service is not started: events come from bench.producer);
  2. produce N contract-shaped events to the product topic;
  3. a full refresh end to end (run_refresh, one child process), each step (ingest, load,
     transform, test, validate) timed inside it with its own CPU time and peak RSS
     (with phase "steps", each step first runs alone in a child process of its own);
  4. the services' ceilings (bench/ceilings.py): the broker read by ingest's consumer doing
     nothing else, and PostgreSQL storing load's prepared rows with nothing else;
  5. the runbook's Step 3 loader on the same raw objects (scratch database) and its
     Step 2 Kafka -> S3 copy on the same topic, capped (rates are compared);
  6. 10,000 new events, then an incremental refresh end to end.

Peak RSS is the child's own `ru_maxrss` (os.wait4 on its pid), not the broker's nor
moto's; their RSS and the machine's free memory are sampled alongside.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

from bench.producer import Generator, produce
from pipeline.config import Settings, load_settings
from pipeline.runtime.embedded import EmbeddedRuntime

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
RUNBOOK_DB = "bench_runbook"
RUNBOOK_COPY_PREFIX = "bench-runbook/raw/"
INCREMENTAL_EVENTS = 10_000
GiB = 1024**3
# Phases after produce. "full" times every step inside one full refresh; "steps" runs each
# step alone in its own process first (the old way: the same work twice).
PHASES = ("full", "ceilings", "runbook", "incremental")
OPTIONAL_PHASES = ("steps",)
DEFAULT_RUNBOOK_MAX_EVENTS = 50_000
CEILING_MAX_OBJECTS = 20  # the S3 and PostgreSQL ceilings hold this many objects in memory (~100k events)
COMPRESS_FROM_EVENTS = 500_000


def compression_for(events: int, requested: str) -> str:
    if requested != "auto":
        return requested
    return "lz4" if events >= COMPRESS_FROM_EVENTS else "none"


TARGETS = {
    "ingest_events_per_s": 50_000,
    "load_rows_per_s": 40_000,
    "load_vs_runbook": 10.0,
    "full_refresh_1m_s": 180.0,
    "incremental_10k_s": 15.0,
    "peak_rss_mb": 300.0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for a throw-away stack: free ports, generated secrets (as tests/support/stack.py
    does); `overrides` are further settings (bench/tables.py: its config file and dbt project)."""
    pg_port = free_port()
    return load_settings(
        env_file=None,
        **dict(
            data_dir=str(data_dir),
            runtime="embedded",
            pg_port=pg_port,
            source_port=pg_port,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            s3_endpoint=f"http://127.0.0.1:{free_port()}",
            superset_url=f"http://127.0.0.1:{free_port()}",
            pg_password=secrets.token_urlsafe(18),
            pg_reader_password=secrets.token_urlsafe(18),
            source_password=secrets.token_urlsafe(18),
            s3_access_key=secrets.token_urlsafe(12),
            s3_secret_key=secrets.token_urlsafe(18),
        ),
        **overrides,
    )


class MemoryGuard(threading.Thread):
    """Samples free memory and the services' RSS every second; trips below `min_available`."""

    def __init__(self, runtime: EmbeddedRuntime, min_available_gib: float, log):
        super().__init__(daemon=True)
        self.runtime = runtime
        self.min_available = min_available_gib * GiB
        self.log = log
        self.stop_event = threading.Event()
        self.tripped = threading.Event()
        self.lowest_available = psutil.virtual_memory().available
        self.peak_services: dict[str, int] = {}
        self.child: subprocess.Popen | None = None

    def _service_rss(self) -> dict[str, int]:
        out = {}
        for service in ("kafka", "s3", "postgres"):
            record = self.runtime.process(service).record()
            proc = record.process() if record else None
            if proc is None:
                continue
            try:
                procs = [proc, *proc.children(recursive=True)]
                out[service] = sum(p.memory_info().rss for p in procs)
            except psutil.Error:
                pass
        return out

    def run(self) -> None:
        while not self.stop_event.wait(1.0):
            available = psutil.virtual_memory().available
            self.lowest_available = min(self.lowest_available, available)
            for name, rss in self._service_rss().items():
                self.peak_services[name] = max(self.peak_services.get(name, 0), rss)
            if available < self.min_available and not self.tripped.is_set():
                self.tripped.set()
                self.log(f"MEMORY GUARD: only {available / GiB:.1f} GiB available; stopping the run")
                if self.child is not None and self.child.poll() is None:
                    self.child.kill()


class MemoryExhausted(RuntimeError):
    pass


@dataclass
class Stack:
    root: Path
    settings: Settings
    runtime: EmbeddedRuntime
    env: dict = field(default_factory=dict)

    @classmethod
    def start(cls, log, **overrides) -> Stack:
        root = Path(tempfile.mkdtemp(prefix="bi-bench-"))
        settings = bench_settings(root / "data", **overrides)
        runtime = EmbeddedRuntime(settings)
        stack = cls(root, settings, runtime, {**os.environ, **settings.to_env()})
        try:
            runtime.up(log=lambda line: log(f"  {line}"), services=["postgres", "kafka", "s3"])
            runtime.stop("cdc")  # not needed: the events come from the producer
        except Exception:
            stack.stop()
            raise
        return stack

    def stop(self) -> None:
        self.runtime.down(log=lambda line: None)
        shutil.rmtree(self.root, ignore_errors=True)


def run_child(
    stack: Stack, step: str, args: dict | None = None, guard: MemoryGuard | None = None, timeout: float = 3600
) -> dict:
    """Run bench.child STEP in a new process; its result plus wall time and its own peak RSS."""
    out_path = stack.root / f"child-{step}-{time.monotonic_ns()}.out"
    started = time.monotonic()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.child", step, json.dumps(args or {})],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=stack.env,
        )
    if guard is not None:
        guard.child = proc
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if guard is not None:
        guard.child = None
    process_seconds = time.monotonic() - started
    text = out_path.read_text(errors="replace")
    if guard is not None and guard.tripped.is_set():
        raise MemoryExhausted(f"{step}: stopped by the memory guard")
    if proc.returncode != 0:
        raise RuntimeError(f"{step} exited {proc.returncode}:\n{text[-4000:]}")
    result = json.loads(text.strip().splitlines()[-1])
    result["process_seconds"] = process_seconds
    # ru_maxrss of an exec'd child is floored at the harness's own peak (Linux keeps the
    # forking parent's high-water mark across exec); the child resets its mark at start
    # and reports VmHWM, its own peak. Both are kept.
    result["ru_maxrss_mb"] = usage.ru_maxrss / 1024  # Linux: kilobytes
    result["peak_rss_mb"] = result.get("vmhwm_mb") or result["ru_maxrss_mb"]
    return result


def _scratch_database(stack: Stack) -> None:
    from psycopg2 import sql

    from pipeline.runtime.pgserver import EmbeddedPostgres
    from pipeline.stores.bronze import ensure_bronze
    from pipeline.stores.db import connect

    s = stack.settings
    admin = EmbeddedPostgres(s, Path(s.data_dir) / "postgres").admin_connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(RUNBOOK_DB)))
        cur.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(RUNBOOK_DB), sql.Identifier(s.pg_user))
        )
    admin.close()
    conn = connect(s, dbname=RUNBOOK_DB)
    with conn, conn.cursor() as cur:
        ensure_bronze(cur, s.file, s.table("product"))
        # The runbook's loader names the pre-epoch key in its ON CONFLICT; this scratch
        # database holds one epoch, so that key is unique here too.
        cur.execute(
            "ALTER TABLE bronze.product_cdc ADD CONSTRAINT runbook_kafka_position "
            "UNIQUE (kafka_topic, kafka_partition, kafka_offset)"
        )
    conn.close()


def _drop_scratch_database(stack: Stack) -> None:
    from psycopg2 import sql

    from pipeline.runtime.pgserver import EmbeddedPostgres

    s = stack.settings
    admin = EmbeddedPostgres(s, Path(s.data_dir) / "postgres").admin_connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(RUNBOOK_DB)))
    admin.close()


def _raw_objects(stack: Stack) -> tuple[int, int]:
    from pipeline.stores.storage import RawStore

    objects = list(RawStore(stack.settings).list(stack.settings.table("product").raw_objects_prefix))
    return len(objects), sum(o["Size"] for o in objects)


def run_size(
    events: int,
    *,
    log=print,
    runbook_max_events: int | None = None,
    min_available_gib: float = 2.5,
    skip_runbook: bool = False,
    profile_dir: Path | None = None,
    compression: str = "none",
    phases: set[str] | None = None,
) -> dict:
    """Everything for one size on a fresh stack (or only `phases`, a subset of PHASES)."""
    phases = set(phases or PHASES)
    log(f"== {events:,} events: starting the embedded stack")
    t0 = time.monotonic()
    stack = Stack.start(log)
    log(f"   stack up in {time.monotonic() - t0:.1f}s at {stack.root}")
    guard = MemoryGuard(stack.runtime, min_available_gib, log)
    guard.start()
    table = stack.settings.table("product")
    result: dict = {
        "events": events,
        "compression": compression,
        "steps": {},
        "runbook": {},
        "uptime_before": _loadavg(),
        "memory_available_before_gib": round(psutil.virtual_memory().available / GiB, 1),
    }

    def child(step: str, args: dict | None = None) -> dict:
        args = dict(args or {})
        if profile_dir is not None and step in ("ingest", "load"):
            profile_dir.mkdir(parents=True, exist_ok=True)
            args["profile"] = str(profile_dir / f"{step}-{events}.txt")
        if profile_dir is not None and step == "refresh":
            args["profile_dir"] = str(profile_dir / f"refresh-{events}")
        out = run_child(stack, step, args, guard)
        log(
            f"   {step}: {out['seconds']:.2f}s, peak RSS {out['peak_rss_mb']:.0f} MB, "
            f"available {psutil.virtual_memory().available / GiB:.1f} GiB"
        )
        return out

    try:
        from pipeline.stores.kafka import ensure_topic, topic_event_count

        ensure_topic(stack.settings, table.topic)
        generator = Generator(table.topic)
        log(f"   producing {events:,} events to {table.topic}")
        produced = produce(
            stack.settings.kafka_bootstrap,
            generator,
            events,
            compression=compression,
            log=lambda line: log(f"   {line}"),
        )
        produced["counts"] = dict(generator.counts)
        produced["topic_events"] = topic_event_count(stack.settings, table.topic)
        result["produce"] = produced
        log(
            f"   produced in {produced['seconds']:.1f}s ({produced['events_per_s']:,.0f}/s, "
            f"{produced['mean_value_bytes']:,.0f} B/value); topic holds {produced['topic_events']:,}"
        )
        if produced["topic_events"] != events:
            raise RuntimeError(f"topic holds {produced['topic_events']} events, {events} were produced")

        steps = result["steps"]
        if "steps" in phases:
            # Each step alone in a child process of its own (more work: the full refresh repeats them).
            steps["ingest"] = child("ingest", {"full": True})
            steps["ingest"]["raw_bytes"] = _raw_objects(stack)[1]
            steps["load"] = child("load", {"full": True})
            for name in ("transform", "test", "validate"):
                steps[name] = child(name, {"full": True} if name == "transform" else {})
                if not steps[name].get("success"):
                    raise RuntimeError(f"{name} failed: {steps[name]}")

        if "full" in phases:
            result["full_refresh"] = child("refresh", {"mode": "full"})
            if not result["full_refresh"]["success"]:
                raise RuntimeError(f"full refresh failed: {result['full_refresh']}")
            if "steps" not in phases:
                # The step rows are the full refresh's own steps: each one's wall time, own CPU
                # and own peak RSS, measured inside the refresh process (bench/child.py).
                for name, measured in result["full_refresh"]["steps"].items():
                    steps[name] = {**measured, "within": "full refresh"}
                if "ingest" in steps:
                    steps["ingest"]["raw_bytes"] = _raw_objects(stack)[1]

        if "ceilings" in phases:
            result["ceilings"] = {
                # The whole topic: tansu serves later offsets of a large topic more slowly.
                "broker": child("broker_ceiling", {"max_events": events}),
                "s3": child("s3_ceiling", {"max_objects": CEILING_MAX_OBJECTS}),
                "postgres": child("postgres_ceiling", {"max_objects": CEILING_MAX_OBJECTS}),
            }

        if not skip_runbook and "runbook" in phases:
            rows_limit = None
            if runbook_max_events is not None and runbook_max_events < events:
                rows_limit = max(1, runbook_max_events // stack.settings.ingest_batch_size)
            _scratch_database(stack)
            result["runbook"]["step3_load"] = child(
                "runbook_load", {"database": RUNBOOK_DB, "prefix": table.raw_objects_prefix, "max_objects": rows_limit}
            )
            _drop_scratch_database(stack)
            result["runbook"]["step2_copy"] = child(
                "runbook_copy", {"topic": table.topic, "prefix": RUNBOOK_COPY_PREFIX, "max_events": runbook_max_events}
            )

        if "incremental" not in phases:
            return result
        log(f"   producing {INCREMENTAL_EVENTS:,} new events")
        result["incremental_produce"] = produce(
            stack.settings.kafka_bootstrap,
            generator,
            INCREMENTAL_EVENTS,
            compression=compression,
            log=lambda line: None,
        )
        result["incremental_refresh"] = child("refresh", {"mode": "incremental"})
        if not result["incremental_refresh"]["success"]:
            raise RuntimeError(f"incremental refresh failed: {result['incremental_refresh']}")
        result["bronze_rows"] = _scalar(
            stack, f"SELECT count(*) FROM {stack.settings.file.bronze_schema}.{table.bronze_table}"
        )
        result["active_products"] = _scalar(
            stack, f"SELECT count(*) FROM {stack.settings.file.marts_schema}.{table.marts_relation}"
        )
    except Exception as exc:  # keep what was measured; the report says where it stopped
        result["error"] = f"{type(exc).__name__}: {str(exc)[:3000]}"
        log(f"   ERROR: {result['error']}")
    finally:
        result["bronze_rows"] = result.get("bronze_rows") or _try_scalar(
            stack, f"SELECT count(*) FROM {stack.settings.file.bronze_schema}.{table.bronze_table}"
        )
        guard.stop_event.set()
        guard.join(timeout=5)
        result["uptime_after"] = _loadavg()
        result["memory_lowest_available_gib"] = round(guard.lowest_available / GiB, 1)
        result["service_peak_rss_mb"] = {k: round(v / 2**20) for k, v in guard.peak_services.items()}
        stack.stop()
        derive(result)
    return result


def _try_scalar(stack: Stack, query: str):
    try:
        return _scalar(stack, query)
    except Exception:
        return None


def _scalar(stack: Stack, query: str):
    from pipeline.stores.db import connect

    conn = connect(stack.settings)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchone()[0]
    finally:
        conn.close()


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _with_services(step: dict, note: str) -> str:
    """The note plus the CPU seconds PostgreSQL, the broker and the S3 server spent during the step,
    and, from a profile, where the step's main thread spent its time."""
    if step.get("time_owners"):
        from bench.attribution import format_attribution

        owners = "main thread: " + format_attribution(step["time_owners"])
        note = f"{note}; {owners}" if note else owners
    if step.get("rss_at_start_mb") is not None:
        held = f"RSS {step['rss_at_start_mb']:.0f} MB held at start"
        note = f"{note}; {held}" if note else held
    services = step.get("service_cpu_seconds")
    if not services:
        return note
    names = {"postgres": "PostgreSQL", "kafka": "broker", "s3": "S3"}
    spent = ", ".join(f"{names.get(k, k)} {v:.1f}" for k, v in services.items() if v >= 0.05)
    return f"{note}; services CPU s: {spent}" if note else f"services CPU s: {spent}"


def derive(result: dict) -> dict:
    """Rates, per-event costs and ratios from the raw measurements."""
    n = result["events"]
    steps = result["steps"]
    rows = {}

    def row(name, work, unit, seconds, rss=None, cpu=None, note=""):
        rows[name] = {
            "work": work,
            "unit": unit,
            "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 2) if cpu is not None else None,
            "rate_per_s": round(work / seconds) if seconds else None,
            "us_per_event": round(seconds / work * 1e6, 2) if work else None,  # per unit of work
            "peak_rss_mb": round(rss) if rss is not None else None,
            "note": note,
        }

    if "produce" in result:
        p = result["produce"]
        row(
            "produce (bench)",
            p["events"],
            "events",
            p["seconds"],
            None,
            None,
            f"{p['mean_value_bytes']:,.0f} B/value, schema {p['schema_bytes']:,} B",
        )
    if "ingest" in steps:
        s = steps["ingest"]
        row(
            "ingest",
            s["events"] + s.get("quarantined", 0),
            "events",
            s["seconds"],
            s["peak_rss_mb"],
            s.get("cpu_seconds"),
            _with_services(s, f"{s['objects']} objects, {s.get('raw_bytes', 0) / 2**20:,.0f} MiB raw"),
        )
    if "load" in steps:
        s = steps["load"]
        row(
            "load (bronze)",
            s["inserted"],
            "rows",
            s["seconds"],
            s["peak_rss_mb"],
            s.get("cpu_seconds"),
            _with_services(s, f"{s['objects']} objects"),
        )
    for name in ("transform", "test", "validate"):
        if name in steps:
            s = steps[name]
            note = ""
            if name == "transform":
                note = ", ".join(f"{k} {v:.1f}s" for k, v in s.get("nodes", {}).items())
            if name == "test":
                note = "slowest: " + ", ".join(f"{k} {v:.1f}s" for k, v in s.get("slowest", [])[:2])
            row(name, n, "events", s["seconds"], s["peak_rss_mb"], s.get("cpu_seconds"), _with_services(s, note))
    rb = result.get("runbook", {})
    if "step3_load" in rb:
        s = rb["step3_load"]
        row(
            "runbook step 3 loader",
            s["rows"],
            "rows",
            s["seconds"],
            s["peak_rss_mb"],
            s.get("cpu_seconds"),
            f"{s['objects']} objects",
        )
    if "step2_copy" in rb:
        s = rb["step2_copy"]
        row(
            "runbook step 2 copy",
            s["events"],
            "events",
            s["seconds"],
            s["peak_rss_mb"],
            s.get("cpu_seconds"),
            f"{s['objects']} objects",
        )
    ceilings = result.get("ceilings", {})
    if "broker" in ceilings:
        s = ceilings["broker"]
        row(
            "ceiling: broker alone",
            s["events"],
            "events",
            s["seconds"],
            s["peak_rss_mb"],
            s.get("cpu_seconds"),
            "ingest's consumer, messages read and dropped",
        )
    if "s3" in ceilings:
        s = ceilings["s3"]
        row(
            "ceiling: S3 server alone",
            s["events"],
            "events",
            s["seconds"],
            s["peak_rss_mb"],
            s.get("cpu_seconds"),
            f"{s['objects']} raw objects read first, then stored again, {s['uploads_in_flight']} uploads in flight",
        )
    if "postgres" in ceilings:
        s = ceilings["postgres"]
        row(
            "ceiling: PostgreSQL alone",
            s["rows"],
            "rows",
            s["seconds"],
            s["peak_rss_mb"],
            s.get("cpu_seconds"),
            f"{s['objects']} objects' rows built first ({s['prepare_seconds']:.1f}s of our Python), "
            f"then COPY on {s['workers']} connections",
        )
    if "full_refresh" in result:
        s = result["full_refresh"]
        row(
            "full refresh (end to end)",
            n,
            "events",
            s["seconds"],
            s["peak_rss_mb"],
            s.get("cpu_seconds"),
            ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in s["steps"].items()),
        )
    if "incremental_refresh" in result:
        s = result["incremental_refresh"]
        row(
            "incremental refresh (+10k)",
            INCREMENTAL_EVENTS,
            "events",
            s["seconds"],
            s["peak_rss_mb"],
            s.get("cpu_seconds"),
            ", ".join(f"{k} {v['seconds']:.1f}s" for k, v in s["steps"].items()),
        )
    result["rows"] = rows
    ratios = {}
    for name, ours, other, digits in (
        ("load_vs_runbook_step3", "load (bronze)", "runbook step 3 loader", 1),
        ("ingest_vs_runbook_step2", "ingest", "runbook step 2 copy", 1),
        ("ingest_of_broker_ceiling", "ingest", "ceiling: broker alone", 2),
        ("load_of_postgres_ceiling", "load (bronze)", "ceiling: PostgreSQL alone", 2),
    ):
        if ours in rows and other in rows:
            ratios[name] = round(rows[ours]["rate_per_s"] / rows[other]["rate_per_s"], digits)
    result["ratios"] = ratios
    floor = ingest_cpu_floor(steps, ceilings, os.cpu_count() or 1)
    if floor:
        result["ingest_cpu_floor"] = floor
    result["targets"] = check_targets(result)
    cpu = {
        name: round(s["cpu_seconds"], 2)
        for name, s in {
            **steps,
            **rb,
            **{k: result[k] for k in ("full_refresh", "incremental_refresh") if k in result},
        }.items()
        if "cpu_seconds" in s
    }
    result["cpu_seconds_own_process"] = cpu
    return result


def ingest_cpu_floor(steps: dict, ceilings: dict, cores: int) -> dict | None:
    """The least CPU an ingested event costs here, next to what ingest spent.

    Ingest must at least fetch every event from the broker and store it in S3. The broker
    and S3 ceilings measure exactly that work with no check, line or batching of ours, and
    count the CPU of both sides (our client threads and the service). Their sum per event
    bounds ingest's rate on this machine's cores, whatever our code does; what ingest
    spends beyond it is our process's own work."""
    if not {"broker", "s3"} <= set(ceilings) or "ingest" not in steps:
        return None
    broker, store, ingest = ceilings["broker"], ceilings["s3"], steps["ingest"]
    if "cpu_seconds_timed" not in broker or "cpu_seconds_timed" not in store:
        return None

    def micros(seconds: float, events: int) -> float:
        return round(seconds / events * 1e6, 1) if events else 0.0

    broker_us = micros(broker["cpu_seconds_timed"] + broker["service_cpu_seconds"]["kafka"], broker["events"])
    s3_us = micros(store["cpu_seconds_timed"] + store["service_cpu_seconds"]["s3"], store["events"])
    events = ingest["events"] + ingest.get("quarantined", 0)
    services = ingest.get("service_cpu_seconds") or {}
    ingest_us = micros(ingest["cpu_seconds"] + services.get("kafka", 0.0) + services.get("s3", 0.0), events)
    floor_us = round(broker_us + s3_us, 1)
    return {
        "broker_us_per_event": broker_us,
        "s3_us_per_event": s3_us,
        "floor_us_per_event": floor_us,
        "cores": cores,
        "floor_max_events_per_s": round(cores * 1e6 / floor_us) if floor_us else None,
        "ingest_us_per_event": ingest_us,
        "ingest_beyond_floor_us_per_event": round(ingest_us - floor_us, 1),
    }


def check_targets(result: dict) -> dict:
    rows, n = result["rows"], result["events"]
    out = {}

    def mark(name, value, ok, target, ceiling=None):
        out[name] = {"value": value, "target": target, "ok": bool(ok)}
        if ceiling is not None:
            out[name]["service_ceiling"] = ceiling

    def ceiling(name):
        return rows[name]["rate_per_s"] if name in rows else None

    if "ingest" in rows:
        v = rows["ingest"]["rate_per_s"]
        mark(
            "ingest events/s",
            v,
            v >= TARGETS["ingest_events_per_s"],
            f">= {TARGETS['ingest_events_per_s']:,}",
            ceiling("ceiling: broker alone"),
        )
        v = rows["ingest"]["peak_rss_mb"]
        mark("ingest peak RSS MB", v, v <= TARGETS["peak_rss_mb"], f"<= {TARGETS['peak_rss_mb']:.0f}")
    if "load (bronze)" in rows:
        v = rows["load (bronze)"]["rate_per_s"]
        mark(
            "load rows/s",
            v,
            v >= TARGETS["load_rows_per_s"],
            f">= {TARGETS['load_rows_per_s']:,}",
            ceiling("ceiling: PostgreSQL alone"),
        )
        v = rows["load (bronze)"]["peak_rss_mb"]
        mark("load peak RSS MB", v, v <= TARGETS["peak_rss_mb"], f"<= {TARGETS['peak_rss_mb']:.0f}")
    if "load_vs_runbook_step3" in result["ratios"]:
        v = result["ratios"]["load_vs_runbook_step3"]
        mark("load vs runbook loader", v, v >= TARGETS["load_vs_runbook"], f">= {TARGETS['load_vs_runbook']:.0f}x")
    if "full refresh (end to end)" in rows:
        v = rows["full refresh (end to end)"]["seconds"]
        scaled = v * 1_000_000 / n
        mark(
            "full refresh s (scaled to 1M)" if n != 1_000_000 else "full refresh s at 1M",
            round(scaled, 1),
            scaled <= TARGETS["full_refresh_1m_s"],
            f"<= {TARGETS['full_refresh_1m_s']:.0f}",
        )
    if "incremental refresh (+10k)" in rows:
        v = rows["incremental refresh (+10k)"]["seconds"]
        mark("incremental +10k s", v, v <= TARGETS["incremental_10k_s"], f"<= {TARGETS['incremental_10k_s']:.0f}")
    return out


def machine() -> dict:
    mem = psutil.virtual_memory()
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(mem.total / GiB, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def linearity(sizes: list[dict]) -> dict:
    """µs per event of each end-to-end measurement at each size, and the largest/smallest ratio."""
    out = {}
    names = ["ingest", "load (bronze)", "transform", "test", "validate", "full refresh (end to end)"]
    for name in names:
        per = {r["events"]: r["rows"][name]["us_per_event"] for r in sizes if name in r.get("rows", {})}
        if len(per) >= 2:
            ordered = [per[k] for k in sorted(per)]
            out[name] = {"us_per_event": per, "largest_over_smallest": round(ordered[-1] / ordered[0], 2)}
    return out


def format_table(report: dict) -> str:
    lines = []
    for size in report["sizes"]:
        lines.append(
            f"### {size['events']:,} events, topic compression {size.get('compression', 'none')} (load avg before {size.get('uptime_before')}, after "
            f"{size.get('uptime_after')}; lowest free memory {size.get('memory_lowest_available_gib')} GiB; "
            f"services peak RSS {size.get('service_peak_rss_mb')} MB)"
        )
        lines.append("")
        lines.append("| step | work | wall s | rate /s | µs/unit | own CPU s | peak RSS MB | notes |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for name, r in size.get("rows", {}).items():
            rss = "" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:,}"
            rate = "" if r["rate_per_s"] is None else f"{r['rate_per_s']:,}"
            lines.append(
                f"| {name} | {r['work']:,} {r['unit']} | {r['seconds']:.2f} | {rate} | "
                f"{r['us_per_event']} | {'' if r.get('cpu_seconds') is None else r['cpu_seconds']} | {rss} | {r['note']} |"
            )
        if size.get("ratios"):
            lines.append("")
            lines.append("Ratios (rate over rate): " + ", ".join(f"{k} = {v}x" for k, v in size["ratios"].items()))
        floor = size.get("ingest_cpu_floor")
        if floor:
            lines.append("")
            lines.append(
                f"Ingest CPU per event (our process and the services): the broker and S3 work alone cost "
                f"{floor['floor_us_per_event']} µs (broker {floor['broker_us_per_event']}, S3 {floor['s3_us_per_event']}), "
                f"so {floor['cores']} cores allow at most {floor['floor_max_events_per_s']:,} events/s; "
                f"ingest spent {floor['ingest_us_per_event']} µs, {floor['ingest_beyond_floor_us_per_event']} µs of it beyond that work."
            )
        if size.get("targets"):
            lines.append("")
            lines.append(
                "Targets: "
                + "; ".join(
                    f"{k} {v['value']} ({v['target']}"
                    + (f"; the service alone: {v['service_ceiling']:,}" if v.get("service_ceiling") else "")
                    + f") {'OK' if v['ok'] else 'MISSED'}"
                    for k, v in size["targets"].items()
                )
            )
        if size.get("error"):
            lines.append("")
            lines.append(f"ERROR: {size['error']}")
        lines.append("")
    if report.get("linearity"):
        lines.append("### Linearity (µs per event)")
        lines.append("")
        sizes = sorted({k for v in report["linearity"].values() for k in v["us_per_event"]}, key=int)
        lines.append("| step | " + " | ".join(f"{int(s):,}" for s in sizes) + " | largest/smallest |")
        lines.append("| --- | " + " | ".join("---:" for _ in sizes) + " | ---: |")
        for name, v in report["linearity"].items():
            cells = " | ".join(str(v["us_per_event"].get(s, v["us_per_event"].get(str(s), ""))) for s in sizes)
            lines.append(f"| {name} | {cells} | {v['largest_over_smallest']} |")
        lines.append("")
    return "\n".join(lines)


README_START = "<!-- bench:results:start -->"
README_END = "<!-- bench:results:end -->"
