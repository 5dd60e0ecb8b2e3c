"""Services: every service of the active runtime with state, health, uptime and ports;
start, stop and restart the selected one; its log in a pane that follows."""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable

from pipeline.runtime.model import ServiceStatus
from tui.base import View, human_duration
from tui.confirm import confirm_then
from tui.log_pane import LogPane


class StatusesLoaded(Message):
    def __init__(self, statuses: list[ServiceStatus], elapsed: float) -> None:
        super().__init__()
        self.statuses, self.elapsed = statuses, elapsed


class ActionDone(Message):
    def __init__(self, text: str, severity: str = "information") -> None:
        super().__init__()
        self.text, self.severity = text, severity


def _state_text(status: ServiceStatus) -> Text:
    if status.state == "running":
        return Text("running", style="green")
    return Text(status.state, style="bold red")


def _health_text(status: ServiceStatus) -> Text:
    return Text("✓ healthy", style="green") if status.healthy else Text("✗ down", style="bold red")


class ServicesView(View):
    BINDINGS = [
        Binding("s", "start", "Start", id="service_start"),
        Binding("x", "stop", "Stop", id="service_stop"),
        Binding("r", "restart", "Restart", id="service_restart"),
        Binding("l", "focus_log", "Log", id="service_log"),
        Binding("h", "toggle_probes", "Probes", id="log_probes"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.statuses: list[ServiceStatus] = []
        self.selected: str | None = None
        self._polling = False
        self.last_poll_elapsed: float | None = None

    def compose(self) -> ComposeResult:
        table = DataTable(id="services-table", cursor_type="row", zebra_stripes=True)
        table.border_title = "services"
        yield table
        yield LogPane("log", probes=True, id="service-log")

    def on_mount(self) -> None:
        table = self.query_one("#services-table", DataTable)
        table.add_column("service", key="name", width=10)
        table.add_column("state", key="state", width=8)
        table.add_column("health", key="health", width=10)
        table.add_column("uptime", key="uptime", width=8)
        table.add_column("ports", key="ports", width=6)
        table.add_column("detail", key="detail")

    # -- data -----------------------------------------------------------------------
    def refresh_data(self) -> None:
        self.poll()

    def poll(self) -> None:
        runtime = getattr(self.app, "runtime", None)
        if runtime is None or self._polling:
            return
        self._polling = True
        self._poll_worker(runtime)

    @work(thread=True, exit_on_error=False, group="status", name="status")
    def _poll_worker(self, runtime) -> None:
        started = time.monotonic()
        try:
            statuses = runtime.status_all()
        finally:
            self._polling = False
        self.post_message(StatusesLoaded(statuses, time.monotonic() - started))

    @on(StatusesLoaded)
    def _loaded(self, message: StatusesLoaded) -> None:
        self.last_poll_elapsed = message.elapsed
        self.show_statuses(message.statuses)

    def show_statuses(self, statuses: list[ServiceStatus]) -> None:
        self.statuses = list(statuses)
        table = self.query_one("#services-table", DataTable)
        now = self.now()
        keys = [s.name for s in statuses]
        existing = [row.value for row in table.rows]
        if existing != keys:
            cursor = table.cursor_row
            table.clear()
            for s in statuses:
                table.add_row(*self._cells(s, now), key=s.name)
            if statuses:
                table.move_cursor(row=min(max(cursor, 0), len(statuses) - 1))
        else:
            for s in statuses:
                for column, value in zip(
                    ("name", "state", "health", "uptime", "ports", "detail"), self._cells(s, now), strict=False
                ):
                    table.update_cell(s.name, column, value, update_width=True)
        down = [s.name for s in statuses if not s.healthy]
        table.border_title = "services" + (f" · DOWN: {', '.join(down)}" if down else " · all healthy")
        table.set_class(bool(down), "has-down")
        if self.selected is None and statuses:
            self.select(statuses[min(max(table.cursor_row, 0), len(statuses) - 1)].name)

    def _cells(self, s: ServiceStatus, now) -> tuple:
        uptime = None
        if s.started_at is not None and s.state == "running":
            uptime = (now - s.started_at).total_seconds()
        return (
            s.name,
            _state_text(s),
            _health_text(s),
            human_duration(uptime) if uptime is not None else "-",
            ",".join(map(str, s.ports)) or "-",
            s.health_detail,
        )

    def status_of(self, name: str) -> ServiceStatus | None:
        return next((s for s in self.statuses if s.name == name), None)

    # -- selection and log ------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#services-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value:
            self.select(event.row_key.value)

    def select(self, service: str) -> None:
        if service == self.selected:
            return
        self.selected = service
        pane = self.query_one("#service-log", LogPane)
        runtime = getattr(self.app, "runtime", None)
        if runtime is None or not self.live:
            pane.set_title(f"{service} log")
            return
        pane.follow_service(runtime, service)

    def show_log(self, lines: list[str]) -> None:
        self.query_one("#service-log", LogPane).write_lines(lines)

    # -- actions --------------------------------------------------------------------
    def _selected_or_warn(self) -> str | None:
        if not self.selected:
            self.notify("no service selected", severity="warning")
        return self.selected

    def action_focus_log(self) -> None:
        self.query_one("#service-log LogView").focus()

    def action_toggle_probes(self) -> None:
        self.query_one("#service-log", LogPane).toggle_probes()

    def action_start(self) -> None:
        self.control(self._selected_or_warn(), "start")

    def action_stop(self) -> None:
        self.control(self._selected_or_warn(), "stop")

    def action_restart(self) -> None:
        self.control(self._selected_or_warn(), "restart")

    def control(self, service: str | None, verb: str) -> None:
        """Start, stop or restart a service (the selected one, or one named in the command palette)."""
        if not service:
            return
        if verb == "start":
            self._control(service, verb)
            return
        confirm_then(
            self,
            f"{verb.capitalize()} {service}?",
            lambda: self._control(service, verb),
            "Whatever depends on it stops working until it is back.",
        )

    def service_names(self) -> list[str]:
        if self.statuses:
            return [s.name for s in self.statuses]
        runtime = getattr(self.app, "runtime", None)
        try:
            return list(runtime.service_names()) if runtime is not None else []
        except Exception:  # the palette lists what it can; the poll reports the runtime's error
            return []

    def _control(self, service: str, verb: str) -> None:
        runtime = getattr(self.app, "runtime", None)
        if runtime is None:
            self.notify("no runtime (recorded data)", severity="warning")
            return
        self.notify(f"{verb} {service}…")
        self._control_worker(runtime, verb, service)

    @work(thread=True, exit_on_error=False, group="control", name="service-control")
    def _control_worker(self, runtime, verb: str, service: str) -> None:
        if verb == "stop":
            runtime.stop(service)
        else:
            try:
                getattr(runtime, verb)(service, log=lambda line: None)
            except TypeError:
                getattr(runtime, verb)(service)
        self.post_message(ActionDone(f"{service}: {verb} done"))
        self.post_message(StatusesLoaded(runtime.status_all(), 0.0))

    @on(ActionDone)
    def _done(self, message: ActionDone) -> None:
        self.notify(message.text, severity=message.severity)
