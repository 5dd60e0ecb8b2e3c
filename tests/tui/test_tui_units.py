"""The TUI's parts without a stack: log pane, failing workers, keymap and theme from the config."""

from __future__ import annotations

import json

import pytest

from pipeline.runtime.model import ServiceStatus
from tests.support import settings as support_settings
from tests.support.tui import screen_text, wait_for
from tui.app import BiConsoleApp
from tui.log_pane import LogView

pytestmark = pytest.mark.anyio


def make_settings(tmp_path, config_file=None):
    if config_file is None:
        return support_settings.make_settings(tmp_path / "data")
    return support_settings.make_settings(tmp_path / "data", config_file=str(config_file))


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
        await wait_for(
            pilot,
            lambda: app.focused is not None and services in app.focused.ancestors,
            what="the focus in the services view",
        )
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
            if (
                runtime.calls >= 2
                and app.view("services").statuses
                and any("log file unreadable" in e for e in app.errors)
            ):
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


class ControlRecordingRuntime:
    """A runtime that only records the service controls it is asked for (no stack in the fast lane)."""

    name = "embedded"

    def __init__(self):
        self.controls: list[tuple[str, str]] = []

    def service_names(self):
        return ["postgres", "cdc"]

    def status_all(self):
        return [ServiceStatus("postgres", "running", True, "ok"), ServiceStatus("cdc", "running", True, "ok")]

    def logs(self, service, follow=False, tail=200, stop=lambda: False):
        return iter(["records: 3 loaded", "other line"])

    def start(self, service, log=None):
        self.controls.append(("start", service))

    def stop(self, service):
        self.controls.append(("stop", service))

    def restart(self, service, log=None):
        self.controls.append(("restart", service))


async def test_slash_with_the_table_focused_filters_the_log_and_no_key_reaches_the_table(tmp_path):
    from textual import events
    from textual.widgets import DataTable, Input

    runtime = ControlRecordingRuntime()
    app = BiConsoleApp(make_settings(tmp_path), runtime=runtime, poll_interval=60)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.focused, DataTable), what="the services table focused")
        # Sent in one burst, as a terminal delivers typed text: no key waits for the focus to move.
        for char in "/records":
            app.post_message(events.Key("slash" if char == "/" else char, char))
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        assert runtime.controls == []
        # The focus moves when the burst is handled, later than a fixed pause on a loaded machine.
        await wait_for(pilot, lambda: isinstance(app.focused, Input), what="the filter focused")
        assert runtime.controls == []
        await pilot.press("ctrl+u", *"records", "enter")
        assert runtime.controls == []
        view = app.query_one("#service-log LogView", LogView)
        await wait_for(pilot, lambda: view.visible_lines == ["records: 3 loaded"], what="the log filtered")
        # From another view too: `/` opens the filter of the log on screen.
        await pilot.press("3")
        await wait_for(pilot, lambda: app.query_one("#views").active == "pipeline")
        await pilot.press("slash")
        await wait_for(
            pilot,
            lambda: (
                isinstance(app.focused, Input)
                and app.focused.id == "filter"
                and "step-log" in [a.id for a in app.focused.ancestors]
            ),
        )


async def test_stop_and_restart_ask_first_and_the_default_is_no(tmp_path):
    from textual.widgets import DataTable

    from tui.confirm import ConfirmScreen

    runtime = ControlRecordingRuntime()
    app = BiConsoleApp(make_settings(tmp_path), runtime=runtime, poll_interval=60)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.focused, DataTable) and app.view("services").selected)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("enter")  # the default answer
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        await app.workers.wait_for_complete()
        assert runtime.controls == []
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: runtime.controls, what="the confirmed restart")
        await app.workers.wait_for_complete()
        assert runtime.controls == [("restart", "postgres")]


async def test_a_fix_asks_first_unless_the_config_turns_confirmations_off(tmp_path):
    from tui.confirm import ConfirmScreen

    app = BiConsoleApp(make_settings(tmp_path), runtime=ControlRecordingRuntime(), poll_interval=60)
    async with app.run_test(size=(100, 30)) as pilot:
        troubleshoot = app.view("troubleshoot")
        started = []
        troubleshoot._start_fix = started.append  # the fix itself needs a stack: only whether it starts is asked
        await pilot.press("5")
        await wait_for(pilot, lambda: app.query_one("#views").active == "troubleshoot")
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
        assert started == []

    config = tmp_path / "bi-console.toml"
    config.write_text("confirm_actions = false\n")
    runtime = ControlRecordingRuntime()
    app = BiConsoleApp(make_settings(tmp_path, config), runtime=runtime, poll_interval=60)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.view("services").selected)
        await pilot.press("x")
        await wait_for(pilot, lambda: runtime.controls, what="the stop, unasked")
        await app.workers.wait_for_complete()
        assert runtime.controls == [("stop", "postgres")] and not isinstance(app.screen, ConfirmScreen)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=lambda s: f"{s[0]}x{s[1]}")
async def test_pipeline_counts_are_never_cut_into_other_numbers(tmp_path, size):
    import re

    from pipeline.orchestration.refresh import StepFinished, StepStarted

    app = BiConsoleApp(make_settings(tmp_path), recorded=True)
    async with app.run_test(size=size) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: app.query_one("#views").active == "pipeline")
        pipeline = app.view("pipeline")
        for table, inserted in (("product", 32530), ("measure_unit", 500)):
            counts = {
                "objects": 1,
                "skipped_objects": 0,
                "lines": inserted,
                "inserted": inserted,
                "rejected": 0,
                "sanitized": 0,
            }
            pipeline.apply_event(StepStarted("r1", table, "load"), announce=False)
            pipeline.apply_event(StepFinished("r1", table, "load", "ok", 1.0, counts), announce=False)
        await pilot.pause(0.2)
        await app.workers.wait_for_complete()
        text = screen_text(app)
        rows = {
            t: next(line for line in text.splitlines() if t in line and "load" in line)
            for t in ("product", "measure_unit")
        }
        assert "lines=32.5k" in rows["product"] and "lines=500" in rows["measure_unit"], rows
        if size[0] >= 160:
            assert "inserted=32.5k" in rows["product"] and "inserted=500" in rows["measure_unit"], rows
        else:  # what does not fit is left out whole, and said so
            assert all("…" in line for line in rows.values()), rows
        # Whatever is shown of a count is the whole count.
        for line in rows.values():
            for value in re.findall(r"=([0-9.]+k?)", line):
                assert value in ("1", "0", "500", "32.5k"), (value, line)


async def test_help_and_footer_show_the_same_live_keys(tmp_path):
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    from tui.help import HelpScreen
    from tui.log_pane import LogPane

    config = tmp_path / "bi-console.toml"
    config.write_text('[keymap]\nfull_refresh = "F"\nlog_copy = "c"\n')
    for app in (
        BiConsoleApp(make_settings(tmp_path), recorded=True),
        BiConsoleApp(make_settings(tmp_path, config), recorded=True),
    ):
        async with app.run_test(size=(160, 48)) as pilot:
            # The lambdas below run within this iteration, with this iteration's app.
            await wait_for(pilot, lambda: app.query_one(Footer).query(FooterKey), what="the footer drawn")  # noqa: B023
            footer = {key.description: key.key_display for key in app.query_one(Footer).query(FooterKey)}
            await pilot.press("question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))  # noqa: B023
            help_rows = {description: keys for _, rows in app.screen.sections for keys, description in rows}
            for description in ("Quit", "Full", "Incr", "Help"):
                assert help_rows[description].split()[0] == footer[description], (description, help_rows, footer)
            copy = help_rows["copy selected lines"]
            subtitle = app.query_one("#service-log", LogPane).border_subtitle
            if app.settings.file.keymap:
                assert footer["Full"] == "F" and copy == "c" and "c copy" in subtitle, (footer, copy, subtitle)
            else:
                assert footer["Quit"] == "q" and copy == "y" and "y copy" in subtitle


async def test_pipeline_status_and_fix_buttons_read_the_live_keymap(tmp_path):
    from textual.widgets import Button, Static

    config = tmp_path / "bi-console.toml"
    config.write_text('[keymap]\nfull_refresh = "F"\nrun_step = "S"\nfix_dbt = "T"\n')
    # Live (no recorded run on the status line): the idle hint is what is shown.
    app = BiConsoleApp(make_settings(tmp_path, config), runtime=ControlRecordingRuntime(), poll_interval=60)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        await wait_for(pilot, lambda: app.query_one("#views").active == "pipeline")
        await app.workers.wait_for_complete()
        status = str(app.query_one("#pipeline-status", Static).render())
        assert "F full refresh" in status and "S run selected step" in status, status
        assert "f full refresh" not in status
        assert str(app.query_one("#btn-fix_dbt", Button).label).startswith("T "), app.query_one("#btn-fix_dbt").label


async def test_command_palette_holds_every_views_actions(tmp_path):
    from textual.command import CommandList, CommandPalette

    from tui.confirm import ConfirmScreen

    runtime = ControlRecordingRuntime()
    app = BiConsoleApp(make_settings(tmp_path), runtime=runtime, poll_interval=60)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.view("services").statuses, what="the statuses")

        async def offered(query: str) -> list[str]:
            await pilot.press("ctrl+p")
            await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), what="the palette")
            await pilot.press(*query)
            await pilot.pause(0.6)
            await app.workers.wait_for_complete()
            commands = app.screen.query_one(CommandList)
            return [str(commands.get_option_at_index(i).prompt) for i in range(commands.option_count)]

        names = await offered("restart")
        for wanted in ("Restart postgres", "Restart cdc", "Restart connector"):
            assert any(wanted in n for n in names), (wanted, names)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette))
        for query, wanted in (
            ("pause", "Pause connector"),
            ("resume", "Resume connector"),
            ("fix", "Fix: rerun dbt with debug logging"),
            ("incremental", "Incremental refresh"),
            ("run step transform", "Run step transform"),
        ):
            names = await offered(query)
            assert any(wanted in n for n in names), (wanted, names)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, CommandPalette))
        # A command runs what its key runs: a stop from the palette asks first too.
        await offered("stop cdc")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: runtime.controls, what="the stop")
        await app.workers.wait_for_complete()
        assert runtime.controls == [("stop", "cdc")]


async def test_a_passed_expectation_with_unexpected_rows_is_shown_as_a_warning(tmp_path):
    app = BiConsoleApp(make_settings(tmp_path), recorded=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        await wait_for(pilot, lambda: app.query_one("#views").active == "quality")
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        row = next(line for line in screen_text(app).splitlines() if "is_for_sale" in line)
        assert "✓!" in row and "18 of 115 unexpected" in row and "allowed" in row, row


async def test_a_table_with_staging_only_shows_its_marts_as_not_modelled(tmp_path):
    from pipeline.checks.probes import LayerCounts
    from tui.quality import QualityView

    app = BiConsoleApp(make_settings(tmp_path), recorded=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        await wait_for(pilot, lambda: app.query_one("#views").active == "quality")
        await app.workers.wait_for_complete()
        view = app.query_one(QualityView)
        snapshot = view.snapshot
        snapshot.counts.append(LayerCounts("product_image", 40, 10, 10, 9, None, marts_modelled=False))
        view.show_snapshot(snapshot)
        await pilot.pause(0.2)
        row = next(line for line in screen_text(app).splitlines() if "product_image" in line)
        assert "40" in row and "9" in row and "not modelled" in row, row
        assert view.layer_counts("product_image")["marts"] is None
