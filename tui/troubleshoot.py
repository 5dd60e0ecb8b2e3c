"""Troubleshooting: one panel per problem of the runbook. Each runs its diagnosis live
(every check ✓ or ✗ with its evidence) and offers its fixes on keys."""

from __future__ import annotations

import threading
from collections import deque

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Static

from pipeline.checks.diagnose import PROBLEMS
from pipeline.checks.model import Check
from tui.base import View, error_text
from tui.confirm import confirm_then
from tui.log_pane import LogPane

# problem -> (fix id, key, label)
FIXES = {
    "no_cdc_events": ("fix_connector", "c", "restart connector"),
    "bronze_load": ("fix_bronze", "b", "repair bronze (tables, lost raw objects)"),
    "dbt": ("fix_dbt", "t", "rerun dbt with debug logging"),
    "stale_bi": ("fix_bi", "e", "refresh BI cache"),
}


class DiagnosisDone(Message):
    def __init__(self, problem: str, checks: list[Check]) -> None:
        super().__init__()
        self.problem, self.checks = problem, checks


class FixDone(Message):
    def __init__(self, problem: str, text: str, ok: bool) -> None:
        super().__init__()
        self.problem, self.text, self.ok = problem, text, ok


class FixLogReady(Message):
    pass


def render_checks(checks: list[Check]) -> Text:
    text = Text()
    for i, check in enumerate(checks):
        if i:
            text.append("\n")
        if check.ok:
            text.append("✓ ", style="bold green")
        elif check.severity == "skipped":
            text.append("· ", style="dim")
        elif check.severity in ("warning", "info"):
            text.append("✗ ", style="bold yellow")
        else:
            text.append("✗ ", style="bold red")
        text.append(check.name, style="bold" if not check.ok else "")
        text.append(f"  {check.evidence}", style="dim" if check.ok or check.severity == "skipped" else "")
        if not check.ok and check.fix:
            text.append(f"\n    → {check.fix}", style="italic yellow")
    return text


class ProblemPanel(Vertical):
    def __init__(self, problem: str) -> None:
        super().__init__(id=f"problem-{problem}", classes="problem")
        self.problem = problem
        self.checks: list[Check] | None = None
        self.running = False
        self.recheck = False  # asked again while running: run once more when this one ends

    def compose(self) -> ComposeResult:
        yield Static(self._undiagnosed_text(), classes="checks")
        fix_id, _, label = FIXES[self.problem]
        with Horizontal(classes="fixes"):
            yield Button(f"{self._key(fix_id)} {label}", id=f"btn-{fix_id}", compact=True, variant="warning")
            yield Button(f"{self._key('diagnose')} diagnose", id=f"btn-diagnose-{self.problem}", compact=True)

    def _key(self, binding_id: str) -> str:
        key_for = getattr(self.app, "key_for", None)
        return (
            key_for(binding_id)
            if callable(key_for)
            else next(b.key for b in TroubleshootView.BINDINGS if b.id == binding_id)
        )

    def _undiagnosed_text(self) -> Text:
        return Text(f"not diagnosed yet ({self._key('diagnose')} diagnoses every problem)", style="dim")

    def keys_changed(self) -> None:
        fix_id, _, label = FIXES[self.problem]
        self.query_one(f"#btn-{fix_id}", Button).label = f"{self._key(fix_id)} {label}"
        self.query_one(f"#btn-diagnose-{self.problem}", Button).label = f"{self._key('diagnose')} diagnose"
        if self.checks is None and not self.running:
            self.query_one(".checks", Static).update(self._undiagnosed_text())

    def on_mount(self) -> None:
        self.border_title = PROBLEMS[self.problem]

    def set_running(self) -> None:
        self.running = True
        self.border_subtitle = "diagnosing…"
        self.set_class(True, "running")

    def show_checks(self, checks: list[Check]) -> None:
        self.running = False
        self.checks = checks
        self.set_class(False, "running")
        failed = [c for c in checks if not c.ok and c.severity == "error"]
        warned = [c for c in checks if not c.ok and c.severity in ("warning", "info")]
        self.set_class(bool(failed), "bad")
        self.set_class(not failed and bool(warned), "warn")
        self.set_class(not failed and not warned, "good")
        ok = sum(1 for c in checks if c.ok)
        self.border_subtitle = f"{ok}/{len(checks)} checks ok"
        self.query_one(".checks", Static).update(render_checks(checks))


class TroubleshootView(View):
    BINDINGS = [
        Binding("d", "diagnose_all", "Diagnose", id="diagnose"),
        Binding("c", "fix('no_cdc_events')", "Restart connector", id="fix_connector"),
        Binding("b", "fix('bronze_load')", "Repair bronze", id="fix_bronze"),
        Binding("t", "fix('dbt')", "dbt --debug", id="fix_dbt"),
        Binding("e", "fix('stale_bi')", "Refresh BI", id="fix_bi"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._fixing: set[str] = set()
        self._log_lock = threading.Lock()
        self._log_queue: deque[str] = deque()
        self._log_posted = False
        self.diagnosed_once = False
        self.stale = False  # a service changed state since the panels were diagnosed

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="problems"):
            for problem in PROBLEMS:
                yield ProblemPanel(problem)
            yield LogPane("fix output", max_lines=2000, id="fix-log")

    def keys_changed(self) -> None:
        for panel in self.query(ProblemPanel):
            panel.keys_changed()

    def panel(self, problem: str) -> ProblemPanel:
        return self.query_one(f"#problem-{problem}", ProblemPanel)

    def focus_main(self) -> None:
        self.query_one("#problems").focus()

    def refresh_data(self) -> None:
        if self.live and (not self.diagnosed_once or self.stale):
            self.action_diagnose_all()

    def services_changed(self, active: bool) -> None:
        """A service changed state: the diagnoses shown are out of date. Re-check at once when
        the view is on screen, else when it is next shown (its checks cost queries)."""
        if not self.live or not self.diagnosed_once:
            return
        if active:
            self.action_diagnose_all()
        else:
            self.stale = True

    # -- diagnosis ------------------------------------------------------------------------
    def action_diagnose_all(self) -> None:
        self.stale = False
        for problem in PROBLEMS:
            self.diagnose(problem)

    def diagnose(self, problem: str) -> None:
        if not self.live:
            return
        panel = self.panel(problem)
        if panel.running:
            panel.recheck = True  # it may have started before the change that asks for this one
            return
        self.diagnosed_once = True
        panel.set_running()
        self._diagnose_worker(problem)

    @work(thread=True, exit_on_error=False, group="diagnose", name="diagnose")
    def _diagnose_worker(self, problem: str) -> None:
        from pipeline.checks.diagnose import DIAGNOSES

        try:
            checks = DIAGNOSES[problem](self.app.settings, getattr(self.app, "runtime", None))
        except Exception as exc:  # the diagnosis itself broke: that is a failed check
            checks = [Check("diagnosis", "fail", f"{type(exc).__name__}: {error_text(exc)}")]
        self.post_message(DiagnosisDone(problem, checks))

    @on(DiagnosisDone)
    def _diagnosed(self, message: DiagnosisDone) -> None:
        panel = self.panel(message.problem)
        panel.show_checks(message.checks)
        if panel.recheck:
            panel.recheck = False
            self.diagnose(message.problem)

    def show_checks(self, problem: str, checks: list[Check]) -> None:
        self.panel(problem).show_checks(checks)

    # -- fixes ------------------------------------------------------------------------------
    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        event.stop()
        button_id = event.button.id or ""
        if button_id.startswith("btn-diagnose-"):
            self.diagnose(button_id.removeprefix("btn-diagnose-"))
            return
        for problem, (fix_id, _, _) in FIXES.items():
            if button_id == f"btn-{fix_id}":
                self.action_fix(problem)

    def action_fix(self, problem: str) -> None:
        confirm_then(
            self, f"Run the fix: {FIXES[problem][2]}?", lambda: self._start_fix(problem), "It writes to the stack."
        )

    def _start_fix(self, problem: str) -> None:
        if not self.live:
            self.notify("no live stack (recorded data)", severity="warning")
            return
        if problem in self._fixing:
            self.notify("this fix is already running", severity="warning")
            return
        self._fixing.add(problem)
        label = FIXES[problem][2]
        self.notify(f"{label}…")
        pane = self.query_one("#fix-log", LogPane)
        pane.set_title(f"fix output · {label}")
        self._show_fix_output()
        self._fix_worker(problem)

    def _show_fix_output(self) -> None:
        # The output sits below the panels: at most terminal sizes it is below the fold.
        self.query_one("#problems", VerticalScroll).scroll_to_widget(
            self.query_one("#fix-log", LogPane), animate=False, top=False
        )

    def _log(self, line: str) -> None:
        from pipeline.config.security import redact

        with self._log_lock:
            self._log_queue.append(redact(line, self.app.settings.secret_values()))
            post = not self._log_posted
            self._log_posted = True
        if post:
            self.post_message(FixLogReady())

    @work(thread=True, exit_on_error=False, group="fix", name="fix")
    def _fix_worker(self, problem: str) -> None:
        from pipeline.checks import fixes

        settings, runtime = self.app.settings, getattr(self.app, "runtime", None)
        try:
            if problem == "no_cdc_events":
                state = fixes.fix_restart_connector(settings, runtime, self._log)
                text, ok = f"connector restarted: {state}", state == "RUNNING"
            elif problem == "bronze_load":
                repair = fixes.fix_bronze_load(settings, self._log)
                text, ok = repair.summary(), not repair.lost
            elif problem == "dbt":
                result = fixes.fix_rerun_dbt_debug(settings, self._log)
                text, ok = f"dbt run ok in {result.elapsed:.1f}s", True
            else:
                counts = fixes.fix_refresh_bi(settings, self._log)
                text, ok = f"BI cache refreshed: {counts}", True
        except Exception as exc:
            text, ok = f"{FIXES[problem][2]} failed: {error_text(exc)}", False
            self._log(text)
        self.post_message(FixDone(problem, text, ok))

    @on(FixLogReady)
    def _drain(self) -> None:
        with self._log_lock:
            lines = list(self._log_queue)
            self._log_queue.clear()
            self._log_posted = False
        self.query_one("#fix-log", LogPane).write_lines(lines)

    @on(FixDone)
    def _fixed(self, message: FixDone) -> None:
        self._drain()
        self._fixing.discard(message.problem)
        self._show_fix_output()  # the operator may have scrolled away while it ran
        self.notify(message.text, severity="information" if message.ok else "error", title="fix")
        self.diagnose(message.problem)
