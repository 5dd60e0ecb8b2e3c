"""Issue 18 without a stack: the fix output comes into view, past runs open with their log
and per-step results, and the run history keeps a bounded number of run logs."""

from __future__ import annotations

import pytest

from pipeline.runtime.embedded import EmbeddedRuntime
from tests.support.settings import make_settings as make_test_settings
from tests.support.tui import wait_for
from tui.app import BiConsoleApp

pytestmark = pytest.mark.anyio


def make_settings(tmp_path):
    # Ports nothing listens on: every service of this "stack" is stopped, and says so fast.
    return make_test_settings(tmp_path / "data", own_ports=True)


def in_view(scroll, widget) -> bool:
    top, bottom = scroll.scroll_offset.y, scroll.scroll_offset.y + scroll.scrollable_content_region.height
    region = widget.virtual_region
    return region.y < bottom and region.y + min(region.height, 3) > top


async def test_a_fixs_output_is_scrolled_into_view(tmp_path):
    from textual.containers import VerticalScroll

    from tui.confirm import ConfirmScreen
    from tui.troubleshoot import ProblemPanel

    settings = make_settings(tmp_path)
    app = BiConsoleApp(settings, runtime=EmbeddedRuntime(settings))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("5")
        view = app.view("troubleshoot")
        # Every panel diagnosed: their heights are final, and so is the place of the fix output.
        await wait_for(
            pilot,
            lambda: all(p.checks is not None and not p.running for p in view.query(ProblemPanel)),
            120,
            what="the first diagnosis",
        )
        await pilot.pause(0.2)
        problems = view.query_one("#problems", VerticalScroll)
        pane = view.query_one("#fix-log")
        assert not in_view(problems, pane), (
            "at 100x30 the fix output starts below the fold",
            problems.scroll_offset,
            pane.virtual_region,
        )
        await pilot.press("e")  # refresh BI: fails at once here (no Superset), and says so in its output
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, what="the fix's question")
        await pilot.press("y")
        await wait_for(
            pilot,
            lambda: "stale_bi" not in view._fixing and pane.query_one("LogView").raw_lines,
            60,
            what="the fix to end with output",
        )
        await pilot.pause(0.2)
        assert in_view(problems, pane), (problems.scroll_offset, pane.virtual_region, problems.size)


def failed_step_runs(settings, count: int) -> list:
    """Real one-step refreshes, which end at once here: nothing listens on the database's port."""
    from pipeline.orchestration.refresh import run_refresh

    return [run_refresh(settings, steps=["transform"]) for _ in range(count)]


def test_a_single_step_run_is_recorded_as_that_step_with_its_log(tmp_path):
    from pipeline.orchestration.refresh import read_history, read_run, run_label, run_refresh

    settings = make_settings(tmp_path)
    (step_run,) = failed_step_runs(settings, 1)
    table_run = run_refresh(settings, steps=["load"], tables=["product"])
    whole_run = run_refresh(settings, mode="incremental")
    history = read_history(settings)
    assert [r["run_id"] for r in history] == [whole_run.run_id, table_run.run_id, step_run.run_id]
    labels = [run_label(r) for r in history]
    assert labels == ["incremental", "step load of product", "step transform"], labels
    assert history[2]["selected_steps"] == ["transform"] and history[2]["selected_tables"] is None
    assert history[1]["selected_tables"] == ["product"]
    assert history[0]["selected_steps"] is None

    record, lines = read_run(settings, step_run.run_id)
    assert record["run_id"] == step_run.run_id and record["outcome"] == "failed"
    assert lines[0] == "[all:transform] started", lines
    assert lines[-1].startswith("[all:transform] failed in ") and str(settings.pg_port) in lines[-1], lines


def test_run_logs_are_bounded_in_count(tmp_path, monkeypatch):
    from pipeline.orchestration import refresh

    monkeypatch.setattr(refresh, "RUN_LOGS_KEPT", 2)
    settings = make_settings(tmp_path)
    runs = failed_step_runs(settings, 3)
    kept = sorted(p.stem for p in refresh.run_logs_dir(settings).glob("*.log"))
    assert kept == sorted(r.run_id for r in runs[1:]), kept
    # The oldest run stays in the history; it says its log is gone.
    record, lines = refresh.read_run(settings, runs[0].run_id)
    assert record is not None and lines is None


async def test_a_single_step_run_keeps_the_step_table_whole_and_any_past_run_opens(tmp_path):
    from textual.widgets import DataTable

    from tui.pipeline_view import planned_steps
    from tui.run_screen import PastRunScreen

    settings = make_settings(tmp_path)
    (earlier,) = failed_step_runs(settings, 1)
    app = BiConsoleApp(settings, runtime=EmbeddedRuntime(settings))
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        pipeline = app.view("pipeline")
        whole = planned_steps(settings)
        steps = pipeline.query_one("#steps-table", DataTable)
        steps.focus()
        steps.move_cursor(row=[key for _, key in whole].index("transform"))
        await pilot.press("s")  # the selected step only: transform
        await wait_for(pilot, lambda: pipeline.running, 5, what="the step to start")
        await wait_for(
            pilot, lambda: not pipeline.running and pipeline.last_run, 120, interval=0.2, what="the step to end"
        )
        assert pipeline.last_run.selected_steps == ["transform"]
        assert steps.row_count == len(whole), pipeline.step_states()
        states = pipeline.step_states()
        assert states["all:transform"] == "failed" and states["product:ingest"] == "pending", states

        history = pipeline.query_one("#history-table", DataTable)
        await wait_for(pilot, lambda: history.row_count == 2, 20, what="both runs in the history")
        assert [str(history.get_row_at(n)[1]) for n in range(2)] == ["step transform", "step transform"]
        history.focus()
        history.move_cursor(row=1)  # the earlier run, from before this app started
        await pilot.press("enter")
        screen = await wait_for(
            pilot, lambda: isinstance(app.screen, PastRunScreen) and app.screen, 10, what="the past run to open"
        )
        assert screen.record["run_id"] == earlier.run_id
        table = screen.query_one("#past-run-steps", DataTable)
        assert table.row_count == 1 and str(table.get_row_at(0)[2]) == "failed"
        log = screen.query_one("#past-run-log").view.raw_lines
        assert log[0] == "[all:transform] started" and log[-1].startswith("[all:transform] failed"), log
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, PastRunScreen), 5, what="the run to close")


def enable_superset(settings) -> None:
    from pathlib import Path

    run_dir = Path(settings.data_dir) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "superset.enabled").touch()  # as `stack up --with superset` leaves it


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled-but-stopped", "not-enabled"])
def test_the_bi_step_is_skipped_with_a_warning_when_superset_is_stopped(tmp_path, enabled):
    from pipeline.orchestration.refresh import read_history, run_refresh

    settings = make_settings(tmp_path)
    if enabled:
        enable_superset(settings)
    run = run_refresh(settings, steps=["bi"])
    assert run.outcome == "ok", (run.failed_step, run.error)
    (bi,) = run.steps
    assert bi.state == "skipped" and bi.error is None
    assert bi.notices and bi.notices[0].startswith("skipped: superset stopped"), bi.notices
    assert ("BI_SUPERSET_URL" in bi.notices[0]) if enabled else ("not enabled" in bi.notices[0])
    assert read_history(settings)[0]["steps"][0]["state"] == "skipped"


def test_a_superset_that_answers_badly_still_fails_the_bi_step(tmp_path):
    """Only a Superset that is not there is skipped: one that is up and broken is an outage."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from pipeline.orchestration.refresh import run_refresh

    class Broken(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"starting")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = make_settings(tmp_path).model_copy(
            update={"superset_url": f"http://127.0.0.1:{server.server_address[1]}"}
        )
        enable_superset(settings)
        run = run_refresh(settings, steps=["bi"])
    finally:
        server.shutdown()
    assert run.outcome == "failed" and run.unreachable, run
    assert "503" in run.error and run.steps[0].state == "failed", run.error
