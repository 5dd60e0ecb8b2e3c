"""A log pane: follows (showing the tail), keeps a bounded buffer, filters with `/` and
highlights matches, selects lines (shift+arrows) and copies them, pretty-prints JSON lines,
and hides the console's own health probes until asked. It can follow a service's log itself,
remembering for each service whether the operator paused it."""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from urllib.parse import quote

from rich.cells import cell_len
from rich.highlighter import JSONHighlighter
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input
from textual.worker import Worker, WorkerState

from tui.base import View, WorkerFailed

DEFAULT_MAX_LINES = 5000
_JSON = JSONHighlighter()
_LEVEL = re.compile(r"\b(ERROR|FATAL|FAILED|WARN(?:ING)?)\b")
FOLLOW_TAIL = 500


def console_probe_pattern(bucket: str | None = None, connector: str | None = None) -> re.Pattern:
    """The access-log lines of the health probes sent every poll: the console's one-key listing
    of the bucket (RawStore.probe) and its connector status read, and the /health and
    /connector-plugins checks of Superset and Kafka Connect (theirs and the compose healthchecks)."""
    paths = [r"/health/?", r"/connector-plugins/?"]
    if bucket:
        paths.append(rf"/{re.escape(bucket)}\?list-type=2&max-keys=1(?:&[^\s\"]*)?")
    if connector:
        paths.append(rf"/connectors/{re.escape(quote(connector, safe=''))}/status")
    return re.compile(rf'"(?:GET|HEAD) (?:{"|".join(paths)}) HTTP/')


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
        # Lines of the console's own probes: kept in the buffer (copy, counts) but not shown.
        self.probe_pattern: re.Pattern | None = None
        self.show_probes = False
        self._probe_ids: deque[int] = deque()

    # -- content ------------------------------------------------------------------
    @property
    def raw_lines(self) -> list[str]:
        return [line for _, line in self._raw]

    @property
    def visible_lines(self) -> list[str]:
        return [t.plain for _, t in self._view]

    @property
    def hidden_probes(self) -> int:
        """Probe lines in the buffer that are not shown."""
        return 0 if self.show_probes else len(self._probe_ids)

    def _is_probe(self, line: str) -> bool:
        return self.probe_pattern is not None and self.probe_pattern.search(line) is not None

    def _shown(self, line: str, probe: bool) -> bool:
        if probe and not self.show_probes:
            return False
        return self.pattern is None or self.pattern.search(line) is not None

    def set_probe_pattern(self, pattern: re.Pattern | None) -> None:
        self.probe_pattern = pattern
        self._probe_ids = deque(i for i, line in self._raw if self._is_probe(line))
        self._rebuild()

    def set_show_probes(self, show: bool) -> None:
        self.show_probes = show
        self._rebuild()

    def clear(self) -> None:
        self._raw.clear()
        self._probe_ids.clear()
        self._view.clear()
        self._width = 0
        self.cursor, self.anchor = -1, None
        self.virtual_size = Size(0, 0)
        self.scroll_to(0, 0, animate=False, immediate=True)
        self.refresh()

    def write_lines(self, lines: list[str]) -> None:
        if not lines:
            return
        for line in lines:
            line = line.rstrip("\n").replace("\t", "    ")
            self._raw.append((self._next_id, line))
            probe = self._is_probe(line)
            if probe:
                self._probe_ids.append(self._next_id)
            if self._shown(line, probe):
                for t in self._render(line):
                    self._view.append((self._next_id, t))
                    self._width = max(self._width, cell_len(t.plain))
            self._next_id += 1
        oldest = self._raw[0][0]
        while self._probe_ids and self._probe_ids[0] < oldest:
            self._probe_ids.popleft()
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
            self._show_tail()
        self.refresh()
        self._content_changed()

    def set_filter(self, text: str) -> None:
        self.pattern = re.compile(re.escape(text), re.IGNORECASE) if text else None
        self._rebuild()

    def _rebuild(self) -> None:
        probes = set(self._probe_ids)
        self._view = [(i, t) for i, line in self._raw if self._shown(line, i in probes) for t in self._render(line)]
        self._width = 0
        self.cursor = len(self._view) - 1 if self.follow else min(self.cursor, len(self._view) - 1)
        self.anchor = None
        self._resize()
        if self.follow:
            self._show_tail()
        self.refresh()
        self._content_changed()

    def _show_tail(self) -> None:
        self.scroll_end(animate=False, immediate=True, x_axis=False)

    def _show_tail_if_following(self) -> None:
        if self.follow:
            self._show_tail()

    # A scroll asked before the layout gave the view its scrollbar (the first lines, a filter
    # cleared) is refused; these catch the moments it becomes possible.
    def watch_show_vertical_scrollbar(self, shown: bool) -> None:
        if shown:
            self._show_tail_if_following()

    def on_resize(self) -> None:
        self._show_tail_if_following()

    def on_show(self) -> None:
        self._show_tail_if_following()

    def _content_changed(self) -> None:
        if isinstance(self.parent, LogPane):
            self.parent.lines_changed()

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
        for raw_id, _ in self._view[lo : hi + 1]:
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
        self._show_tail()
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


class _Feed:
    """One follower's lines on their way to the pane: its own queue, so that a line of the
    service shown before can never land in the log of the one shown now."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.stop = threading.Event()
        self.lines: deque[str] = deque()
        self.lock = threading.Lock()
        self.posted = False

    def put(self, line: str) -> bool:
        """Queue a line; True when the pane must be told (one message per burst)."""
        with self.lock:
            self.lines.append(line)
            post, self.posted = not self.posted, True
        return post

    def take(self) -> list[str]:
        with self.lock:
            lines = list(self.lines)
            self.lines.clear()
            self.posted = False
        return lines


class LinesQueued(Message):
    def __init__(self, feed: _Feed) -> None:
        super().__init__()
        self.feed = feed


class LogPane(Vertical):
    """A titled LogView with a filter box (`/`, Enter applies, Escape clears).

    `probes=True`: the console's own health probes are hidden until `toggle_probes()`, and the
    border counts them. `follow_service()` shows a service's log as it grows."""

    DEFAULT_CSS = """
    LogPane { height: 1fr; border: round $primary 50%; }
    LogPane > #filter { dock: bottom; display: none; height: 3; }
    LogPane.filtering > #filter { display: block; }
    LogPane > LogView { height: 1fr; }
    """

    def __init__(
        self, title: str = "log", max_lines: int = DEFAULT_MAX_LINES, *, probes: bool = False, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self._title = title
        self.max_lines = max_lines
        self.probes = probes
        self.source: str | None = None
        # Per source: None while following, else the line the operator paused on (or "" for none).
        self._paused_at: dict[str, str | None] = {}
        self._restore_line: str | None = None
        self._feed: _Feed | None = None

    def compose(self) -> ComposeResult:
        yield LogView(self.max_lines)
        yield Input(placeholder="filter (Enter: apply, Esc: clear)", id="filter")

    def on_mount(self) -> None:
        if self.probes:
            settings = getattr(self.app, "settings", None)
            self.view.set_probe_pattern(
                console_probe_pattern(getattr(settings, "s3_bucket", None), getattr(settings, "connector_name", None))
            )
        self.update_title()

    def on_unmount(self) -> None:
        self.stop_following()

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def set_title(self, title: str) -> None:
        self._title = title
        self.update_title()

    def lines_changed(self) -> None:
        if self._restore_line is not None:
            self._restore_position()
        if self.probes:
            self.update_title()

    def update_title(self) -> None:
        try:
            view = self.view
        except Exception:
            return
        parts = [self._title]
        if view.pattern is not None:
            parts.append(f"/{view.pattern.pattern.replace(chr(92), '')}")
        hidden = view.hidden_probes
        if hidden:
            parts.append(f"{hidden} probe line{'s' if hidden != 1 else ''} hidden")
        parts.append("following" if view.follow else "paused (End: follow)")
        self.border_title = " · ".join(parts)
        key_for = getattr(self.app, "key_for", None)
        if callable(key_for):
            keys = {binding_id: key_for(binding_id) for binding_id in ("log_filter", "log_copy", "log_json")}
        else:
            keys = {"log_filter": "/", "log_copy": "y", "log_json": "j"}
        hint = f"{keys['log_filter']} filter · {keys['log_copy']} copy · {keys['log_json']} json"
        if self.probes:
            hint += f" · {key_for('log_probes') if callable(key_for) else 'h'} probes"
        self.border_subtitle = hint

    def write_lines(self, lines: list[str]) -> None:
        self.view.write_lines(lines)

    def clear(self) -> None:
        self.view.clear()

    def toggle_probes(self) -> None:
        view = self.view
        view.set_show_probes(not view.show_probes)
        self.update_title()
        self.notify(f"probe lines {'shown' if view.show_probes else 'hidden'}", timeout=2)

    # -- a source's log, and its follow state -------------------------------------------
    def show_source(self, source: str, title: str | None = None) -> None:
        """Empty the pane for another source's log: following, unless the operator paused
        that source's log, which then opens paused on the line it was paused on."""
        view = self.view
        if self.source is not None and self.source != source:
            self._paused_at[self.source] = None if view.follow else self._paused_line()
        self.source = source
        view.clear()
        paused_at = self._paused_at.get(source)
        self._restore_line = paused_at or None
        view.follow = paused_at is None
        if title is not None:
            self._title = title
        self.update_title()

    def _paused_line(self) -> str:
        view = self.view
        index = view.cursor if view.cursor >= 0 else view.scroll_offset.y
        if not 0 <= index < len(view._view):
            return ""
        return self._raw_line(view._view[index][0]) or ""

    def _restore_position(self) -> None:
        view = self.view
        wanted = self._restore_line
        for index in range(len(view._view) - 1, -1, -1):
            raw_id = view._view[index][0]
            if view._raw and raw_id >= view._raw[0][0] and self._raw_line(raw_id) == wanted:
                self._restore_line = None
                view.cursor, view.anchor = index, None
                view.call_after_refresh(view.scroll_to_region_line, index)
                view.refresh()
                return
        if len(view._raw) >= FOLLOW_TAIL:  # the tail is in and the line is not: it scrolled out
            self._restore_line = None

    def _raw_line(self, raw_id: int) -> str | None:
        raw = self.view._raw
        offset = raw_id - raw[0][0]
        return raw[offset][1] if 0 <= offset < len(raw) else None

    def follow_service(self, runtime, service: str, title: str | None = None) -> None:
        """Show `service`'s last lines and every new one, until another source is shown."""
        self.stop_following()
        self.show_source(service, title or f"{service} log")
        self._feed = _Feed(service)
        self._follow_worker(runtime, self._feed)

    def stop_following(self) -> None:
        if self._feed is not None:
            self._feed.stop.set()
            self._feed = None

    @work(thread=True, exit_on_error=False, group="logs", name="follow-log")
    def _follow_worker(self, runtime, feed: _Feed) -> None:
        from pipeline.config.security import redact

        settings = getattr(self.app, "settings", None)
        secrets = settings.secret_values() if settings is not None else []
        try:
            lines = runtime.logs(feed.source, follow=True, tail=FOLLOW_TAIL, stop=feed.stop.is_set)
        except TypeError:  # a runtime whose logs() takes no stop callable
            lines = runtime.logs(feed.source, follow=True, tail=FOLLOW_TAIL)
        for line in lines:
            if feed.stop.is_set():
                return
            if feed.put(redact(line, secrets)):
                self.post_message(LinesQueued(feed))

    @on(LinesQueued)
    def _drain(self, message: LinesQueued) -> None:
        message.stop()
        lines = message.feed.take()
        if message.feed is self._feed:
            self.write_lines(lines)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            owner = next((type(a).__name__ for a in self.ancestors if isinstance(a, View)), "LogPane")
            self.app.post_message(WorkerFailed(f"{owner}.{event.worker.name}", event.worker.error))

    # -- the filter box -------------------------------------------------------------------
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
