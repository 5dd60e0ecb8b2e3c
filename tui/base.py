"""What every view shares: worker failures become errors shown to the user, never a crash,
and formatting helpers that take the app's clock (frozen in snapshot tests)."""

from __future__ import annotations

from datetime import datetime, timezone

from textual.containers import Vertical
from textual.message import Message
from textual.worker import Worker, WorkerState


class WorkerFailed(Message):
    """A worker raised: shown as an error notification and in the status line."""

    def __init__(self, where: str, error: BaseException) -> None:
        super().__init__()
        self.where, self.error = where, error


class View(Vertical):
    """A top-level view (one tab). Subclasses implement `refresh_data()` (live) and show_*()."""

    can_focus = False

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.app.post_message(WorkerFailed(f"{type(self).__name__}.{event.worker.name}", event.worker.error))
            self.worker_failed(event.worker)

    def worker_failed(self, worker: Worker) -> None:
        """Hook: undo a 'busy' state after a failure."""

    def refresh_data(self) -> None:
        """Load fresh data (live mode). Called when the view becomes active."""

    def keys_changed(self) -> None:
        """Hook: redraw the key hints written in the view's own text (the keymap was applied)."""

    def key(self, binding_id: str) -> str:
        """The live key of a binding, for a hint; the declared key when no app can say (a bare test)."""
        key_for = getattr(self.app, "key_for", None)
        if callable(key_for):
            return key_for(binding_id)
        for binding in type(self).BINDINGS:
            if getattr(binding, "id", None) == binding_id:
                return binding.key
        return "?"

    def focus_main(self) -> None:
        for widget in self.query("*"):
            if widget.focusable:
                widget.focus()
                return

    @property
    def live(self) -> bool:
        return bool(getattr(self.app, "live", False))

    def now(self) -> datetime:
        clock = getattr(self.app, "clock", None)
        return clock() if callable(clock) else datetime.now(timezone.utc)


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def error_text(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:400]
