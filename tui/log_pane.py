"""A log pane: follows, keeps a bounded buffer, filters with `/` and highlights matches,
selects lines (shift+arrows) and copies them, and pretty-prints JSON lines."""

from __future__ import annotations

import json
import re
from collections import deque

from rich.cells import cell_len
from rich.highlighter import JSONHighlighter
from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Static

DEFAULT_MAX_LINES = 5000
_JSON = JSONHighlighter()
_LEVEL = re.compile(r"\b(ERROR|FATAL|FAILED|WARN(?:ING)?)\b")


class LogView(ScrollView, can_focus=True):
    """The lines themselves, rendered line by line (cheap for thousands of lines)."""

    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("shift+up", "extend(-1)", "Select up", show=False),
        Binding("shift+down", "extend(1)", "Select down", show=False),
        Binding("pageup", "cursor(-10)", show=False),
        Binding("pagedown", "cursor(10)", show=False),
        Binding("home", "cursor_home", show=False),
        Binding("end", "follow", "Follow", show=False),
        Binding("y", "copy", "Copy", id="log_copy"),
        Binding("j", "toggle_json", "JSON", show=False, id="log_json"),
        Binding("F", "toggle_follow", "Follow", show=False, id="log_follow"),
    ]
    DEFAULT_CSS = """
    LogView { background: $surface; overflow: auto; }
    LogView:focus { background-tint: $foreground 4%; }
    """

    follow: reactive[bool] = reactive(True, init=False)

    class Copied(Message):
        def __init__(self, text: str, lines: int) -> None:
            super().__init__()
            self.text, self.lines = text, lines

    def __init__(self, max_lines: int = DEFAULT_MAX_LINES, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.max_lines = max_lines
        self._raw: deque[tuple[int, str]] = deque(maxlen=max_lines)
        self._next_id = 0
        self._view: list[tuple[int, Text]] = []  # (raw id, display line); JSON lines span several
        self._width = 0
        self.pattern: re.Pattern | None = None
        self.pretty_json = True
        self.cursor = -1
        self.anchor: int | None = None

    # -- content ------------------------------------------------------------------
    @property
    def raw_lines(self) -> list[str]:
        return [line for _, line in self._raw]

    @property
    def visible_lines(self) -> list[str]:
        return [t.plain for _, t in self._view]

    def clear(self) -> None:
        self._raw.clear()
        self._view.clear()
        self._width = 0
        self.cursor, self.anchor = -1, None
        self.virtual_size = Size(0, 0)
        self.refresh()

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        for line in lines:
            line = line.rstrip("\n").replace("\t", "    ")
            self._raw.append((self._next_id, line))
            if self.pattern is None or self.pattern.search(line):
                for t in self._render(line):
                    self._view.append((self._next_id, t))
                    self._width = max(self._width, cell_len(t.plain))
            self._next_id += 1
        oldest = self._raw[0][0]
        if self._view and self._view[0][0] < oldest:  # the buffer dropped lines: drop them here too
            drop = 0
            while drop < len(self._view) and self._view[drop][0] < oldest:
                drop += 1
            del self._view[:drop]
            self.cursor = max(-1, self.cursor - drop)
            if self.anchor is not None:
                self.anchor = max(0, self.anchor - drop)
        self.virtual_size = Size(self._width, len(self._view))
        if self.follow:
            self.cursor = len(self._view) - 1
            self.anchor = None
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def set_filter(self, text: str) -> None:
        self.pattern = re.compile(re.escape(text), re.IGNORECASE) if text else None
        self._rebuild()

    def _rebuild(self) -> None:
        self._view = [(i, t) for i, line in self._raw if self.pattern is None or self.pattern.search(line)
                      for t in self._render(line)]
        self._width = 0
        self.cursor = len(self._view) - 1 if self.follow else min(self.cursor, len(self._view) - 1)
        self.anchor = None
        self._resize()
        if self.follow:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def _render(self, line: str) -> list[Text]:
        texts: list[Text]
        stripped = line.strip()
        if self.pretty_json and stripped.startswith("{") and stripped.endswith("}"):
            try:
                data = json.loads(stripped)
            except ValueError:
                data = None
            if isinstance(data, dict):
                texts = [_JSON(Text(part)) for part in json.dumps(data, indent=2, ensure_ascii=False).splitlines()]
                return [self._highlight(t) for t in texts]
        text = Text(line)
        text.highlight_regex(_LEVEL, "bold red")
        return [self._highlight(text)]

    def _highlight(self, text: Text) -> Text:
        if self.pattern is not None:
            text.highlight_regex(self.pattern, "bold black on yellow")
        return text

    def _resize(self) -> None:
        for _, t in self._view:
            self._width = max(self._width, cell_len(t.plain))
        self.virtual_size = Size(self._width, len(self._view))

    # -- rendering ----------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        if index >= len(self._view):
            return Strip.blank(width, base)
        text = self._view[index][1].copy()
        lo, hi = self._selection()
        if lo <= index <= hi:
            text.stylize(Style(reverse=True) if self.has_focus else Style(bgcolor="grey23"))
        strip = Strip(text.render(self.app.console), cell_len(text.plain))
        return strip.crop_extend(scroll_x, scroll_x + width, base).simplify()

    def _selection(self) -> tuple[int, int]:
        if self.cursor < 0:
            return (-1, -2)
        if self.anchor is None:
            return (self.cursor, self.cursor) if not self.follow or self.has_focus else (-1, -2)
        return (min(self.anchor, self.cursor), max(self.anchor, self.cursor))

    def selected_text(self) -> tuple[str, int]:
        lo, hi = self._selection()
        if hi < 0:
            return "", 0
        ids = []
        for raw_id, _ in self._view[lo:hi + 1]:
            if not ids or ids[-1] != raw_id:
                ids.append(raw_id)
        wanted = set(ids)
        lines = [line for i, line in self._raw if i in wanted]
        return "\n".join(lines), len(lines)

    # -- actions ------------------------------------------------------------------
    def _move(self, delta: int, extend: bool) -> None:
        if not self._view:
            return
        if extend and self.anchor is None:
            self.anchor = max(self.cursor, 0)
        elif not extend:
            self.anchor = None
        self.cursor = max(0, min(len(self._view) - 1, (self.cursor if self.cursor >= 0 else len(self._view)) + delta))
        self.follow = self.cursor == len(self._view) - 1 and not extend and self.follow
        self.scroll_to_region_line(self.cursor)
        self.refresh()

    def scroll_to_region_line(self, index: int) -> None:
        top = self.scroll_offset.y
        height = max(1, self.size.height)
        if index < top:
            self.scroll_to(y=index, animate=False, immediate=True)
        elif index >= top + height:
            self.scroll_to(y=index - height + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        self.follow = False
        self._move(delta, extend=False)

    def action_extend(self, delta: int) -> None:
        self.follow = False
        self._move(delta, extend=True)

    def action_cursor_home(self) -> None:
        self.follow = False
        self.anchor = None
        self.cursor = 0 if self._view else -1
        self.scroll_home(animate=False, immediate=True)
        self.refresh()

    def action_follow(self) -> None:
        self.follow = True
        self.anchor = None
        self.cursor = len(self._view) - 1
        self.scroll_end(animate=False, immediate=True, x_axis=False)
        self.refresh()

    def action_toggle_follow(self) -> None:
        if self.follow:
            self.follow = False
        else:
            self.action_follow()

    def action_toggle_json(self) -> None:
        self.pretty_json = not self.pretty_json
        self._rebuild()

    def action_filter(self) -> None:
        pane = self.parent
        if isinstance(pane, LogPane):
            pane.open_filter()

    def action_copy(self) -> None:
        text, count = self.selected_text()
        if not count:
            self.notify("no line selected (move with ↑/↓, extend with shift+↑/↓)", severity="warning")
            return
        self.app.copy_to_clipboard(text)
        self.post_message(self.Copied(text, count))
        self.notify(f"copied {count} line{'s' if count != 1 else ''}")

    def on_click(self, event: Click) -> None:
        index = self.scroll_offset.y + event.y
        if 0 <= index < len(self._view):
            self.follow = False
            if event.shift and self.cursor >= 0:
                if self.anchor is None:
                    self.anchor = self.cursor
            else:
                self.anchor = None
            self.cursor = index
            self.refresh()

    def watch_follow(self, follow: bool) -> None:
        if isinstance(self.parent, LogPane):
            self.parent.update_title()


class LogPane(Vertical):
    """A titled LogView with a filter box (`/`, Enter applies, Escape clears)."""

    DEFAULT_CSS = """
    LogPane { height: 1fr; border: round $primary 50%; }
    LogPane > #filter { dock: bottom; display: none; height: 3; }
    LogPane.filtering > #filter { display: block; }
    LogPane > LogView { height: 1fr; }
    """

    def __init__(self, title: str = "log", max_lines: int = DEFAULT_MAX_LINES, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._title = title
        self.max_lines = max_lines

    def compose(self) -> ComposeResult:
        yield LogView(self.max_lines)
        yield Input(placeholder="filter (Enter: apply, Esc: clear)", id="filter")

    def on_mount(self) -> None:
        self.update_title()

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def set_title(self, title: str) -> None:
        self._title = title
        self.update_title()

    def update_title(self) -> None:
        try:
            view = self.view
        except Exception:
            return
        parts = [self._title]
        if view.pattern is not None:
            parts.append(f"/{view.pattern.pattern.replace(chr(92), '')}")
        parts.append("following" if view.follow else "paused (End: follow)")
        self.border_title = " · ".join(parts)
        live_key = getattr(self.app, "live_key", None)
        if callable(live_key):
            filter_binding = next((b for b in self.app.BINDINGS if isinstance(b, Binding) and b.id == "log_filter"), None)
            keys = {b.id: live_key(b) for b in LogView.BINDINGS if isinstance(b, Binding) and b.id}
            slash = live_key(filter_binding) if filter_binding else "/"
            self.border_subtitle = f"{slash} filter · {keys['log_copy']} copy · {keys['log_json']} json"
        else:
            self.border_subtitle = "/ filter · y copy · j json"

    def write_lines(self, lines: list[str]) -> None:
        self.view.write_lines(lines)

    def clear(self) -> None:
        self.view.clear()

    def open_filter(self) -> None:
        self.add_class("filtering")
        box = self.query_one("#filter", Input)
        # At once, not after a refresh: the keys typed next are already queued and must reach the box.
        self.screen.set_focus(box)

    @on(Input.Submitted, "#filter")
    def _apply(self, event: Input.Submitted) -> None:
        event.stop()
        self.view.set_filter(event.value)
        self.remove_class("filtering")
        self.view.focus()
        self.update_title()

    @on(Input.Changed, "#filter")
    def _live(self, event: Input.Changed) -> None:
        event.stop()
        self.view.set_filter(event.value)
        self.update_title()

    def key_escape(self) -> None:
        if self.has_class("filtering"):
            box = self.query_one("#filter", Input)
            box.value = ""
            self.view.set_filter("")
            self.remove_class("filtering")
            self.view.focus()
            self.update_title()
