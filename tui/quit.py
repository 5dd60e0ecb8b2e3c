"""The question asked when `q` is pressed while a refresh runs: quitting at once would leave
the screen blank until the running step ends (a thread cannot be interrupted), so the
operator chooses, with the screen still drawn: cancel the refresh and quit once it has
stopped, or keep waiting (the default, so that a stray Enter loses no work)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from tui.confirm import ConfirmScreen


class QuitDuringRefreshScreen(ConfirmScreen):
    """Dismissed with True for "cancel the refresh and quit", False for "keep waiting"."""

    BINDINGS = [
        Binding("c", "answer(True)", "Cancel and quit", show=False),
        Binding("k", "answer(False)", "Keep waiting", show=False),
    ]

    def __init__(self, running: str) -> None:
        super().__init__(
            "Cancel the refresh and quit, or keep waiting?",
            f"A refresh is {running}. Cancelling stops the running step at its next safe point; "
            "bi-console quits as soon as it has stopped.",
        )

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(Text(self.question, style="bold"), id="confirm-question")
            yield Static(Text(self.detail, style="dim"), id="confirm-detail")
            with Horizontal(id="confirm-buttons"):
                yield Button("Keep waiting", id="confirm-no", variant="primary", compact=True)
                yield Button("Cancel refresh and quit", id="confirm-yes", variant="error", compact=True)
            yield Static(Text("c cancel and quit · k / Esc / Enter keep waiting", style="dim"), id="confirm-keys")
