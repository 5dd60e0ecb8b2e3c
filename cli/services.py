"""`bi-console stack start|stop|restart SERVICE`: one service of the active runtime
(an embedded process, or a compose container), through the Runtime protocol.

Also runnable as `python -m cli.services [--env-file F] start|stop|restart SERVICE`.
"""

from __future__ import annotations

import sys

import click


def _control(ctx: click.Context, action: str, service: str) -> None:
    # Imported here: cli/main.py registers these commands on its `stack` group.
    from cli.main import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, err, runtime_or_exit, settings_or_exit
    from pipeline.runtime.embedded import EmbeddedRuntime
    from pipeline.runtime.model import RuntimeUnavailable

    settings = settings_or_exit(ctx)
    runtime = runtime_or_exit(settings)
    embedded = isinstance(runtime, EmbeddedRuntime)
    try:
        known = runtime.service_names()
        if embedded and service == "superset" and service not in known:
            if action == "stop":  # nothing to do, and nothing wrong: the optional service is off
                err("superset: not enabled in this stack; nothing to stop")
                return
            # Starting the optional service switches it on, as `stack up --with superset` does.
            runtime.up(log=err, services=["superset"], with_superset=True)
            known = runtime.service_names()
        elif service not in known:
            extra = " (superset: `bi-console stack start superset` enables it)" if embedded else ""
            err(f"bi-console: unknown service {service!r} (known: {', '.join(known)}){extra}")
            sys.exit(EXIT_USAGE)
        elif embedded and action != "stop":
            getattr(runtime, action)(service, log=err)  # its progress on stderr, as `stack up` writes it
        else:
            getattr(runtime, action)(service)
        status = runtime.status(service)
    except RuntimeUnavailable as exc:
        err(f"bi-console: {exc}")
        sys.exit(EXIT_UNREACHABLE)
    except RuntimeError as exc:  # a service that would not start: its message names its log
        err(f"bi-console: {exc}")
        sys.exit(EXIT_FAILED)
    err(f"{service}: {action} done; now {status.state}, {status.health_detail or '-'}")


@click.command("start")
@click.argument("service")
@click.pass_context
def stack_start(ctx: click.Context, service: str) -> None:
    """Start one service."""
    _control(ctx, "start", service)


@click.command("stop")
@click.argument("service")
@click.pass_context
def stack_stop(ctx: click.Context, service: str) -> None:
    """Stop one service."""
    _control(ctx, "stop", service)


@click.command("restart")
@click.argument("service")
@click.pass_context
def stack_restart(ctx: click.Context, service: str) -> None:
    """Restart one service."""
    _control(ctx, "restart", service)


@click.group()
@click.option("--env-file", default=".env", show_default=True)
@click.pass_context
def services(ctx: click.Context, env_file: str) -> None:
    """One service of the active runtime."""
    ctx.obj = {"env_file": env_file}


for _command in (stack_start, stack_stop, stack_restart):
    services.add_command(_command)

if __name__ == "__main__":
    services()
