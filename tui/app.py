"""bi-console's TUI: Services, Connector, Pipeline, Quality and Troubleshooting views.

All I/O runs in thread workers that report by messages; a failing worker becomes an
error shown to the user and the app stays up. Keys come from BINDINGS with ids, remapped
by the config file's `keymap` (binding id -> key); the theme comes from its `theme`.

    BiConsoleApp(settings).run()                       # live, against the active runtime
    BiConsoleApp(settings, recorded=True)              # a fixed recorded state (snapshots)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from pipeline.config import Settings
from tui.base import View, WorkerFailed, error_text
from tui.connector import ConnectorView
from tui.help import HelpScreen, format_key
from tui.palette import ActionsProvider
from tui.pipeline_view import PipelineView
from tui.quality import QualityView
from tui.quit import QuitDuringRefreshScreen
from tui.services import ServicesView, StatusesLoaded
from tui.troubleshoot import TroubleshootView

VIEWS = {
    "services": ("Services", ServicesView),
    "connector": ("Connector", ConnectorView),
    "pipeline": ("Pipeline", PipelineView),
    "quality": ("Quality", QualityView),
    "troubleshoot": ("Troubleshoot", TroubleshootView),
}


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker while sys.stderr is still the real one.

    While the app runs, Textual replaces sys.stderr with an object whose fileno() is -1;
    a tracker started then (dbt starts one) fails with "bad value(s) in fds_to_keep".
    """
    try:
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    except Exception:  # no tracker: dbt will report its own error
        pass


class BiConsoleApp(App):
    TITLE = "bi-console"
    CSS_PATH = str(Path(__file__).with_name("app.tcss"))
    # The first view's table takes the focus at once (a focus moved later would steal it from a key press).
    AUTO_FOCUS = "#services-table"
    # Beside the system commands: every view's actions (tui/palette.py).
    COMMANDS = App.COMMANDS | {ActionsProvider}
    BINDINGS = [
        Binding("question_mark", "help", "Help", id="help"),
        Binding("1", "view('services')", "Services", show=False, id="view_services"),
        Binding("2", "view('connector')", "Connector", show=False, id="view_connector"),
        Binding("3", "view('pipeline')", "Pipeline", show=False, id="view_pipeline"),
        Binding("4", "view('quality')", "Quality", show=False, id="view_quality"),
        Binding("5", "view('troubleshoot')", "Troubleshoot", show=False, id="view_troubleshoot"),
        Binding("f", "full_refresh", "Full", id="full_refresh"),
        Binding("i", "incremental_refresh", "Incr", id="incremental_refresh"),
        Binding("q", "quit", "Quit", id="quit"),
        # Here, not on the log only: with a table focused, the typed filter text would be its keys.
        Binding("slash", "filter_log", "Filter log", show=False, id="log_filter"),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        runtime=None,
        live: bool | None = None,
        recorded: bool = False,
        clock: Callable[[], datetime] | None = None,
        poll_interval: float = 2.0,
    ) -> None:
        super().__init__()
        _start_resource_tracker()
        self.settings = settings
        self.recorded = recorded
        self.live = (not recorded) if live is None else live
        self.runtime = runtime
        self.poll_interval = poll_interval
        if clock is None and recorded:
            from tui.recorded import RECORDED_NOW

            clock = lambda: RECORDED_NOW  # noqa: E731
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.errors: list[str] = []
        self.status_updates = 0
        self.keymap: dict[str, str] = {}  # binding id -> key, from the config file
        self._service_states: tuple | None = None  # (name, state, healthy) of the last poll
        self.quit_pending = False  # the refresh is being cancelled; quit once it has stopped

    # -- layout -------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(self._topbar_text(None), id="topbar")
        with TabbedContent(id="views", initial="services"):
            for key, (title, cls) in VIEWS.items():
                with TabPane(f"{list(VIEWS).index(key) + 1} {title}", id=key):
                    yield cls(id=f"{key}-view")
        yield Footer()

    def on_mount(self) -> None:
        self._apply_config()
        if self.recorded:
            self.load_recorded()
        if self.live:
            if self.runtime is None:
                self._select_runtime()
            else:
                self._runtime_ready()

    def _apply_config(self) -> None:
        file = self.settings.file
        theme = file.theme
        if theme and theme != self.theme:
            if theme in self.available_themes:
                self.theme = theme
            else:
                self.notify(
                    f"config: unknown theme {theme!r}; known: {', '.join(sorted(self.available_themes))}",
                    severity="warning",
                )
        if file.keymap:
            known = self.binding_ids()
            unknown = sorted(set(file.keymap) - known)
            if unknown:
                self.notify(
                    f"config keymap: unknown action(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}",
                    severity="warning",
                    timeout=10,
                )
            self.keymap = {k: v for k, v in file.keymap.items() if k in known}
            self.set_keymap(self.keymap)
            from tui.log_pane import LogPane

            for pane in self.query(LogPane):  # their key hints were drawn before the keymap was known
                pane.update_title()
            for view in self.query(View):
                view.keys_changed()

    def binding_ids(self) -> set[str]:
        from tui.log_pane import LogView

        ids = {b.id for b in self.BINDINGS if isinstance(b, Binding) and b.id}
        for _, cls in VIEWS.values():
            ids |= {b.id for b in cls.BINDINGS if isinstance(b, Binding) and b.id}
        ids |= {b.id for b in LogView.BINDINGS if isinstance(b, Binding) and b.id}
        return ids

    def view(self, name: str) -> View:
        return self.query_one(f"#{name}-view", View)

    @property
    def active_view(self) -> View:
        return self.view(self.query_one("#views", TabbedContent).active or "services")

    # -- live data ---------------------------------------------------------------------------
    @work(thread=True, exit_on_error=False, name="select-runtime")
    def _select_runtime(self) -> None:
        from pipeline.runtime.select import select_runtime

        runtime = select_runtime(self.settings)
        self.call_from_thread(self._set_runtime, runtime)

    def _set_runtime(self, runtime) -> None:
        self.runtime = runtime
        self._runtime_ready()

    def _runtime_ready(self) -> None:
        self._update_topbar()
        self._tick()
        self.active_view.refresh_data()
        self.set_interval(self.poll_interval, self._tick, name="status-poll")

    def _tick(self) -> None:
        try:
            services, views = self.view("services"), self.query_one("#views", TabbedContent)
        except NoMatches:
            return  # the timer can still fire while the app shuts down and its screen is gone
        services.poll()
        if views.active == "connector":
            self.view("connector").refresh_data()

    @on(StatusesLoaded)
    def _statuses(self, message: StatusesLoaded) -> None:  # bubbled up from the services view
        self.status_updates += 1
        self._update_topbar(message.statuses)
        states = tuple((s.name, s.state, s.healthy) for s in message.statuses)
        if self._service_states is not None and states != self._service_states:
            # A check drawn before the change may say ✓ about a service that is down now.
            self.view("troubleshoot").services_changed(
                active=self.query_one("#views", TabbedContent).active == "troubleshoot"
            )
        self._service_states = states

    def _topbar_text(self, statuses) -> Text:
        runtime = getattr(self.runtime, "name", None) or ("recorded" if self.recorded else "…")
        text = Text.assemble(("bi-console", "bold"), f" · {runtime} runtime")
        if statuses:
            down = [s.name for s in statuses if not s.healthy]
            healthy = len(statuses) - len(down)
            text.append(" · ")
            text.append(f"{healthy}/{len(statuses)} healthy", style="green" if not down else "bold red")
            if down:
                text.append(f" (down: {', '.join(down)})", style="red")
        if self.errors:
            text.append(f" · last error: {self.errors[-1][:60]}", style="red")
        return text

    def _update_topbar(self, statuses=None) -> None:
        if statuses is None:
            statuses = getattr(self.view("services"), "statuses", None)
        self.query_one("#topbar", Static).update(self._topbar_text(statuses))

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        name = event.pane.id or "services"
        view = self.view(name)
        if self.live and self.runtime is not None:
            view.refresh_data()
        view.focus_main()

    @on(WorkerFailed)
    def _worker_failed(self, message: WorkerFailed) -> None:
        text = error_text(message.error)
        self.errors.append(f"{message.where}: {text}")
        self.notify(text, title=f"error in {message.where}", severity="error", timeout=8)
        self._update_topbar()

    def on_worker_state_changed(self, event) -> None:  # workers of the app itself
        from textual.worker import WorkerState

        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.post_message(WorkerFailed(f"app.{event.worker.name}", event.worker.error))

    def on_refresh_finished(self, run) -> None:
        quality = self.view("quality")
        if self.live:
            quality.refresh_data()

    # -- recorded state ------------------------------------------------------------------------
    def load_recorded(self) -> None:
        from tui import recorded

        services = self.view("services")
        services.show_statuses(recorded.services())
        services.show_log(recorded.SERVICE_LOG)
        self._update_topbar(recorded.services())
        self.view("connector").show_snapshot(recorded.connector())
        pipeline = self.view("pipeline")
        for event in recorded.finished_run_events():
            pipeline.apply_event(event, announce=False)
        pipeline.query_one("#step-log").write_lines(recorded.STEP_LOG)
        pipeline.show_history(recorded.history())
        self.view("quality").show_snapshot(recorded.quality())
        troubleshoot = self.view("troubleshoot")
        for problem, checks in recorded.diagnoses().items():
            troubleshoot.show_checks(problem, checks)

    # -- actions -------------------------------------------------------------------------------
    async def action_quit(self) -> None:
        try:
            pipeline = self.view("pipeline")
        except NoMatches:  # the screen is already gone
            self.exit()
            return
        if not pipeline.running:
            self.exit()
            return
        if self.quit_pending:
            self.notify("cancelling the refresh; bi-console quits as soon as it has stopped", severity="warning")
            return
        if isinstance(self.screen, QuitDuringRefreshScreen):
            return
        self.push_screen(QuitDuringRefreshScreen(pipeline.running_text), callback=self._quit_answer)

    def _quit_answer(self, cancel_and_quit: bool | None) -> None:
        if not cancel_and_quit:
            return
        pipeline = self.view("pipeline")
        if not pipeline.running:  # it ended while the question was open
            self.exit()
            return
        self.quit_pending = True
        pipeline.cancel_for_quit()
        self.set_interval(0.2, self._quit_when_stopped, name="quit-when-stopped")

    def _quit_when_stopped(self) -> None:
        # Both the run's end and its worker: the worker's thread holds the child until it has exited.
        refreshing = any(w.group == "refresh" and w.is_running for w in self.workers)
        if not self.view("pipeline").running and not refreshing:
            self.exit()

    def action_view(self, name: str) -> None:
        self.query_one("#views", TabbedContent).active = name
        # The pane is shown on the next refresh; a hidden widget cannot take the focus before that.
        self.call_after_refresh(self.view(name).focus_main)

    def action_filter_log(self) -> None:
        from tui.log_pane import LogPane

        panes = [pane for pane in self.active_view.query(LogPane) if pane.display]
        if not panes:
            self.notify("this view has no log", severity="warning")
            return
        panes[0].open_filter()

    def action_full_refresh(self) -> None:
        self._refresh("full")

    def action_incremental_refresh(self) -> None:
        self._refresh("incremental")

    def refresh_steps(self, steps: list[str]) -> None:
        self._refresh("incremental", steps)

    def _refresh(self, mode: str, steps: list[str] | None = None) -> None:
        if not self.live:
            self.notify("no live stack (recorded data)", severity="warning")
            return
        pipeline = self.view("pipeline")
        self.action_view("pipeline")
        pipeline.start_refresh(mode, steps)

    def live_key(self, binding: Binding) -> str:
        """The key a binding answers to now, as the footer shows it (the config's keymap applied)."""
        keys = self.keymap.get(binding.id, binding.key) if binding.id else binding.key
        return format_key(self, keys.split(",")[0].strip())

    def key_for(self, binding_id: str) -> str:
        """The live key of the binding with this id, wherever it is declared (app, a view, the log)."""
        from tui.log_pane import LogView

        classes = [type(self), *(cls for _, cls in VIEWS.values()), LogView]
        for cls in classes:
            for binding in cls.BINDINGS:
                if isinstance(binding, Binding) and binding.id == binding_id:
                    return self.live_key(binding)
        raise KeyError(binding_id)

    def help_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        from tui.log_pane import LogView

        # One row per action with all its keys, the footer's key first: help and footer never disagree.
        rows: dict[tuple[bool, str, str], list[tuple[bool, str]]] = {}
        for key, active in self.active_bindings.items():
            binding = active.binding
            description = binding.description or binding.action
            if not description or binding.action == "command_palette":
                continue
            if not binding.id and active.node is not self and binding.action not in ("focus_next", "focus_previous"):
                continue  # widgets' own scrolling keys: not worth the space
            rows.setdefault((active.node is self, binding.action, description), []).append(
                (not binding.show, format_key(self, key))
            )
        view_rows, app_rows = [], []
        for (is_app, _, description), keys in rows.items():
            shown = " ".join(dict.fromkeys(k for _, k in sorted(keys, key=lambda k: k[0])))
            (app_rows if is_app else view_rows).append((shown, description))
        title = VIEWS.get(self.query_one("#views", TabbedContent).active, ("View",))[0]
        log_keys = {b.id: self.live_key(b) for b in LogView.BINDINGS if isinstance(b, Binding) and b.id}
        filter_key = next(self.live_key(b) for b in self.BINDINGS if isinstance(b, Binding) and b.id == "log_filter")
        return [
            (f"{title} view", view_rows),
            (
                "Everywhere",
                app_rows
                + [
                    (format_key(self, self.COMMAND_PALETTE_BINDING), "Command palette"),
                    ("mouse", "click tabs, rows and buttons; wheel scrolls"),
                ],
            ),
            (
                "Log panes",
                [
                    (filter_key, "filter (Enter applies, Esc clears)"),
                    ("↑ ↓", "move"),
                    ("shift+↑ ↓", "select lines"),
                    (log_keys["log_copy"], "copy selected lines"),
                    ("End", "follow"),
                    (log_keys["log_json"], "pretty-print JSON on/off"),
                ],
            ),
        ]

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
            return
        self.push_screen(HelpScreen(self.help_sections()))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, (title, _) in VIEWS.items():
            yield SystemCommand(f"Go to {title}", f"Show the {title} view", lambda k=key: self.action_view(k))
        yield SystemCommand(
            "Diagnose all problems",
            "Run every troubleshooting check",
            lambda: (self.action_view("troubleshoot"), self.view("troubleshoot").action_diagnose_all()),
        )
        yield SystemCommand(
            "Run Great Expectations",
            "Validate every table's suites",
            lambda: (self.action_view("quality"), self.view("quality").action_validate()),
        )
        yield SystemCommand("Keys", "Show the help overlay", self.action_help)
