"""The TUI's parts without a stack: log pane, failing workers, keymap and theme from the config."""

from __future__ import annotations

import json

import pytest

from pipeline.config import DEFAULT_CONFIG, load_settings
from pipeline.runtime.model import ServiceStatus
from tui.app import BiConsoleApp
from tui.log_pane import LogView
try:
    from tests.tui_support import wait_for
except ImportError:  # tests/ is not a package
    from tui_support import wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_settings(tmp_path, config_file=None):
    return load_settings(env_file=None, data_dir=str(tmp_path / "data"),
                         config_file=str(config_file or DEFAULT_CONFIG), runtime="embedded",
                         pg_password="unit-pg-pass", pg_reader_password="unit-reader", source_password="unit-src",
                         s3_access_key="unit-key", s3_secret_key="unit-secret")


async def test_log_pane_bounded_filter_highlight_copy_json(tmp_path):
    app = BiConsoleApp(make_settings(tmp_path), recorded=True)
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one("#service-log LogView", LogView)
        view.clear()
        view.max_lines = 5000
        view._raw = type(view._raw)(maxlen=5000)
        view.write_lines([f"line {n} {'ERROR boom' if n % 1000 == 0 else 'ok'}" for n in range(6000)])
        assert len(view.raw_lines) == 5000 and view.raw_lines[0] == "line 1000 ERROR boom"
        assert len(view.visible_lines) == 5000

        view.set_filter("error")
        assert view.visible_lines == [f"line {n} ERROR boom" for n in range(1000, 6000, 1000)]
        spans = [s for s in view._view[0][1].spans if "yellow" in str(s.style)]
        assert spans, "matches are highlighted"
        # select the last two matches and copy them
        await pilot.press("l")  # focus the log
        assert app.focused is view
        view.action_follow()
        await pilot.press("shift+up")
        assert (view.anchor, view.cursor) == (4, 3), (view.anchor, view.cursor, app.focused)
        view.action_copy()
        assert app.clipboard == "line 4000 ERROR boom\nline 5000 ERROR boom"

        view.set_filter("")
        view.write_lines([json.dumps({"level": "INFO", "msg": "hello", "n": 1})])
        assert view.visible_lines[-5:] == ["{", '  "level": "INFO",', '  "msg": "hello",', '  "n": 1', "}"]
        # copying a pretty-printed line copies the original line once
        view.action_follow()
        await pilot.press("shift+up", "shift+up")
        view.action_copy()
        assert app.clipboard == json.dumps({"level": "INFO", "msg": "hello", "n": 1})


async def test_filter_key_opens_box_and_filters(tmp_path):
    app = BiConsoleApp(make_settings(tmp_path), recorded=True)
    async with app.run_test(size=(80, 24)) as pilot:
        from textual.widgets import Input

        # Each key goes only once the focus it needs is in place: the view's keys act on the focused view.
        services = app.view("services")
        await wait_for(pilot, lambda: app.focused is not None and services in app.focused.ancestors,
                     what="the focus in the services view")
        await pilot.press("l")
        await wait_for(pilot, lambda: isinstance(app.focused, LogView))
        await pilot.press("slash")
        await wait_for(pilot, lambda: isinstance(app.focused, Input))
        await pilot.press(*"warn", "enter")
        view = app.query_one("#service-log LogView", LogView)
        expected = ["2025-10-19 11:58:02 WARN  Producer retrying send (attempt 2 of 5)"]
        await wait_for(pilot, lambda: view.visible_lines == expected, what="the filter applied")
        assert view.visible_lines == expected
        await pilot.press("slash")
        await wait_for(pilot, lambda: isinstance(app.focused, Input))
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(view.visible_lines) > 5)
        assert len(view.visible_lines) > 5


class BrokenRuntime:
    name = "embedded"

    def __init__(self):
        self.calls = 0

    def service_names(self):
        return ["postgres"]

    def status_all(self):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("engine exploded")
        return [ServiceStatus("postgres", "stopped", False, "not running")]

    def logs(self, service, follow=False, tail=200, stop=lambda: False):
        raise OSError("log file unreadable")

    def connector(self):
        raise RuntimeError("no connector")


async def test_failing_worker_becomes_an_error_and_the_app_stays_up(tmp_path):
    runtime = BrokenRuntime()
    app = BiConsoleApp(make_settings(tmp_path), runtime=runtime, poll_interval=0.2)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(50):
            await pilot.pause(0.1)
            if (runtime.calls >= 2 and app.view("services").statuses
                    and any("log file unreadable" in e for e in app.errors)):
                break
        assert any("engine exploded" in e for e in app.errors), app.errors
        assert any("log file unreadable" in e for e in app.errors), app.errors
        assert app.view("services").status_of("postgres").healthy is False
        await pilot.press("2")
        for _ in range(60):
            await pilot.pause(0.1)
            if "status unavailable" in str(app.query_one("#connector-state").render()):
                break
        assert app.is_running
        assert "status unavailable" in str(app.query_one("#connector-state").render())


async def test_keymap_and_theme_from_config_file(tmp_path):
    config = tmp_path / "bi-console.toml"
    config.write_text('theme = "nord"\n[keymap]\nfull_refresh = "F"\nview_quality = "Q"\n')
    pressed = []

    class App(BiConsoleApp):
        def action_full_refresh(self):
            pressed.append("full")

    app = App(make_settings(tmp_path, config), recorded=True)
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "nord"
        await pilot.press("f")
        assert pressed == []
        await pilot.press("F")
        assert pressed == ["full"]
        await pilot.press("Q")
        assert app.query_one("#views").active == "quality"


async def test_help_overlay_lists_the_views_keys(tmp_path):
    app = BiConsoleApp(make_settings(tmp_path), recorded=True)
    async with app.run_test(size=(80, 24)) as pilot:
        from tui.help import HelpScreen

        await pilot.press("2")
        # The view switch moves the focus after a refresh; the help reads the focused view's keys.
        await wait_for(pilot, lambda: ("R", "Restart failed") in dict(app.help_sections()).get("Connector view", []))
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))

        assert isinstance(app.screen, HelpScreen)
        rows = dict(app.screen.sections)
        assert ("R", "Restart failed") in rows["Connector view"]
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))
        assert not isinstance(app.screen, HelpScreen)
