"""The command palette's list of actions: every action of every view, by name, so that an
operator who does not know a key (or which view has it) still finds it with ctrl+p.

Each command runs the same method as its key, so that the palette asks the same confirmation
and takes the same lock; its help names the live key and the view where that key works.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class PaletteAction:
    name: str
    help: str
    run: Callable[[], object]


def palette_actions(app) -> Iterator[PaletteAction]:
    from pipeline.orchestration.plan import plan
    from tui.troubleshoot import FIXES

    def shown(view: str, then: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            app.action_view(view)
            then()

        return run

    def hint(binding_id: str, view: str) -> str:
        return f"{app.key_for(binding_id)} in the {view} view"

    services = app.view("services")
    for service in services.service_names():
        for verb, binding_id in (("start", "service_start"), ("stop", "service_stop"), ("restart", "service_restart")):
            yield PaletteAction(
                f"{verb.capitalize()} {service}",
                f"{verb} the {service} service ({hint(binding_id, 'Services')} on its row)",
                shown("services", lambda s=service, v=verb: services.control(s, v)),
            )

    connector = app.view("connector")
    for name, text, binding_id, then in (
        ("Pause connector", "stop capturing changes", "connector_pause", connector.action_pause),
        ("Resume connector", "capture changes again", "connector_resume", connector.action_resume),
        (
            "Restart connector",
            "restart the connector and its tasks",
            "connector_restart",
            lambda: connector.action_restart(False),
        ),
        (
            "Restart connector's failed tasks",
            "restart only the tasks that failed",
            "connector_restart_failed",
            lambda: connector.action_restart(True),
        ),
    ):
        yield PaletteAction(name, f"{text} ({hint(binding_id, 'Connector')})", shown("connector", then))

    for view_name, title in (("services", "Services"), ("connector", "Connector")):
        yield PaletteAction(
            f"Show or hide probe lines in the {title} log",
            f"the console's own health checks, hidden by default ({hint('log_probes', title)})",
            shown(view_name, app.view(view_name).action_toggle_probes),
        )

    troubleshoot = app.view("troubleshoot")
    from pipeline.checks.diagnose import PROBLEMS

    for problem, (fix_id, _, label) in FIXES.items():
        yield PaletteAction(
            f"Fix: {label}",
            f"{PROBLEMS[problem]} ({hint(fix_id, 'Troubleshoot')})",
            shown("troubleshoot", lambda p=problem: troubleshoot.action_fix(p)),
        )

    yield PaletteAction(
        "Full refresh",
        f"run every step, rebuilding everything ({app.key_for('full_refresh')})",
        app.action_full_refresh,
    )
    yield PaletteAction(
        "Incremental refresh",
        f"run every step on new data ({app.key_for('incremental_refresh')})",
        app.action_incremental_refresh,
    )
    pipeline = app.view("pipeline")
    steps = list(dict.fromkeys(entry.step.name for entry in plan(app.settings)))
    for step in steps:
        yield PaletteAction(
            f"Run step {step}",
            f"run only {step}, every table ({hint('run_step', 'Pipeline')} on its row)",
            lambda s=step: app.refresh_steps([s]),
        )
    yield PaletteAction(
        "Cancel refresh",
        f"stop the running refresh cleanly ({hint('cancel_refresh', 'Pipeline')})",
        pipeline.action_cancel,
    )


class ActionsProvider(Provider):
    def _actions(self) -> list[PaletteAction]:
        return list(palette_actions(self.app))

    async def discover(self) -> Hits:
        for action in self._actions():
            yield DiscoveryHit(action.name, action.run, help=action.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for action in self._actions():
            score = matcher.match(action.name)
            if score > 0:
                yield Hit(score, matcher.highlight(action.name), action.run, text=action.name, help=action.help)
