"""Pipeline: the refresh steps with state, duration and counts; the live log of the
running step; full / incremental refresh, one selected step, cancel; the run history."""

from __future__ import annotations

import threading
from collections import deque

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable, Static

from tui.base import View, error_text, human_duration
from tui.log_pane import LogPane

STATE_STYLE = {
    "pending": "dim",
    "running": "bold cyan",
    "ok": "green",
    "failed": "bold red",
    "cancelled": "bold yellow",
    "skipped": "dim yellow",
}


class RefreshEvent(Message):
    """One StepStarted / StepFinished / RunFinished event of pipeline.orchestration.refresh."""

    def __init__(self, event: object) -> None:
        super().__init__()
        self.event = event


class StepLogReady(Message):
    pass


class RefreshFailed(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class HistoryLoaded(Message):
    def __init__(self, runs: list[dict]) -> None:
        super().__init__()
        self.runs = runs


class RunnerStatus(Message):
    """The continuous runner's heartbeat (None: none ever ran), or why it could not be read."""

    def __init__(self, beat: object | None, error: str | None = None) -> None:
        super().__init__()
        self.beat, self.error = beat, error


class RunnerToggled(Message):
    def __init__(self, text: str, severity: str = "information") -> None:
        super().__init__()
        self.text, self.severity = text, severity


def runner_text(beat, timeout: float, key: str) -> Text:
    """One line of the continuous runner: its state and each table's lag, stage by stage."""
    if beat is None:
        return Text.assemble(("continuous ", "bold"), ("off", "dim"), f" · {key} starts `bi-console run`")
    stale = beat.state != "stopped" and beat.age_seconds > timeout
    if beat.state == "stopped" or stale:
        state = ("DEAD: no heartbeat for " + f"{beat.age_seconds:.0f}s", "bold red") if stale else ("off", "dim")
        return Text.assemble(("continuous ", "bold"), state, f" · {key} starts it")
    parts: list[str] = []
    for table, stages in beat.detail.get("tables", {}).items():
        lag = stages.get("source_to_marts", {})
        waiting = [
            f"{label} {stages.get(stage, {}).get('events') or 0}"
            for stage, label in (("topic_to_raw", "topic"), ("raw_to_bronze", "raw"), ("bronze_to_marts", "bronze"))
            if stages.get(stage, {}).get("events")
        ]
        parts.append(
            f"{table} {lag.get('seconds') or 0:.1f}s" + (f" ({', '.join(waiting)} waiting)" if waiting else "")
        )
    latency = beat.detail.get("latency", {})
    p95 = latency.get("p95")
    failing = [name for name, stage in beat.detail.get("stages", {}).items() if stage.get("error")]
    return Text.assemble(
        ("continuous ", "bold"),
        (beat.state, "bold green" if beat.state == "running" else "yellow"),
        f" pid {beat.pid} · behind the source: {'; '.join(parts) or '—'}",
        f" · commit→marts p95 {p95:.1f}s" if p95 is not None else "",
        (f" · retrying {', '.join(failing)}", "bold yellow") if failing else "",
        f" · {key} stops it",
    )


class PastRunLoaded(Message):
    def __init__(self, record: dict, log_lines: list[str] | None) -> None:
        super().__init__()
        self.record, self.log_lines = record, log_lines


def compact_number(value: int | float) -> str:
    """500 -> "500", 32530 -> "32.5k", 1234567 -> "1.2M": short, and never read as another number."""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.1f}"
    value = int(value)
    for limit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(value) >= limit:
            scaled = value / limit
            text = f"{scaled:.1f}" if abs(scaled) < 100 else f"{scaled:.0f}"
            return text.removesuffix(".0") + suffix
    return str(value)


def _counts_text(counts: dict, width: int | None = None) -> str:
    """The counts as `key=value` parts that fit in `width` cells. A part that does not fit is
    left out whole (zeros first), and "…" says so: a cut part would read as another number."""
    parts = []
    for key, value in counts.items():
        if isinstance(value, (dict, list)):
            continue
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, (int, float)):
            value = compact_number(value)
        parts.append(f"{key}={value}")
    text = " ".join(parts)
    if width is None or len(text) <= width:
        return text
    kept = [p for p in parts if not p.endswith("=0")]
    while kept and len(" ".join(kept)) + 2 > width:
        kept.pop()
    return " ".join([*kept, "…"])


class StepsTable(DataTable):
    """The step table; tells its view when its width changes, so that the counts refit."""

    class Resized(Message):
        pass

    def on_resize(self) -> None:
        self.post_message(self.Resized())

    def counts_width(self) -> int | None:
        if not self.size.width:
            return None  # not laid out yet (a hidden tab): refit on the first resize
        others = sum(column.get_render_width(self) for key, column in self.columns.items() if key.value != "counts")
        return max(4, self.scrollable_content_region.width - others - 2 * self.cell_padding)


def planned_steps(settings, steps: list[str] | None = None, tables: list[str] | None = None) -> list[tuple[str, str]]:
    """(table, step) rows of a run, in the order run_refresh executes them."""
    from pipeline.orchestration.plan import plan

    return [(entry.table, entry.step.name) for entry in plan(settings, steps, tables)]


class PipelineView(View):
    BINDINGS = [
        Binding("s", "run_step", "Run step", id="run_step"),
        Binding("x", "cancel", "Cancel", id="cancel_refresh"),
        Binding("h", "focus_history", "History", id="pipeline_history"),
        Binding("c", "toggle_runner", "Continuous", id="toggle_runner"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.running = False
        self.cancel_event = threading.Event()
        self.rows: dict[tuple[str, str], dict] = {}
        self.last_run: object | None = None
        self._log_lock = threading.Lock()
        self._log_queue: deque[str] = deque()
        self._log_posted = False
        self.run_count = 0
        self.running_text = ""  # what the running refresh is, for the quit question
        self.history_runs: dict[str, dict] = {}  # run id -> history record, of the rows shown
        self.run_rows: set[tuple[str, str]] = set()  # the (table, step) rows of the running or last run
        self._idle = True  # the status line still shows the idle hint (redrawn when the keymap changes)

    def compose(self) -> ComposeResult:
        yield Static(self._idle_text(), id="pipeline-status")
        yield Static(runner_text(None, 30.0, self.key("toggle_runner")), id="runner-status")
        with Horizontal(id="pipeline-top"):
            steps = StepsTable(id="steps-table", cursor_type="row")
            steps.border_title = "steps"
            yield steps
            history = DataTable(id="history-table", cursor_type="row")
            history.border_title = "history"
            yield history
        yield LogPane("step log", id="step-log")

    def _idle_text(self) -> str:
        return (
            f"idle · {self.key('full_refresh')} full refresh · {self.key('incremental_refresh')} incremental"
            f" · {self.key('run_step')} run selected step"
        )

    def keys_changed(self) -> None:
        if self._idle:
            self._set_status(self._idle_text())
            self._idle = True

    def on_mount(self) -> None:
        steps = self.query_one("#steps-table", DataTable)
        steps.add_column("table", key="table", width=12)
        steps.add_column("step", key="step", width=9)
        steps.add_column("state", key="state", width=9)
        steps.add_column("time", key="time", width=7)
        steps.add_column("counts", key="counts")
        history = self.query_one("#history-table", DataTable)
        for label in ("started", "mode", "outcome", "time", "failed"):
            history.add_column(label, key=label)
        self.show_plan(planned_steps(self.app.settings))
        self.runner_beat: object | None = None
        if self.live:
            self.set_interval(2.0, self._runner_worker)

    # -- the continuous runner ------------------------------------------------------------
    @work(thread=True, exit_on_error=False, group="runner", name="runner-status", exclusive=True)
    def _runner_worker(self) -> None:
        from pipeline.stores.runner_state import read_heartbeat

        try:
            self.post_message(RunnerStatus(read_heartbeat(self.app.settings)))
        except Exception as exc:  # PostgreSQL away: the Services view says so; this line says unknown
            self.post_message(RunnerStatus(None, error_text(exc)))

    @on(RunnerStatus)
    def _runner_status(self, message: RunnerStatus) -> None:
        self.runner_beat = message.beat
        widget = self.query_one("#runner-status", Static)
        if message.error:
            widget.update(Text.assemble(("continuous ", "bold"), ("unknown: ", "yellow"), message.error[:200]))
            return
        widget.update(
            runner_text(
                message.beat, self.app.settings.file.runner.heartbeat_timeout_seconds, self.key("toggle_runner")
            )
        )

    def action_toggle_runner(self) -> None:
        self._toggle_worker()

    @work(thread=True, exit_on_error=False, group="runner-toggle", name="runner-toggle", exclusive=True)
    def _toggle_worker(self) -> None:
        from pipeline.orchestration.continuous import start_in_background, stop_running
        from pipeline.stores.runner_state import read_heartbeat

        settings = self.app.settings
        try:
            beat = read_heartbeat(settings)
            timeout = settings.file.runner.heartbeat_timeout_seconds
            if beat is not None and beat.state != "stopped" and beat.age_seconds <= timeout:
                self.post_message(RunnerToggled(stop_running(beat)))
            else:
                pid = start_in_background(settings)
                self.post_message(
                    RunnerToggled(
                        f"started the continuous runner (pid {pid}); its log: {settings.data_dir}/logs/runner.log"
                    )
                )
        except Exception as exc:  # shown, never a dead app
            self.post_message(RunnerToggled(error_text(exc), "error"))
        self._runner_worker()

    @on(RunnerToggled)
    def _runner_toggled(self, message: RunnerToggled) -> None:
        self.notify(message.text, severity=message.severity)  # type: ignore[arg-type]

    # -- the step table -------------------------------------------------------------
    def show_plan(self, plan: list[tuple[str, str]]) -> None:
        table = self.query_one("#steps-table", DataTable)
        table.clear()
        self.rows = {}
        for name, step in plan:
            self.rows[(name, step)] = {"state": "pending", "duration": None, "counts": {}, "error": None}
            table.add_row(name, step, Text("pending", style=STATE_STYLE["pending"]), "-", "", key=f"{name}:{step}")

    def show_run_plan(self, run_plan: list[tuple[str, str]]) -> None:
        """Mark a run's rows pending; the table keeps every step, the others with their last result,
        so that a run of one step never hides the rest of the pipeline."""
        whole = planned_steps(self.app.settings)
        if set(run_plan) >= set(whole):
            self.show_plan(run_plan)
        else:
            if not set(whole) <= set(self.rows):
                self.show_plan(whole)
            for name, step in run_plan:
                self.set_step(name, step, "pending")
        self.run_rows = set(run_plan)

    def set_step(
        self,
        name: str,
        step: str,
        state: str,
        duration: float | None = None,
        counts: dict | None = None,
        error: str | None = None,
        note: str | None = None,
    ) -> None:
        table = self.query_one("#steps-table", DataTable)
        key = f"{name}:{step}"
        if (name, step) not in self.rows:
            self.rows[(name, step)] = {}
            table.add_row(name, step, "", "", "", key=key)
        self.rows[(name, step)].update(state=state, duration=duration, counts=counts or {}, error=error, note=note)
        table.update_cell(key, "state", Text(state, style=STATE_STYLE.get(state, "")))
        table.update_cell(key, "time", human_duration(duration) if duration is not None else "-", update_width=True)
        self._show_counts(key, self.rows[(name, step)])

    def _show_counts(self, key: str, row: dict) -> None:
        table = self.query_one("#steps-table", StepsTable)
        error, note = row.get("error"), row.get("note")
        detail = error or note or _counts_text(row.get("counts") or {}, table.counts_width())
        style = "red" if error else ("yellow" if note else "")
        table.update_cell(key, "counts", Text(detail or "", style=style), update_width=True)

    @on(StepsTable.Resized)
    def _refit_counts(self) -> None:
        for (name, step), row in self.rows.items():
            if row.get("counts") and not row.get("error"):
                self._show_counts(f"{name}:{step}", row)

    def step_states(self) -> dict[str, str]:
        return {f"{name}:{step}": row.get("state", "?") for (name, step), row in self.rows.items()}

    # -- history ----------------------------------------------------------------------
    def refresh_data(self) -> None:
        if self.live:
            self._history_worker()

    @work(thread=True, exit_on_error=False, group="history", name="history")
    def _history_worker(self) -> None:
        from pipeline.orchestration.refresh import read_history

        self.post_message(HistoryLoaded(read_history(self.app.settings, limit=50)))

    @on(HistoryLoaded)
    def _history_loaded(self, message: HistoryLoaded) -> None:
        self.show_history(message.runs)

    def show_history(self, runs: list[dict]) -> None:
        from pipeline.orchestration.refresh import run_label

        table = self.query_one("#history-table", DataTable)
        table.clear()
        self.history_runs = {}
        for run in runs:
            started = str(run.get("started_at") or "")[:19].replace("T", " ")
            outcome = run.get("outcome", "?")
            run_id = run.get("run_id")
            if run_id in self.history_runs:
                run_id = None  # a record written twice: one row opens it
            if run_id:
                self.history_runs[run_id] = run
            table.add_row(
                started[5:16] if len(started) >= 16 else started,
                run_label(run),
                Text(outcome, style=STATE_STYLE.get(outcome, "")),
                human_duration(run.get("duration")),
                run.get("failed_step") or "",
                key=run_id,
            )

    @on(DataTable.RowSelected, "#history-table")
    def _history_row(self, event: DataTable.RowSelected) -> None:
        event.stop()
        run_id = event.row_key.value if event.row_key is not None else None
        if run_id:
            self.open_run(str(run_id))

    def open_run(self, run_id: str) -> None:
        """Show a past run: its per-step results and its log (read from disk when live)."""
        record = self.history_runs.get(run_id)
        if record is None:
            self.notify(f"run {run_id} is not in the history", severity="warning")
            return
        if self.live:
            self._past_run_worker(run_id)
        else:
            self.post_message(PastRunLoaded(record, None))

    @work(thread=True, exit_on_error=False, group="past-run", name="past-run")
    def _past_run_worker(self, run_id: str) -> None:
        from pipeline.orchestration.refresh import read_run

        record, lines = read_run(self.app.settings, run_id)
        self.post_message(PastRunLoaded(record or self.history_runs[run_id], lines))

    @on(PastRunLoaded)
    def _past_run_loaded(self, message: PastRunLoaded) -> None:
        from tui.run_screen import PastRunScreen

        self.app.push_screen(PastRunScreen(message.record, message.log_lines))

    # -- running ------------------------------------------------------------------------
    def start_refresh(self, mode: str, steps: list[str] | None = None, tables: list[str] | None = None) -> bool:
        if self.running:
            self.notify(f"a refresh is already running ({self.key('cancel_refresh')} cancels it)", severity="warning")
            return False
        self.running = True
        self.run_count += 1
        self.cancel_event = threading.Event()
        self.show_run_plan(planned_steps(self.app.settings, steps, tables))
        pane = self.query_one("#step-log", LogPane)
        pane.clear()
        what = (
            f"step {', '.join(steps)}" + (f" of {', '.join(tables)}" if tables else "") if steps else f"{mode} refresh"
        )
        self.running_text = f"running: {what}"
        self._set_status(Text.assemble(("running ", "bold cyan"), what, f" · {self.key('cancel_refresh')} cancels"))
        self._refresh_worker(mode, steps, tables, self.cancel_event)
        return True

    @work(thread=True, exit_on_error=False, group="refresh", name="refresh")
    def _refresh_worker(self, mode: str, steps, tables, cancel: threading.Event) -> None:
        from pipeline.orchestration.refresh import StepLog
        from pipeline.orchestration.refresh_process import run_refresh_in_child

        def on_event(event: object) -> None:
            if isinstance(event, StepLog):
                with self._log_lock:
                    self._log_queue.append(f"[{event.table}:{event.step}] {event.line}")
                    post = not self._log_posted
                    self._log_posted = True
                if post:
                    self.post_message(StepLogReady())
            else:
                self.post_message(RefreshEvent(event))

        try:
            # A child process: dbt and GX hold the GIL, and the screen must keep answering keys.
            run_refresh_in_child(
                self.app.settings, mode=mode, steps=steps, tables=tables, on_event=on_event, cancel=cancel
            )
        except Exception as exc:  # lock held elsewhere, bad config: shown, never a crash
            self.post_message(RefreshFailed(error_text(exc)))

    def worker_failed(self, worker) -> None:
        if worker.group == "refresh":
            self.running = False
            self._set_status(Text(f"refresh worker failed: {error_text(worker.error)}", style="bold red"))

    @on(StepLogReady)
    def _drain_log(self) -> None:
        with self._log_lock:
            lines = list(self._log_queue)
            self._log_queue.clear()
            self._log_posted = False
        self.query_one("#step-log", LogPane).write_lines(lines)

    @on(RefreshFailed)
    def _failed(self, message: RefreshFailed) -> None:
        self.running = False
        self._set_status(Text(f"refresh not run: {message.text}", style="bold red"))
        self.notify(message.text, severity="error", title="refresh")

    @on(RefreshEvent)
    def _event(self, message: RefreshEvent) -> None:
        self.apply_event(message.event)

    def apply_event(self, event: object, announce: bool = True) -> None:
        from pipeline.orchestration.refresh import RunFinished, StepFinished, StepStarted

        if isinstance(event, StepStarted):
            self.set_step(event.table, event.step, "running")
            pane = self.query_one("#step-log", LogPane)
            pane.set_title(f"{event.table}:{event.step} log")
        elif isinstance(event, StepFinished):
            # A skipped step says why (Superset stopped): a warning, where the counts would be.
            note = event.notices[0] if event.state == "skipped" and event.notices else None
            self.set_step(event.table, event.step, event.state, event.duration, event.counts, event.error, note)
            for notice in event.notices if announce else ():  # a topic reset: said, not only logged
                self.notify(notice, severity="warning", title=f"{event.table}:{event.step}", timeout=30)
        elif isinstance(event, RunFinished):
            self._drain_log()
            self.running = False
            run = event.run
            self.last_run = run
            for (name, step), row in self.rows.items():
                if row.get("state") in ("pending", "running") and (not self.run_rows or (name, step) in self.run_rows):
                    self.set_step(name, step, "skipped")
            style = {"ok": "bold green", "failed": "bold red", "cancelled": "bold yellow"}.get(run.outcome, "")
            text = Text.assemble(
                ("run ", "bold"), run.run_id, " ", (run.outcome, style), f" in {human_duration(run.duration)}"
            )
            if run.error:
                text.append(f" · {run.failed_step}: {run.error}", style="red")
            if getattr(self.app, "quit_pending", False):
                text.append(" · quitting", style="bold")
            self._set_status(text)
            if not announce:
                return
            self.notify(
                f"refresh {run.outcome} in {human_duration(run.duration)}",
                severity="information" if run.outcome == "ok" else "error",
            )
            self.refresh_data()
            refreshed = getattr(self.app, "on_refresh_finished", None)
            if callable(refreshed):
                refreshed(run)

    def _set_status(self, text) -> None:
        self._idle = False
        self.query_one("#pipeline-status", Static).update(text)

    # -- actions ------------------------------------------------------------------------
    def action_cancel(self) -> None:
        if not self.running:
            self.notify("no refresh is running", severity="warning")
            return
        self.cancel_event.set()
        self._set_status(Text("cancelling: the running step stops at its next safe point…", style="bold yellow"))

    def cancel_for_quit(self) -> None:
        self.cancel_event.set()
        self._set_status(
            Text(
                "cancelling the refresh: bi-console quits as soon as the running step has stopped…", style="bold yellow"
            )
        )

    def action_run_step(self) -> None:
        table = self.query_one("#steps-table", DataTable)
        if table.row_count == 0:
            return
        row_key, _ = table.coordinate_to_cell_key((table.cursor_row, 0))
        name, _, step = str(row_key.value).partition(":")
        self.start_refresh("incremental", steps=[step], tables=None if name == "all" else [name])

    def action_focus_history(self) -> None:
        if self.has_class("narrow"):
            self.toggle_class("show-history")
            target = "#history-table" if self.has_class("show-history") else "#steps-table"
            self.query_one(target).focus()
        else:
            self.query_one("#history-table").focus()

    def on_resize(self, event) -> None:
        self.set_class(event.size.width < 120, "narrow")
