"""The log panes against the embedded runtime's real log files (no service runs: the logs are
files written here, read by the runtime's own tail and follow): following shows the tail,
paused belongs to each service, the console's own probes are hidden behind a key, the
Connector view has the connector's log, and typed text never reaches a table."""

from __future__ import annotations

import json

import pytest
from textual.widgets import DataTable, Input

from pipeline.runtime.embedded import EmbeddedRuntime
from tests.support.settings import make_settings
from tests.support.tui import screen_text, wait_for
from tui.app import BiConsoleApp
from tui.log_pane import LogPane, LogView

pytestmark = pytest.mark.anyio

BUCKET = "cord-raw"


def moto_line(second: int, request: str) -> str:
    return f'127.0.0.1 - - [03/Dec/2026 12:{second // 60:02d}:{second % 60:02d}] "{request} HTTP/1.1" 200 -'


PROBE = f"GET /{BUCKET}?list-type=2&max-keys=1&encoding-type=url"
HEALTH = '127.0.0.1 - - [03/Dec/2026:12:19:11 +0000] "GET /health HTTP/1.1" 200 2 "-" "python-httpx/0.29.0"'


class RecordingRuntime(EmbeddedRuntime):
    """The embedded runtime with its services' controls recorded instead of run: a key that
    falls through to the table must be seen, not start a PostgreSQL."""

    def __init__(self, settings):
        super().__init__(settings, with_superset=False)
        self.controls: list[tuple[str, str]] = []

    def start(self, service, log=print):
        self.controls.append(("start", service))

    def stop(self, service):
        self.controls.append(("stop", service))

    def restart(self, service, log=print):
        self.controls.append(("restart", service))


def write_logs(settings, logs: dict[str, list[str]]) -> None:
    directory = EmbeddedRuntime(settings).log_dir
    directory.mkdir(parents=True, exist_ok=True)
    for service, lines in logs.items():
        (directory / f"{service}.log").write_text("".join(line + "\n" for line in lines))


def append_log(settings, service: str, lines: list[str]) -> None:
    with open(EmbeddedRuntime(settings).log_dir / f"{service}.log", "a") as fh:
        fh.write("".join(line + "\n" for line in lines))


def shown_lines(view: LogView) -> list[str]:
    """The log lines inside the view's window now."""
    top = view.scroll_offset.y
    return view.visible_lines[top : top + view.size.height]


async def settle(app) -> None:
    """Wait for every worker but the log followers, which run until their pane goes."""
    others = [w for w in app.workers if w.group != "logs"]
    if others:  # an empty list would mean every worker
        await app.workers.wait_for_complete(others)


def tail_shown(view: LogView) -> bool:
    lines = view.visible_lines
    return bool(lines) and lines[-1] in shown_lines(view)


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "data", own_ports=True, s3_bucket=BUCKET)


def numbered(service: str, count: int) -> list[str]:
    return [f"{service} line {n:03d}" for n in range(count)]


async def test_following_shows_the_tail_on_opening_after_a_filter_and_after_a_service_switch(settings):
    write_logs(settings, {"postgres": numbered("postgres", 300), "kafka": numbered("kafka", 200)})
    app = BiConsoleApp(settings, runtime=RecordingRuntime(settings), poll_interval=60)
    async with app.run_test(size=(100, 30)) as pilot:
        pane = app.query_one("#service-log", LogPane)
        view = pane.view
        await wait_for(pilot, lambda: len(view.visible_lines) == 300, what="postgres's tail loaded")
        await pilot.pause(0.2)
        assert "following" in pane.border_title
        assert tail_shown(view), shown_lines(view)
        assert "postgres line 299" in screen_text(app)

        append_log(settings, "postgres", ["postgres line 300"])
        await wait_for(pilot, lambda: "postgres line 300" in shown_lines(view), what="a new line followed")

        # A filter narrows the log; clearing it shows the tail again, not the top of the buffer.
        await pilot.press("l")
        await wait_for(pilot, lambda: app.focused is view)
        await pilot.press("slash", *"line 1")
        await wait_for(pilot, lambda: view.pattern is not None and len(view.visible_lines) == 100)
        await pilot.press("escape")
        await wait_for(pilot, lambda: view.pattern is None and len(view.visible_lines) == 301)
        await pilot.pause(0.2)
        assert tail_shown(view), shown_lines(view)
        assert "postgres line 300" in screen_text(app)

        # The next service's log opens on its tail too.
        app.query_one("#services-table", DataTable).focus()
        await pilot.press("down")
        await wait_for(pilot, lambda: app.view("services").selected == "kafka")
        await wait_for(pilot, lambda: len(view.visible_lines) == 200, what="kafka's tail loaded")
        await pilot.pause(0.2)
        assert tail_shown(view), shown_lines(view)
        assert "kafka line 199" in screen_text(app)


async def test_paused_belongs_to_the_service_it_was_paused_on(settings):
    write_logs(
        settings, {"postgres": numbered("postgres", 100), "kafka": numbered("kafka", 100), "cdc": numbered("cdc", 100)}
    )
    app = BiConsoleApp(settings, runtime=RecordingRuntime(settings), poll_interval=60)
    async with app.run_test(size=(100, 30)) as pilot:
        services = app.view("services")
        pane = app.query_one("#service-log", LogPane)
        view = pane.view
        table = app.query_one("#services-table", DataTable)
        await wait_for(pilot, lambda: len(view.visible_lines) == 100)
        table.move_cursor(row=3)
        await wait_for(pilot, lambda: services.selected == "cdc")
        await wait_for(pilot, lambda: view.visible_lines[-1:] == ["cdc line 099"])
        await pilot.press("l")
        await wait_for(pilot, lambda: app.focused is view)
        await pilot.press("up", "up")
        assert not view.follow and "paused" in pane.border_title

        table.focus()
        table.move_cursor(row=0)
        await wait_for(pilot, lambda: services.selected == "postgres")
        await wait_for(pilot, lambda: view.visible_lines[-1:] == ["postgres line 099"])
        await pilot.pause(0.2)
        assert view.follow and "following" in pane.border_title, pane.border_title
        assert tail_shown(view)
        append_log(settings, "postgres", ["postgres line 100"])
        await wait_for(pilot, lambda: "postgres line 100" in shown_lines(view), what="postgres followed")

        table.move_cursor(row=3)
        await wait_for(pilot, lambda: services.selected == "cdc")
        await wait_for(pilot, lambda: view.visible_lines[-1:] == ["cdc line 099"])
        assert not view.follow and "paused" in pane.border_title, pane.border_title


def s3_log() -> list[str]:
    lines = []
    for n in range(60):
        lines.append(moto_line(n, PROBE))
        if n % 6 == 0:
            lines.append(moto_line(n, f"PUT /{BUCKET}/product/raw/batch=p+0+{n:020d}.jsonl"))
    return lines


async def test_the_consoles_own_probes_are_hidden_until_the_key_shows_them(settings):
    from textual.command import CommandList, CommandPalette

    write_logs(settings, {"s3": s3_log(), "postgres": ["ready"]})
    app = BiConsoleApp(settings, runtime=RecordingRuntime(settings), poll_interval=60)
    async with app.run_test(size=(120, 40)) as pilot:
        services = app.view("services")
        pane = app.query_one("#service-log", LogPane)
        view = pane.view
        table = app.query_one("#services-table", DataTable)
        # The first status poll fills the table; a cursor moved before it lands on no row.
        await wait_for(pilot, lambda: table.row_count >= 3, what="the services listed")
        table.move_cursor(row=2)
        await wait_for(pilot, lambda: services.selected == "s3")
        await wait_for(pilot, lambda: len(view.raw_lines) == 70, what="s3's log loaded")
        assert len(view.visible_lines) == 10 and all("PUT" in line for line in view.visible_lines)
        assert "60 probe lines hidden" in pane.border_title, pane.border_title
        assert "h probes" in pane.border_subtitle, pane.border_subtitle

        # The key works with the table focused, as its hint is shown there.
        await pilot.press("h")
        await wait_for(pilot, lambda: len(view.visible_lines) == 70)
        assert "hidden" not in pane.border_title and tail_shown(view)
        await pilot.press("h")
        await wait_for(pilot, lambda: len(view.visible_lines) == 10)

        # New probe lines are counted as they come.
        append_log(settings, "s3", [moto_line(61, PROBE), moto_line(62, PROBE)])
        await wait_for(pilot, lambda: "62 probe lines hidden" in pane.border_title, what="the count updated")
        assert len(view.visible_lines) == 10

        # The same toggle is in the palette.
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"probe")
        await pilot.pause(0.6)
        await settle(app)
        commands = app.screen.query_one(CommandList)
        names = [str(commands.get_option_at_index(i).prompt) for i in range(commands.option_count)]
        assert any("probe" in name.lower() and "Services" in name for name in names), names
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(view.visible_lines) == 72, what="the palette's toggle")


async def test_superset_health_probes_are_hidden_and_the_key_follows_the_keymap(settings, tmp_path):
    config = tmp_path / "bi-console.toml"
    config.write_text('[keymap]\nlog_probes = "P"\n')
    from pipeline.config import load_settings

    settings = load_settings(env_file=None, **{**settings.model_dump(exclude_none=True), "config_file": str(config)})
    write_logs(settings, {"postgres": ["ready", HEALTH, HEALTH, "GET /health is not a request line"]})
    app = BiConsoleApp(settings, runtime=RecordingRuntime(settings), poll_interval=60)
    async with app.run_test(size=(120, 40)) as pilot:
        from tui.help import HelpScreen

        pane = app.query_one("#service-log", LogPane)
        view = pane.view
        await wait_for(pilot, lambda: len(view.raw_lines) == 4)
        assert view.visible_lines == ["ready", "GET /health is not a request line"]
        assert "2 probe lines hidden" in pane.border_title and "P probes" in pane.border_subtitle
        await pilot.press("h")
        await pilot.pause(0.1)
        assert len(view.visible_lines) == 2
        await pilot.press("P")
        await wait_for(pilot, lambda: len(view.visible_lines) == 4)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        rows = [(keys, text) for _, section in app.screen.sections for keys, text in section]
        assert any(keys.split()[0] == "P" and "probe" in text.lower() for keys, text in rows), rows


async def test_the_connector_view_has_the_connectors_log_with_filter_copy_and_json(settings):
    record = {"level": "INFO", "msg": "snapshot completed", "rows": 2400}
    cdc = [*numbered("cdc", 80), json.dumps(record), "cdc: task stopped"]
    write_logs(settings, {"cdc": cdc, "postgres": ["ready"]})
    app = BiConsoleApp(settings, runtime=RecordingRuntime(settings), poll_interval=60)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.query_one("#views").active == "connector")
        pane = app.query_one("#connector-log", LogPane)
        view = pane.view
        await wait_for(pilot, lambda: len(view.raw_lines) == len(cdc), what="the cdc log loaded")
        await pilot.pause(0.2)
        assert pane.region.height > 5 and tail_shown(view)
        assert "cdc: task stopped" in screen_text(app)
        assert "/ filter" in pane.border_subtitle and "y copy" in pane.border_subtitle

        # `/` from the view's table filters this log; the typed text is not the view's keys.
        await pilot.press("slash", *"snapshot", "enter")
        await wait_for(pilot, lambda: view.pattern is not None)
        assert view.visible_lines == [
            "{",
            '  "level": "INFO",',
            '  "msg": "snapshot completed",',
            '  "rows": 2400',
            "}",
        ]
        await wait_for(pilot, lambda: app.focused is view)
        await pilot.press("j")
        assert view.visible_lines == [json.dumps(record)]
        await pilot.press("up", "y")
        assert app.clipboard == json.dumps(record)
        assert app.runtime.controls == []


async def test_a_typed_burst_with_the_table_focused_ends_in_the_filter(settings):
    from tui.confirm import ConfirmScreen

    write_logs(settings, {"postgres": ["records: 3 loaded", "other line"], "cdc": ["records seen", "x"]})
    runtime = RecordingRuntime(settings)
    app = BiConsoleApp(settings, runtime=runtime, poll_interval=60)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.focused, DataTable) and app.view("services").selected)
        view = app.query_one("#service-log", LogPane).view
        await wait_for(pilot, lambda: len(view.raw_lines) == 2)
        await pilot.press("slash", *"records")  # one burst: no pause between the keys
        await settle(app)
        assert not isinstance(app.screen, ConfirmScreen) and runtime.controls == []
        assert isinstance(app.focused, Input) and app.focused.value == "records"
        await wait_for(pilot, lambda: view.visible_lines == ["records: 3 loaded"])

        # The Connector view too: its `r` restarts the connector, `s` is nothing there.
        await pilot.press("escape", "2")
        connector = app.view("connector")
        await wait_for(
            pilot,
            lambda: app.focused is not None and connector in app.focused.ancestors,
            what="the focus in the connector view",
        )
        await pilot.press("slash", *"records")
        await settle(app)
        assert not isinstance(app.screen, ConfirmScreen) and runtime.controls == []
        assert isinstance(app.focused, Input) and app.focused.value == "records"
        assert "connector-log" in [a.id for a in app.focused.ancestors]


def test_recorded_stopped_engine_reads_stopped_with_its_reason(tmp_path):
    from pipeline.runtime.cdc_engine import read_status
    from tui import recorded

    snapshot = recorded.connector()
    # As the live model reads an engine whose process ended without being stopped (cdc exited).
    live = read_status(tmp_path, snapshot.status.name, process_alive=False, exited=True)
    assert (snapshot.status.effective_state, snapshot.status.last_error) == (live.effective_state, live.last_error)
    assert snapshot.status.effective_state == "STOPPED"
    assert snapshot.status.last_error and "start the cdc service" in snapshot.status.last_error
    assert all(task.state != "UNASSIGNED" for task in snapshot.status.tasks)
    check = next(c for c in recorded.diagnoses()["no_cdc_events"] if c.name == "Connector state")
    assert "UNASSIGNED" not in check.evidence and "STOPPED" in check.evidence
    assert "start the cdc service" in check.evidence and check.fix == "start the cdc service"


async def test_recorded_connector_view_shows_stopped_its_reason_and_its_log(tmp_path):
    from tui import recorded

    settings = make_settings(tmp_path / "data", own_ports=True)
    app = BiConsoleApp(settings, recorded=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.query_one("#views").active == "connector")
        await pilot.pause(0.2)
        state = str(app.query_one("#connector-state").render())
        assert "STOPPED" in state and "start the cdc service" in state, state
        assert "UNASSIGNED" not in screen_text(app)
        view = app.query_one("#connector-log", LogPane).view
        assert view.raw_lines == recorded.CONNECTOR_LOG and tail_shown(view)
