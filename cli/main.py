"""`bi-console`: the TUI by default; `--check`, `stack`, `demo`, `refresh`, `init` headless.

Data goes to stdout, diagnostics to stderr. Exit codes:
  0 success, 1 a step or check failed, 2 usage or configuration error,
  3 a service is unreachable, 4 another refresh is already running.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from cli.intake import quarantine_group, raw_zone_group
from pipeline.config import ConfigError, Settings, generate_env, load_settings

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_LOCKED = 0, 1, 2, 3, 4
# Down, they are a warning: the data pipeline runs without them (the refresh skips the BI step).
OPTIONAL_SERVICES = ("superset",)


def err(message: str) -> None:
    click.echo(message, err=True)


def settings_or_exit(ctx: click.Context) -> Settings:
    try:
        settings = load_settings(env_file=ctx.obj.get("env_file") if ctx.obj else ".env")
        settings.file  # noqa: B018 - validate the config file now, not halfway through a step
        return settings
    except ConfigError as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_USAGE)


def runtime_for(settings: Settings):
    from pipeline.runtime.select import select_runtime

    return select_runtime(settings)


class _Commands(click.Group):
    """Every command ends the same way on a service that cannot be reached or a setting
    that is wrong: one line naming the setting, exit 3 or 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        from pipeline.config.security import DefaultCredentialError
        from pipeline.runtime.model import RuntimeUnavailable
        from pipeline.stores.db import ServiceUnreachable

        try:
            return super().invoke(ctx)
        except (ServiceUnreachable, RuntimeUnavailable) as exc:
            err(f"bi-console: {exc}")
            sys.exit(EXIT_UNREACHABLE)
        except (ConfigError, DefaultCredentialError) as exc:
            err(f"bi-console: {exc}")
            sys.exit(EXIT_USAGE)


@click.group(cls=_Commands, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--env-file", default=".env", show_default=True, help="Settings file (BI_* variables).")
@click.option(
    "--check", "check", is_flag=True, help="Run every check headless and exit (see `bi-console check --help`)."
)
@click.option("--json", "as_json", is_flag=True, help="With --check: JSON on stdout.")
@click.option("--junit", type=click.Path(dir_okay=False), help="With --check: write a JUnit XML file.")
@click.option(
    "--refresh",
    type=click.Choice(["none", "incremental", "full"]),
    default="none",
    help="With --check: refresh before checking.",
)
@click.option("--strict", is_flag=True, help="With --check: warnings fail too.")
@click.pass_context
def main(
    ctx: click.Context, env_file: str, check: bool, as_json: bool, junit: str | None, refresh: str, strict: bool
) -> None:
    """bi-console: control the ConcordDb -> BI pipeline. With no command, opens the TUI."""
    ctx.ensure_object(dict)
    ctx.obj["env_file"] = env_file
    if check:
        ctx.invoke(check_command, as_json=as_json, junit=junit, refresh=refresh, strict=strict)
        return
    if ctx.invoked_subcommand is None:
        settings = settings_or_exit(ctx)
        from tui.app import BiConsoleApp

        BiConsoleApp(settings).run()


@main.command("init")
@click.option("--compose", is_flag=True, help="Write settings for the Docker Compose runtime.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.pass_context
def init_command(ctx: click.Context, compose: bool, force: bool) -> None:
    """Write a .env with random secrets."""
    path = Path(ctx.obj["env_file"])
    if path.exists() and not force:
        err(f"bi-console: {path} exists; keep it, or pass --force to replace its secrets")
        sys.exit(EXIT_USAGE)
    path.write_text(generate_env(compose=compose))
    path.chmod(0o600)
    click.echo(f"wrote {path} with generated secrets")


@main.command("quickstart")
@click.option("--no-tui", is_flag=True, help="Stop after the refresh instead of opening the TUI.")
@click.pass_context
def quickstart_command(ctx: click.Context, no_tui: bool) -> None:
    """Everything from nothing: a .env, the embedded stack, the demo data, a full refresh, the TUI."""
    path = Path(ctx.obj["env_file"])
    if not path.exists():
        path.write_text(generate_env())
        path.chmod(0o600)
        err(f"quickstart: wrote {path} with generated secrets")
    settings = settings_or_exit(ctx)
    runtime = embedded_or_exit(settings)
    try:
        runtime.up(log=err)
    except RuntimeError as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_FAILED)
    from pipeline import demo as demo_source

    if not demo_source.has_rows(settings):
        ctx.invoke(demo_seed, seed_value=42, no_wait=False)
        ctx.invoke(refresh_command, mode="full", steps=None, as_json=False, tables=())
    if not no_tui:
        from tui.app import BiConsoleApp

        BiConsoleApp(settings).run()


# -- stack ---------------------------------------------------------------------
@main.group("stack")
def stack() -> None:
    """Start, stop and inspect the services."""


@stack.command("up")
@click.option("--with", "extras", multiple=True, type=click.Choice(["superset"]), help="Optional services.")
@click.pass_context
def stack_up(ctx: click.Context, extras: tuple[str, ...]) -> None:
    settings = settings_or_exit(ctx)
    runtime = embedded_or_exit(settings)
    started = time.monotonic()
    try:
        runtime.up(log=err, with_superset="superset" in extras)
    except RuntimeError as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_FAILED)
    err(f"stack up: all services healthy in {time.monotonic() - started:.1f}s")


@stack.command("down")
@click.pass_context
def stack_down(ctx: click.Context) -> None:
    settings = settings_or_exit(ctx)
    runtime = embedded_or_exit(settings)
    stopped = runtime.down(log=err)
    err(f"stack down: stopped {', '.join(stopped) if stopped else 'nothing (no service of ours was running)'}")


@stack.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def stack_status(ctx: click.Context, as_json: bool) -> None:
    """Each service's state and health; exits 3 if one is down (an optional one, Superset, only warns)."""
    settings = settings_or_exit(ctx)
    runtime = runtime_or_exit(settings)
    statuses = runtime.status_all()
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in statuses], indent=2))
    else:
        click.echo(f"{'SERVICE':10} {'STATE':9} {'HEALTH':9} {'PID':>7} {'UPTIME':>8}  PORTS  DETAIL")
        for s in statuses:
            uptime = f"{s.uptime_seconds:.0f}s" if s.uptime_seconds is not None else "-"
            ports = ",".join(map(str, s.ports)) or "-"
            click.echo(
                f"{s.name:10} {s.state:9} {'healthy' if s.healthy else 'DOWN':9} {s.pid or '-':>7} "
                f"{uptime:>8}  {ports:5}  {s.health_detail}"
            )
    down = [s for s in statuses if not s.healthy]
    for s in down:  # stdout holds the table (or JSON); the reason, naming the setting, goes to stderr
        if s.name in OPTIONAL_SERVICES:
            err(
                f"bi-console: warning: {s.name} is down ({s.health_detail}); it is optional: a refresh skips "
                f"its step (bi-console stack start {s.name} starts it)"
            )
            continue
        hint = " (bi-console stack up starts it)" if s.state != "running" else ""
        err(f"bi-console: {s.name} unreachable: {s.health_detail}{hint}")
    sys.exit(EXIT_UNREACHABLE if any(s.name not in OPTIONAL_SERVICES for s in down) else EXIT_OK)


@stack.command("logs")
@click.argument("service")
@click.option("-f", "--follow", is_flag=True)
@click.option("-n", "--tail", default=200, show_default=True)
@click.pass_context
def stack_logs(ctx: click.Context, service: str, follow: bool, tail: int) -> None:
    settings = settings_or_exit(ctx)
    runtime = runtime_or_exit(settings)
    if service not in runtime.service_names():
        err(f"bi-console: unknown service {service!r} (known: {', '.join(runtime.service_names())})")
        sys.exit(EXIT_USAGE)
    from pipeline.config.security import redact

    secrets = settings.secret_values()
    try:
        for line in runtime.logs(service, follow=follow, tail=tail):
            click.echo(redact(line, secrets))
    except KeyboardInterrupt:
        pass


def embedded_or_exit(settings: Settings):
    from pipeline.runtime.embedded import EmbeddedRuntime

    if settings.runtime == "compose":
        err("bi-console: BI_RUNTIME=compose: the stack is managed by `docker compose`; see compose/README.md")
        sys.exit(EXIT_USAGE)
    return EmbeddedRuntime(settings)


def runtime_or_exit(settings: Settings):
    from pipeline.config.security import DefaultCredentialError
    from pipeline.runtime.model import RuntimeUnavailable

    try:
        return runtime_for(settings)
    except RuntimeUnavailable as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_UNREACHABLE)
    except DefaultCredentialError as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_USAGE)


# -- connector -----------------------------------------------------------------
@main.command("connector")
@click.argument("action", type=click.Choice(["status", "restart", "pause", "resume"]))
@click.option("--only-failed", is_flag=True)
@click.pass_context
def connector_command(ctx: click.Context, action: str, only_failed: bool) -> None:
    """The CDC connector: status, restart, pause, resume."""
    settings = settings_or_exit(ctx)
    from pipeline.runtime.connect_client import KafkaConnectError, KafkaConnectUnavailable
    from pipeline.runtime.select import connector_for

    control = connector_for(settings)
    try:
        if action == "restart":
            control.restart(include_tasks=True, only_failed=only_failed)
        elif action == "pause":
            control.pause()
        elif action == "resume":
            control.resume()
        status = control.status()
    except KafkaConnectUnavailable as exc:
        err(f"bi-console: BI_KAFKA_CONNECT_URL={settings.kafka_connect_url}: {exc}")
        sys.exit(EXIT_UNREACHABLE)
    except KafkaConnectError as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_FAILED)
    click.echo(
        json.dumps(
            {
                "name": status.name,
                "state": status.effective_state,
                "tasks": [{"id": t.id, "state": t.state} for t in status.tasks],
                "events_captured": status.events_captured,
                "last_event_at": status.last_event_at.isoformat() if status.last_event_at else None,
                "trace": status.error_trace,
                "last_error": status.last_error,
                "retry_attempt": status.retry_attempt,
                "retry_limit": status.retry_limit,
                "retrying_since": status.retrying_since.isoformat() if status.retrying_since else None,
            },
            indent=2,
        )
    )
    sys.exit(EXIT_OK if status.effective_state in ("RUNNING", "PAUSED") else EXIT_FAILED)


# -- bi ------------------------------------------------------------------------
@main.group("bi")
def bi() -> None:
    """Superset: provisioning, cache refresh, cache age and timeout."""


def _superset_call(ctx: click.Context, call):
    settings = settings_or_exit(ctx)
    from pipeline.stores.db import ServiceUnreachable
    from pipeline.superset.api import SupersetApiError, SupersetUnreachable

    try:
        click.echo(json.dumps(call(settings), indent=2, default=str))
    except SupersetUnreachable as exc:  # its message is the request; name the setting
        err(f"bi-console: BI_SUPERSET_URL={settings.superset_url}: {exc}")
        sys.exit(EXIT_UNREACHABLE)
    except ServiceUnreachable as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_UNREACHABLE)
    except (SupersetApiError, RuntimeError) as exc:  # a refusal or a chart that cannot be computed
        err(f"bi-console: {exc}")
        sys.exit(EXIT_FAILED)


@bi.command("provision")
@click.pass_context
def bi_provision(ctx: click.Context) -> None:
    """Create or update the database connection, datasets and the dashboard."""
    from pipeline.superset import api

    _superset_call(ctx, lambda s: api.provision(s, log=err))


@bi.command("refresh")
@click.pass_context
def bi_refresh(ctx: click.Context) -> None:
    """Invalidate the datasets' cache and warm the dashboard's charts."""
    from pipeline.steps.bi import run_bi_refresh

    _superset_call(ctx, lambda s: run_bi_refresh(s, log=err))


@bi.command("status")
@click.pass_context
def bi_status(ctx: click.Context) -> None:
    """Cache age of the dashboard's charts and the connection's cache timeout."""
    from pipeline.superset import api

    _superset_call(ctx, api.cache_status)


@bi.command("cache-timeout")
@click.argument("seconds", type=int)
@click.pass_context
def bi_cache_timeout(ctx: click.Context, seconds: int) -> None:
    """Set the connection's cache timeout (0: never expire, -1: no cache)."""
    from pipeline.superset import api

    _superset_call(ctx, lambda s: api.set_cache_timeout(s, seconds))


# -- demo ----------------------------------------------------------------------
@main.group("demo")
def demo() -> None:
    """The embedded demo source (ConcordDb's Product on PostgreSQL)."""


@demo.command("seed")
@click.option("--seed", "seed_value", default=42, show_default=True)
@click.option("--no-wait", is_flag=True, help="Do not wait for the events to reach Kafka.")
@click.pass_context
def demo_seed(ctx: click.Context, seed_value: int, no_wait: bool) -> None:
    settings = settings_or_exit(ctx)
    from pipeline import demo as demo_source
    from pipeline.stores.kafka import topic_event_count

    table = settings.tables[0]
    before = {t.name: _safe_count(settings, t.topic) for t in settings.tables}
    try:
        result = demo_source.seed(settings, seed_value, log=err)
    except RuntimeError as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_FAILED)
    if not no_wait:
        # Every seeded table's topic, in the order the source committed them.
        for name, count in result["events"].items():
            _wait_for_events(settings, settings.table(name).topic, before[name] + count)
    click.echo(json.dumps({**result, "topic_events": topic_event_count(settings, table.topic)}))


@demo.command("changes")
@click.argument("count", type=click.IntRange(1))
@click.option("--seed", "seed_value", default=7, show_default=True)
@click.option("--no-wait", is_flag=True)
@click.pass_context
def demo_changes(ctx: click.Context, count: int, seed_value: int, no_wait: bool) -> None:
    settings = settings_or_exit(ctx)
    from pipeline import demo as demo_source

    table = settings.tables[0]
    before = _safe_count(settings, table.topic)
    result = demo_source.changes(settings, count, seed_value, log=err)
    if not no_wait:
        _wait_for_events(settings, table.topic, before + result["events"])
    click.echo(json.dumps(result))


def _safe_count(settings: Settings, topic: str) -> int:
    from pipeline.stores.kafka import topic_event_count

    try:
        return topic_event_count(settings, topic)
    except Exception:
        return 0


NOT_RUNNING_GRACE = 4.0


def _wait_for_events(settings: Settings, topic: str, expected: int, timeout: float = 300) -> None:
    from pipeline.stores.kafka import topic_event_count

    deadline = time.monotonic() + timeout
    last = -1
    not_running_since = None
    while time.monotonic() < deadline:
        count = topic_event_count(settings, topic)
        if count != last:
            err(f"demo: {count}/{expected} events on {topic}")
            last = count
        if count >= expected:
            return
        state = _connector_state(settings)
        if state in ("RUNNING", "STARTING"):
            not_running_since = None
        elif not_running_since is None:
            not_running_since = time.monotonic()
        # Nothing captures the changes: waiting out the timeout would only hide that. A few
        # seconds' grace covers Kafka Connect's UNASSIGNED moment while it assigns a task.
        if not_running_since is not None and time.monotonic() - not_running_since >= NOT_RUNNING_GRACE:
            err(
                f"bi-console: the changes are in the source, but {last} of {expected} events are on {topic} and "
                f"no more will arrive while the connector is {state}: {_connector_summary(settings)}"
            )
            sys.exit(EXIT_FAILED)
        time.sleep(1)
    err(
        f"bi-console: only {last} of {expected} events reached {topic} in {timeout:.0f}s; "
        f"{_connector_summary(settings)}"
    )
    sys.exit(EXIT_FAILED)


def _connector_state(settings: Settings) -> str:
    from pipeline.runtime.select import connector_for

    try:
        return connector_for(settings).status().effective_state
    except Exception as exc:  # Kafka Connect unreachable: its state is unknown, and no event comes
        return f"UNKNOWN ({' '.join(str(exc).split())[:200]})"


def _connector_summary(settings: Settings) -> str:
    """What the connector says about itself (the runbook's connector check), for an operator
    whose events did not arrive."""
    from pipeline.checks.diagnose import connector_check

    check, _ = connector_check(settings)
    return f"connector {check.evidence}" + (f"; {check.fix}" if check.fix else "")


# -- refresh -------------------------------------------------------------------
@main.command("refresh")
@click.option("--full", "mode", flag_value="full", help="Re-read everything from the earliest offset.")
@click.option("--incremental", "mode", flag_value="incremental", default=True, help="Only what is new (default).")
@click.option("--steps", default=None, help="Comma-separated subset: ingest,load,transform,test,validate,bi")
@click.option("--json", "as_json", is_flag=True, help="The run's summary as JSON on stdout.")
@click.option("--table", "tables", multiple=True, help="Only these configured tables (default: all).")
@click.pass_context
def refresh_command(ctx: click.Context, mode: str, steps: str | None, as_json: bool, tables: tuple[str, ...]) -> None:
    """Run the pipeline steps in order; stop at the first failure."""
    settings = settings_or_exit(ctx)
    from pipeline.orchestration.refresh import RefreshLocked, StepNames, run_refresh

    step_list = [s.strip() for s in steps.split(",")] if steps else None
    if step_list:
        unknown = [s for s in step_list if s not in StepNames]
        if unknown:
            err(f"bi-console: unknown step(s) {', '.join(unknown)} (known: {', '.join(StepNames)})")
            sys.exit(EXIT_USAGE)
    try:
        run = run_refresh(
            settings,
            mode=mode,
            steps=step_list,
            tables=list(tables) or None,
            on_event=_print_progress,
            on_wait=lambda line: err(f"bi-console: {line}"),
        )
    except RefreshLocked as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_LOCKED)
    except ConfigError as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_USAGE)
    if as_json:
        click.echo(json.dumps(run.as_dict(), indent=2, default=str))
    if run.outcome != "ok":
        err(f"refresh failed at {run.failed_step}: {run.error}")
        sys.exit(EXIT_UNREACHABLE if run.unreachable else EXIT_FAILED)
    err(f"refresh {mode}: ok in {run.duration:.1f}s")


def _print_progress(event) -> None:
    from pipeline.orchestration.refresh import StepFinished, StepLog, StepStarted

    if isinstance(event, StepStarted):
        err(f"▶ {event.table}:{event.step} ...")
    elif isinstance(event, StepFinished):
        counts = ", ".join(f"{k}={v}" for k, v in event.counts.items())
        mark = {"ok": "✓", "skipped": "!"}.get(event.state, "✗")
        err(f"{mark} {event.table}:{event.step} {event.state} in {event.duration:.2f}s {counts}")
        for notice in event.notices:  # what the operator must know even without BI_VERBOSE
            err(f"  ! {notice}")
    elif isinstance(event, StepLog) and os.environ.get("BI_VERBOSE"):
        err(f"    {event.line}")


def parse_interval(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r} is not an interval like 90s, 30m, 6h or 1d") from None


@main.command("watch")
@click.option("--every", "every", default="6h", show_default=True, help="Interval: 90s, 30m, 6h, 1d.")
@click.option("--max-runs", type=int, default=None, help="Stop after this many runs (default: forever).")
@click.pass_context
def watch_command(ctx: click.Context, every: str, max_runs: int | None) -> None:
    """Incremental refresh, then the checks, on a schedule; alerts on failure."""
    settings = settings_or_exit(ctx)
    interval = parse_interval(every)
    from cli.check import run_check_command
    from pipeline.orchestration.refresh import RefreshLocked, run_refresh

    runs = 0
    while max_runs is None or runs < max_runs:
        started = time.monotonic()
        try:
            run = run_refresh(settings, mode="incremental", on_event=_print_progress)
            err(f"watch: refresh {run.outcome} in {run.duration:.1f}s")
        except RefreshLocked as exc:
            err(f"watch: skipped this round: {exc}")
        code = run_check_command(settings, as_json=False, junit=None, refresh="none", strict=False)
        err(f"watch: checks exit {code}")
        runs += 1
        if max_runs is not None and runs >= max_runs:
            break
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


@main.command("run")
@click.option("--table", "tables", multiple=True, help="Only these configured tables (default: all).")
@click.option("--probe", is_flag=True, help="Exit 0 when a runner's heartbeat is fresh, 1 when not (healthchecks).")
@click.pass_context
def run_command(ctx: click.Context, tables: tuple[str, ...], probe: bool) -> None:
    """Continuous mode: ingest, load and transform at once, as changes arrive.

    Runs until Ctrl-C or SIGTERM. dbt tests, Great Expectations and the BI refresh run on
    their own slower cadence ([runner] in the config file). A manual refresh pauses it."""
    settings = settings_or_exit(ctx)
    if probe:
        from pipeline.checks.rules import runner_alive
        from pipeline.stores.runner_state import read_heartbeat

        timeout = settings.file.runner.heartbeat_timeout_seconds
        try:
            beat = read_heartbeat(settings)
        except Exception as exc:  # PostgreSQL unreachable: the probe cannot say it is alive
            err(f"bi-console run --probe: {' '.join(str(exc).split())[:300]}")
            sys.exit(EXIT_FAILED)
        verdict = runner_alive(beat, timeout)
        err(f"bi-console run --probe: {verdict.status}: {verdict.evidence}")
        # Alive is beating in time; a stage that retries (a service away) is still alive.
        alive = beat is not None and beat.state != "stopped" and beat.age_seconds <= timeout
        sys.exit(EXIT_OK if alive else EXIT_FAILED)
    import signal
    import threading

    from pipeline.orchestration.continuous import ContinuousRunner

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        runner = ContinuousRunner(settings, list(tables) or None, log=err)
    except ConfigError as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_USAGE)
    runner.run(stop)


# -- check ---------------------------------------------------------------------
@main.command("check")
@click.option("--json", "as_json", is_flag=True)
@click.option("--junit", type=click.Path(dir_okay=False))
@click.option("--refresh", type=click.Choice(["none", "incremental", "full"]), default="none")
@click.option("--strict", is_flag=True)
@click.pass_context
def check_command(ctx: click.Context, as_json: bool, junit: str | None, refresh: str, strict: bool) -> None:
    """Headless checks for CI and cron (same as `bi-console --check`)."""
    settings = settings_or_exit(ctx)
    from cli.check import run_check_command

    sys.exit(run_check_command(settings, as_json=as_json, junit=junit, refresh=refresh, strict=strict))


main.add_command(quarantine_group)
main.add_command(raw_zone_group)
# Commands defined in modules of their own (they import cli.main lazily, so no cycle).
from cli.images import images as images_group  # noqa: E402
from cli.services import stack_restart, stack_start, stack_stop  # noqa: E402
from cli.tables import table_group  # noqa: E402

main.add_command(images_group)
main.add_command(table_group)
for _command in (stack_start, stack_stop, stack_restart):
    stack.add_command(_command)

if __name__ == "__main__":
    main()
