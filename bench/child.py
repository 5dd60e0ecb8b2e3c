"""One benchmark step in its own process, so that its peak RSS is its own.

    python -m bench.child STEP '{"arg": ...}'

Settings come from the BI_* environment the harness passes. The step's result is the
last line of stdout, as JSON: {"seconds": wall time of the step call, ...counts}.
Import time is outside "seconds" (the harness records the process's total too).
"""

from __future__ import annotations

import json
import sys
import time

from bench.services import service_cpu


def _quiet(_line: str) -> None:
    pass


def _pipeline_step(name: str, settings, args: dict) -> dict:
    """The refresh's own step object for one table, so the benchmark times what a refresh runs."""
    from pipeline.orchestration.plan import STEP_BY_NAME, StepContext

    table = settings.table(args.get("table", "product"))
    full_tables = {table.name} if args.get("full", True) else set()
    context = StepContext(settings, [table], table, full_tables, _quiet)
    started = time.monotonic()
    counts = STEP_BY_NAME[name].run(context)
    return {"seconds": time.monotonic() - started, **counts}


def step_ingest(settings, args: dict) -> dict:
    return _pipeline_step("ingest", settings, args)


def step_load(settings, args: dict) -> dict:
    return _pipeline_step("load", settings, args)


def step_transform(settings, args: dict) -> dict:
    from pipeline.steps.transform import DbtProject

    table = settings.table(args.get("table", "product"))
    started = time.monotonic()
    result = DbtProject(settings, _quiet).run(table.dbt_selector, full_refresh=args.get("full", True))
    nodes = {n.name: round(n.execution_time, 3) for n in result.nodes}
    return {
        "seconds": time.monotonic() - started,
        "success": result.success,
        "nodes": nodes,
        "error": result.error,
        "failed": [n.name for n in result.failed],
    }


def step_test(settings, args: dict) -> dict:
    from pipeline.steps.transform import DbtProject

    table = settings.table(args.get("table", "product"))
    started = time.monotonic()
    result = DbtProject(settings, _quiet).test(table.dbt_selector, within_selection=True)
    slowest = sorted(((n.name, round(n.execution_time, 3)) for n in result.nodes), key=lambda x: -x[1])[:5]
    return {
        "seconds": time.monotonic() - started,
        "success": result.success,
        "counts": result.counts,
        "slowest": slowest,
        "failed": [n.name for n in result.failed],
    }


def step_validate(settings, args: dict) -> dict:
    from pipeline.steps.validate import run_validation

    table = settings.table(args.get("table", "product"))
    started = time.monotonic()
    result = run_validation(settings, table, _quiet)
    failed = [f"{s.name}: {s.error or [e.type for e in s.failed]}" for s in result.suites if not s.success]
    return {"seconds": time.monotonic() - started, "success": result.success, "counts": result.counts, "failed": failed}


def _profile_result(profiler, directory: str, name: str) -> dict:
    """Stop a pyinstrument profiler, write its text report, and say where the time went."""
    import os

    from bench.attribution import attribute

    profiler.stop()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.txt")
    with open(path, "w") as fh:
        fh.write(profiler.output_text(unicode=False, color=False, show_all=False))
    return {"profile": path, "time_owners": attribute(profiler.last_session)}


def step_refresh(settings, args: dict) -> dict:
    """A refresh end to end, with each step's own CPU time and peak RSS, and the CPU time the
    services (PostgreSQL, the broker, the S3 server) spent meanwhile: the step events mark
    where one step ends and the next begins, and the RSS high-water mark is reset at each
    start, so a step's peak is its own, not an earlier step's."""
    from pipeline.orchestration.refresh import StepFinished, StepStarted, run_refresh

    measured: dict[str, dict] = {}
    at_start: dict[str, tuple[float, dict, float | None]] = {}
    profile_dir = args.get("profile_dir")
    profilers: dict[str, object] = {}

    def on_event(event) -> None:
        if isinstance(event, StepStarted):
            if profile_dir:
                from pyinstrument import Profiler

                profilers[event.step] = Profiler(interval=0.005)
                profilers[event.step].start()
            reset_peak_rss()
            at_start[event.step] = (_cpu(), service_cpu(settings), peak_rss_mb())
        elif isinstance(event, StepFinished) and event.step in at_start:
            cpu0, services0, rss0 = at_start[event.step]
            services1 = service_cpu(settings)
            # rss_at_start_mb: what the process already held when the step began (earlier
            # steps' freed memory that the allocator kept); the step's own growth is the difference.
            # A per-table step of several tables adds up its runs (peak: the highest).
            before = measured.get(event.step, {})
            spent = before.get("service_cpu_seconds", {})
            peak = max((v for v in (before.get("peak_rss_mb"), peak_rss_mb()) if v is not None), default=None)
            measured[event.step] = {
                "cpu_seconds": round(before.get("cpu_seconds", 0.0) + _cpu() - cpu0, 3),
                "peak_rss_mb": peak,
                "rss_at_start_mb": before.get("rss_at_start_mb", rss0),
                "service_cpu_seconds": {
                    k: round(spent.get(k, 0.0) + services1[k] - services0.get(k, 0.0), 2) for k in services1
                },
            }
            if event.step in profilers:
                measured[event.step].update(
                    _profile_result(profilers.pop(event.step), profile_dir, f"{args['mode']}-{event.step}")
                )

    started = time.monotonic()
    tables = args.get("tables") or [args.get("table", "product")]
    run = run_refresh(settings, mode=args["mode"], tables=tables, on_event=on_event)
    steps: dict[str, dict] = {}
    for s in run.steps:
        counts = {k: v for k, v in s.counts.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        flags = {k: v for k, v in s.counts.items() if isinstance(v, bool)}
        step = steps.setdefault(s.step, {"seconds": 0.0, "state": s.state, "runs": 0})
        # A per-table step runs once per table: its seconds and counts are the runs' sum.
        step["seconds"] = round(step["seconds"] + s.duration, 3)
        step["runs"] += 1
        if s.state != "ok":
            step["state"] = s.state
        for k, v in counts.items():
            step[k] = step.get(k, 0) + v
        step.update(flags)
    for name, step in steps.items():
        step.update(measured.get(name, {}))
    return {
        "seconds": time.monotonic() - started,
        "success": run.outcome == "ok",
        "outcome": run.outcome,
        "error": run.error,
        "steps": steps,
    }


def step_runbook_load(settings, args: dict) -> dict:
    from bench.runbook import runbook_step3_loader

    return runbook_step3_loader(settings, args["database"], args["prefix"], args.get("max_objects"))


def step_runbook_copy(settings, args: dict) -> dict:
    from bench.runbook import runbook_step2_copy

    return runbook_step2_copy(settings, args["topic"], args["prefix"], args.get("max_events"))


def step_broker_ceiling(settings, args: dict) -> dict:
    from bench.ceilings import broker_ceiling

    return broker_ceiling(settings, args.get("table", "product"), args["max_events"])


def step_s3_ceiling(settings, args: dict) -> dict:
    from bench.ceilings import s3_ceiling

    return s3_ceiling(settings, args.get("table", "product"), args["max_objects"])


def step_postgres_ceiling(settings, args: dict) -> dict:
    from bench.ceilings import postgres_ceiling

    return postgres_ceiling(
        settings, args.get("table", "product"), args["max_objects"], args.get("workers", settings.load_workers)
    )


# transform, test and validate keep their own bodies: they report dbt's nodes and failures,
# which the refresh's steps turn into one error.
STEPS = {
    "ingest": step_ingest,
    "load": step_load,
    "transform": step_transform,
    "test": step_test,
    "validate": step_validate,
    "refresh": step_refresh,
    "runbook_load": step_runbook_load,
    "runbook_copy": step_runbook_copy,
    "broker_ceiling": step_broker_ceiling,
    "s3_ceiling": step_s3_ceiling,
    "postgres_ceiling": step_postgres_ceiling,
}


def _cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def reset_peak_rss() -> None:
    """Forget the RSS high-water mark inherited from the harness.

    Linux carries the forking parent's peak into an exec'd child (`ru_maxrss` is floored
    at the harness's own RSS), so the child resets its mm's mark and reports VmHWM."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main() -> None:
    reset_peak_rss()
    step, raw = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "{}"
    args = json.loads(raw)
    profile = args.pop("profile", None)
    from pipeline.config import load_settings

    settings = load_settings(env_file=None)
    cpu_before = _cpu()
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.005)
        profiler.start()
        out = STEPS[step](settings, args)
        profiler.stop()
        with open(profile, "w") as fh:
            fh.write(profiler.output_text(unicode=False, color=False, show_all=False))
        from bench.attribution import attribute

        out["profile"] = profile
        out["time_owners"] = attribute(profiler.last_session)
    else:
        out = STEPS[step](settings, args)
    out["cpu_seconds"] = _cpu() - cpu_before  # this process only: not the broker's, moto's or PostgreSQL's
    out["vmhwm_mb"] = peak_rss_mb()
    sys.stdout.write("\n" + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
