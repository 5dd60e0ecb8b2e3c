"""Issue 18 on the real embedded stack: `q` during a refresh asks and the screen stays drawn;
Troubleshoot re-checks when a service changes state; Superset is optional (a stopped one
skips the BI step with a warning, and `stack status` still exits 0); `stack start | stop |
restart SERVICE` for every service."""

# Own stack, isolation needed because the flow stops s3 and restarts postgres, kafka and s3 as an
# operator would: the shared broker would lose every module's topics, the others their connections.

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipeline.orchestration.refresh import read_history
from tests.support.tui import screen_text, start_refresh_on_f, wait_for
from tui.app import BiConsoleApp

pytestmark = [pytest.mark.anyio, pytest.mark.own_stack]


async def test_q_during_a_refresh_asks_and_the_screen_stays_drawn(stack):
    from tui.quit import QuitDuringRefreshScreen

    stack.seeded()
    app = BiConsoleApp(stack.settings, runtime=stack.runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        pipeline = await start_refresh_on_f(pilot, app)

        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitDuringRefreshScreen), 5, what="the quit question")
        text = screen_text(app)
        assert "Cancel the refresh and quit, or keep waiting?" in text and "Keep waiting" in text, text
        await pilot.press("enter")  # the default: keep waiting
        await wait_for(pilot, lambda: not isinstance(app.screen, QuitDuringRefreshScreen), 5, what="the answer")
        assert app.return_code is None and pipeline.running and not pipeline.cancel_event.is_set()

        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitDuringRefreshScreen), 5, what="the question again")
        await pilot.press("c")  # cancel the refresh and quit
        await wait_for(pilot, lambda: app.quit_pending, 5, what="the cancel")
        # While the running step winds down, the screen is drawn and says what happens.
        text = screen_text(app)
        assert "steps" in text and "history" in text, text
        assert "cancelling the refresh" in text or ("cancelled in" in text and "quitting" in text), text
        run_id = None
        deadline = time.monotonic() + 300
        while app.return_code is None:  # the app quits by itself once the refresh has stopped
            assert time.monotonic() < deadline, "the app did not quit after the refresh stopped"
            text = screen_text(app)
            assert "cancelling the refresh" in text or "quitting" in text, text
            run_id = getattr(pipeline.last_run, "run_id", run_id)
            await pilot.pause(0.2)
    last = read_history(stack.settings)[0]
    assert last["run_id"] == run_id and last["outcome"] in ("cancelled", "ok"), last
    assert last["outcome"] == "cancelled" or last["duration"] < 5, last  # ok only if it ended on its own first


async def test_troubleshoot_panels_recheck_when_a_service_changes_state(stack):
    app = BiConsoleApp(stack.settings, runtime=stack.runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("5")
        view = app.view("troubleshoot")
        panel = view.panel("no_cdc_events")

        def connector_check():
            return next((c for c in panel.checks or [] if c.name == "Connector state"), None)

        await wait_for(pilot, lambda: panel.checks is not None and not panel.running, 30, what="diagnosis")
        assert connector_check().ok, connector_check()
        try:
            stack.runtime.stop("cdc")
            await wait_for(pilot, lambda: "down: cdc" in screen_text(app), 10, what="'down: cdc' in the header")
            # No key pressed: the panel re-checks by itself, and its ✓ turns ✗.
            await wait_for(
                pilot,
                lambda: connector_check() and not connector_check().ok and not panel.running,
                30,
                what="the panel to re-check",
            )
            await wait_for(
                pilot, lambda: "✗ Connector state" in screen_text(app), 10, what="'✗ Connector state' on screen"
            )
        finally:
            stack.runtime.start("cdc", log=lambda line: None)
        await wait_for(
            pilot,
            lambda: connector_check() and connector_check().ok and not panel.running,
            120,
            interval=0.5,
            what="the panel to re-check once cdc is back",
        )


@pytest.fixture
def superset_enabled_but_stopped(stack):
    marker = Path(stack.settings.data_dir) / "run" / "superset.enabled"
    marker.touch()  # as `stack up --with superset` leaves it; Superset itself is not running
    yield stack
    marker.unlink(missing_ok=True)


def test_superset_stopped_the_refresh_skips_bi_and_exits_0_and_stack_status_exits_0(superset_enabled_but_stopped):
    import json

    stack = superset_enabled_but_stopped
    stack.seeded()
    status = stack.cli("stack", "status", "--json")
    assert status.returncode == 0, status.stderr
    superset = next(s for s in json.loads(status.stdout) if s["name"] == "superset")
    assert not superset["healthy"]
    assert "warning: superset is down" in status.stderr and "optional" in status.stderr, status.stderr

    refresh = stack.cli("refresh", "--json")
    assert refresh.returncode == 0, refresh.stderr[-3000:]
    run = json.loads(refresh.stdout)
    states = {f"{s['table']}:{s['step']}": s["state"] for s in run["steps"]}
    assert states.pop("all:bi") == "skipped" and set(states.values()) == {"ok"}, states
    bi = next(s for s in run["steps"] if s["step"] == "bi")
    assert bi["notices"][0].startswith("skipped: superset stopped"), bi
    assert "! skipped: superset stopped" in refresh.stderr, refresh.stderr[-2000:]


def test_stack_stop_start_restart_every_service(stack):
    import json

    def healthy() -> dict:
        return {s["name"]: s["healthy"] for s in json.loads(stack.cli("stack", "status", "--json").stdout)}

    result = stack.cli("stack", "stop", "s3")
    assert result.returncode == 0 and "s3: stop done; now stopped" in result.stderr, result.stderr
    down = stack.cli("stack", "status")
    assert down.returncode == 3 and "s3 unreachable" in down.stderr, down.stderr
    result = stack.cli("stack", "start", "s3")
    assert result.returncode == 0 and "now running" in result.stderr, result.stderr
    assert healthy()["s3"]

    for service in ("postgres", "kafka", "s3", "cdc"):
        result = stack.cli("stack", "restart", service, timeout=300)
        assert result.returncode == 0 and f"{service}: restart done; now running" in result.stderr, result.stderr
    # cdc last: its engine reconnects to the restarted database and broker.
    stack.wait_connector(lambda s: s.effective_state == "RUNNING", 120, "RUNNING after the restarts")
    assert all(healthy().values()), healthy()

    result = stack.cli("stack", "stop", "superset")  # not enabled here: nothing to stop, nothing wrong
    assert result.returncode == 0 and "not enabled" in result.stderr, result.stderr
    result = stack.cli("stack", "restart", "nosuch")
    assert result.returncode == 2 and "unknown service 'nosuch'" in result.stderr, result.stderr
