"""Connector: the CDC connector's state (a failed task is never shown as RUNNING, a stopped
one reads STOPPED with its reason), its tasks, the topics' end offsets and the ingest
position's lag, and the connector's own log; restart, pause, resume."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from pipeline.checks.views import ConnectorSnapshot
from tui.base import View
from tui.confirm import confirm_then
from tui.log_pane import LogPane

STATE_STYLE = {
    "RUNNING": "bold green",
    "PAUSED": "bold yellow",
    "FAILED": "bold white on red",
    "RETRYING": "bold black on yellow",
    "STOPPED": "bold white on red",
}
# The service whose log is the connector's: the embedded engine, or Kafka Connect under compose.
CONNECTOR_SERVICES = ("cdc", "kafka-connect")


class ConnectorLoaded(Message):
    def __init__(self, snapshot: ConnectorSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class ConnectorLogFound(Message):
    def __init__(self, service: str | None, known: list[str]) -> None:
        super().__init__()
        self.service, self.known = service, known


class ConnectorActionDone(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class ConnectorView(View):
    BINDINGS = [
        Binding("r", "restart(False)", "Restart all", id="connector_restart"),
        Binding("R", "restart(True)", "Restart failed", id="connector_restart_failed"),
        Binding("p", "pause", "Pause", id="connector_pause"),
        Binding("u", "resume", "Resume", id="connector_resume"),
        Binding("g", "reload", "Reload", id="connector_reload"),
        Binding("l", "focus_log", "Log", id="connector_log"),
        Binding("h", "toggle_probes", "Probes", id="log_probes"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.snapshot: ConnectorSnapshot | None = None
        self._loading = False
        self._busy = False
        self._log_found = False

    def compose(self) -> ComposeResult:
        yield Static("connector: loading…", id="connector-state")
        with VerticalScroll(id="connector-body"):
            yield Static("", id="connector-trace")
            tasks = DataTable(id="connector-tasks", cursor_type="row")
            tasks.border_title = "tasks"
            yield tasks
            offsets = DataTable(id="connector-offsets", cursor_type="row")
            offsets.border_title = "topics · end offsets · ingest lag"
            yield offsets
        yield LogPane("connector log", probes=True, id="connector-log")

    def on_mount(self) -> None:
        tasks = self.query_one("#connector-tasks", DataTable)
        for label in ("task", "state", "worker", "error"):
            tasks.add_column(label, key=label)
        offsets = self.query_one("#connector-offsets", DataTable)
        for label in ("topic", "part", "low", "end", "position", "lag"):
            offsets.add_column(label, key=label)
        if getattr(self.app, "recorded", False):
            from tui import recorded

            self.show_log(recorded.CONNECTOR_LOG, recorded.CONNECTOR_SERVICE)

    def show_log(self, lines: list[str], service: str = "cdc") -> None:
        pane = self.query_one("#connector-log", LogPane)
        pane.set_title(f"{service} log")
        pane.write_lines(lines)

    def refresh_data(self) -> None:
        runtime = getattr(self.app, "runtime", None)
        if runtime is None:
            return
        if not self._log_found:
            self._log_found = True
            self._find_log_worker(runtime)
        if self._loading:
            return
        self._loading = True
        self._load_worker(runtime)

    @work(thread=True, exit_on_error=False, group="connector", name="connector-log-service")
    def _find_log_worker(self, runtime) -> None:
        names = list(runtime.service_names())
        self.post_message(ConnectorLogFound(next((n for n in CONNECTOR_SERVICES if n in names), None), names))

    @on(ConnectorLogFound)
    def _log_service_found(self, message: ConnectorLogFound) -> None:
        pane = self.query_one("#connector-log", LogPane)
        if message.service is None:
            pane.set_title(
                f"connector log: no {' or '.join(CONNECTOR_SERVICES)} service "
                f"(known: {', '.join(message.known) or 'none'})"
            )
            return
        pane.follow_service(self.app.runtime, message.service)

    def worker_failed(self, worker) -> None:
        self._loading = self._busy = False
        if worker.name == "connector-log-service":
            self._log_found = False  # try again on the next refresh

    @work(thread=True, exit_on_error=False, group="connector", name="connector-status")
    def _load_worker(self, runtime) -> None:
        from pipeline.checks.views import connector_snapshot

        try:
            snapshot = connector_snapshot(self.app.settings, runtime)
        finally:
            self._loading = False
        self.post_message(ConnectorLoaded(snapshot))

    @on(ConnectorLoaded)
    def _loaded(self, message: ConnectorLoaded) -> None:
        self.show_snapshot(message.snapshot)

    def show_snapshot(self, snap: ConnectorSnapshot) -> None:
        self.snapshot = snap
        state_widget = self.query_one("#connector-state", Static)
        trace_widget = self.query_one("#connector-trace", Static)
        status = snap.status
        if status is None:
            state_widget.update(
                Text.assemble(
                    ("connector ", "bold"), ("UNKNOWN", "bold red"), f"  status unavailable: {snap.error or '?'}"
                )
            )
            trace_widget.display = False
        else:
            state = status.effective_state
            line = Text.assemble(
                ("connector ", "bold"), (status.name, "bold"), "  ", (f" {state} ", STATE_STYLE.get(state, "bold red"))
            )
            if state == "RETRYING" and status.retry_attempt is not None:
                line.append(f"  attempt #{status.retry_attempt} of {status.retry_limit or 'infinity'}", style="yellow")
            if status.events_captured is not None:
                line.append(f"  {status.events_captured} events captured")
            if status.last_event_at is not None:
                line.append(f", last {status.last_event_at.strftime('%Y-%m-%d %H:%M:%S')}")
            # What a state that is not RUNNING needs: why (a stopped engine says what stopped it).
            if state != "RUNNING" and status.last_error:
                line.append("\n")
                line.append("last error: " if state in ("RETRYING", "FAILED") else "reason: ", style="bold")
                line.append(status.last_error, style="red" if state != "PAUSED" else "yellow")
            state_widget.update(line)
            trace = status.error_trace if state == "FAILED" else None
            trace_widget.display = bool(trace)
            if trace:
                trace_widget.update(Text(trace.strip(), style="red"))
                trace_widget.border_title = "error trace"
        self.set_class(status is not None and status.effective_state == "FAILED", "failed")

        tasks = self.query_one("#connector-tasks", DataTable)
        tasks.clear()
        for task in status.tasks if status else []:
            first = (task.trace or "").strip().splitlines()
            # A task without its own trace that is not running says why through its connector's.
            if first:
                error = first[-1]
            else:
                error = (status.last_error or "") if task.state != "RUNNING" else ""
            tasks.add_row(
                str(task.id),
                Text(task.state, style=STATE_STYLE.get(task.state, "red")),
                task.worker_id,
                error if len(error) <= 48 else error[:47] + "…",
            )
        offsets = self.query_one("#connector-offsets", DataTable)
        offsets.clear()
        for p in snap.partitions:
            lag = p.lag
            offsets.add_row(
                p.topic,
                str(p.partition),
                str(p.low),
                str(p.end),
                "-" if p.position is None else str(p.position),
                Text("-" if lag is None else str(lag), style="bold yellow" if lag else "green"),
            )
        for topic in snap.missing_topics:
            offsets.add_row(topic, "-", "-", Text("no topic", style="bold red"), "-", "-")
        if snap.offsets_error:
            offsets.add_row(Text(f"offsets unavailable: {snap.offsets_error}", style="red"), "", "", "", "", "")

    # -- actions ------------------------------------------------------------------------
    def action_reload(self) -> None:
        self.refresh_data()

    def action_focus_log(self) -> None:
        self.query_one("#connector-log LogView").focus()

    def action_toggle_probes(self) -> None:
        self.query_one("#connector-log", LogPane).toggle_probes()

    def action_restart(self, only_failed: bool) -> None:
        verb = "restart failed tasks" if only_failed else "restart"
        confirm_then(self, f"Connector: {verb}?", lambda: self._act(verb, only_failed=only_failed))

    def action_pause(self) -> None:
        confirm_then(self, "Pause the connector?", lambda: self._act("pause"), "Changes stop being captured.")

    def action_resume(self) -> None:
        self._act("resume")

    def _act(self, verb: str, only_failed: bool = False) -> None:
        runtime = getattr(self.app, "runtime", None)
        if runtime is None:
            self.notify("no runtime (recorded data)", severity="warning")
            return
        if self._busy:
            self.notify("a connector action is already running", severity="warning")
            return
        self._busy = True
        self.notify(f"connector: {verb}…")
        self._act_worker(runtime, verb, only_failed)

    @work(thread=True, exit_on_error=False, group="connector-action", name="connector-action")
    def _act_worker(self, runtime, verb: str, only_failed: bool) -> None:
        from pipeline.checks import fixes, probes

        try:
            if verb.startswith("restart"):
                state = fixes.fix_restart_connector(self.app.settings, runtime, only_failed=only_failed)
                text = f"connector restarted: {state}"
            else:
                control = probes.connector_control(self.app.settings, runtime)
                getattr(control, verb)()
                text = f"connector: {verb} requested"
        finally:
            self._busy = False
        self.post_message(ConnectorActionDone(text))

    @on(ConnectorActionDone)
    def _done(self, message: ConnectorActionDone) -> None:
        self.notify(message.text)
        self.refresh_data()
