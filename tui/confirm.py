"""The confirmation asked before an action that stops, restarts or writes: a modal whose
default answer is "no", so that a stray Enter or a mistyped key never does the damage.
`confirm_actions = false` in the config file turns it off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.dom import DOMNode
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    CSS_PATH = str(Path(__file__).with_name("confirm.tcss"))
    # "No" has the focus: Enter alone declines.
    AUTO_FOCUS = "#confirm-no"
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", show=False),
        Binding("n,escape", "answer(False)", "No", show=False),
        Binding("left,right", "app.focus_next", show=False),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question, self.detail = question, detail

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(Text(self.question, style="bold"), id="confirm-question")
            if self.detail:
                yield Static(Text(self.detail, style="dim"), id="confirm-detail")
            with Horizontal(id="confirm-buttons"):
                yield Button("No", id="confirm-no", variant="primary", compact=True)
                yield Button("Yes", id="confirm-yes", variant="error", compact=True)
            yield Static(Text("y yes · n / Esc / Enter no", style="dim"), id="confirm-keys")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def confirm_then(node: DOMNode, question: str, action: Callable[[], object], detail: str = "") -> None:
    """Run `action` once the user says yes, or at once when the config turns confirmations off."""
    app = node.app
    settings = getattr(app, "settings", None)
    if settings is not None and not settings.file.confirm_actions:
        action()
        return
    app.push_screen(ConfirmScreen(question, detail), callback=lambda yes: action() if yes else None)
