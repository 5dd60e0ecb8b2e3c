"""A past run, opened from the Pipeline view's history: its per-step results and its log,
as the Pipeline view showed them while it ran. Esc closes it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from tui.base import human_duration
from tui.log_pane import LogPane

STATE_STYLE = {"ok": "green", "failed": "bold red", "cancelled": "bold yellow", "skipped": "dim yellow"}


class PastRunScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    PastRunScreen { align: center middle; }
    #past-run { width: 95%; height: 90%; border: thick $primary; background: $panel; }
    #past-run-title { height: auto; padding: 0 1; }
    #past-run-steps { height: auto; max-height: 12; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close", show=False),
        # The app's `/` looks for a log in the view under this screen; this one is on top.
        Binding("slash", "filter_log", "Filter log", show=False),
    ]

    def __init__(self, record: dict, log_lines: list[str] | None) -> None:
        super().__init__()
        self.record, self.log_lines = record, log_lines

    def compose(self) -> ComposeResult:
        from pipeline.orchestration.refresh import run_label

        run = self.record
        outcome = run.get("outcome", "?")
        title = Text.assemble(
            ("run ", "bold"),
            str(run.get("run_id", "?")),
            " · ",
            run_label(run),
            " · ",
            (outcome, STATE_STYLE.get(outcome, "")),
            f" in {human_duration(run.get('duration'))} · started "
            f"{str(run.get('started_at') or '?')[:19].replace('T', ' ')}",
        )
        if run.get("error"):
            title.append(f"\n{run.get('failed_step')}: {run['error']}", style="red")
        title.append("\nEsc closes", style="dim")
        with Vertical(id="past-run"):
            yield Static(title, id="past-run-title")
            yield DataTable(id="past-run-steps", cursor_type="row")
            yield LogPane("run log", id="past-run-log")

    def on_mount(self) -> None:
        from tui.pipeline_view import _counts_text

        table = self.query_one("#past-run-steps", DataTable)
        for label in ("table", "step", "state", "time", "counts"):
            table.add_column(label, key=label)
        for step in self.record.get("steps") or []:
            state = step.get("state", "?")
            error = step.get("error")
            notices = "; ".join(step.get("notices") or [])
            detail = error or " ".join(p for p in (_counts_text(step.get("counts") or {}), notices) if p)
            table.add_row(
                step.get("table", "?"),
                step.get("step", "?"),
                Text(state, style=STATE_STYLE.get(state, "")),
                human_duration(step.get("duration")),
                Text(detail, style="red" if error else ""),
            )
        pane = self.query_one("#past-run-log", LogPane)
        if self.log_lines is None:
            pane.write_lines(
                ["(no log kept for this run: it is older than the run logs kept, or from before they were kept)"]
            )
        else:
            pane.write_lines(self.log_lines)
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_filter_log(self) -> None:
        self.query_one("#past-run-log", LogPane).open_filter()
