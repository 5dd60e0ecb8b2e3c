"""Issue 4 acceptance: the TUI headless (App.run_test + Pilot) against the real embedded stack."""

# Own stack, isolation needed because the services view is shown s3 going down: the test stops moto,
# and with it every other module's raw zone (moto keeps its objects in memory).

from __future__ import annotations

import time

import pytest

from tests.support.tui import screen_text, start_refresh_on_f, wait_for
from tui.app import BiConsoleApp

pytestmark = [pytest.mark.anyio, pytest.mark.own_stack]


async def test_full_refresh_on_f_then_quality_shows_115(stack):
    stack.seeded()
    app = BiConsoleApp(stack.settings, runtime=stack.runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        pipeline = await start_refresh_on_f(pilot, app)
        await wait_for(pilot, lambda: not pipeline.running, 600, interval=0.5, what="the refresh to end")
        run = pipeline.last_run
        assert run is not None and run.outcome == "ok", (run.failed_step, run.error) if run else None
        assert set(pipeline.step_states().values()) == {"ok"}, pipeline.step_states()

        await pilot.press("4")
        quality = app.view("quality")
        try:
            counts = await wait_for(
                pilot,
                lambda: quality.layer_counts("product").get("marts") == 115 and quality.layer_counts("product"),
                120,
                what="quality counts",
            )
        except AssertionError:
            snap = quality.snapshot
            raise AssertionError(
                f"quality: {snap and snap.error}, {snap and snap.counts}, errors {app.errors}"
            ) from None
        assert counts["staging_active"] == 115 and counts["marts"] == 115, counts
        row = await wait_for(
            pilot,
            lambda: next(
                (line for line in screen_text(app).splitlines() if "product" in line and line.count("115") >= 2), None
            ),
            20,
            what="the product row with 115 on screen",
        )
        assert row.count("115") >= 2, row
        # The GE results of the run are shown, each suite with its expectations.
        assert quality.snapshot.validation.get("product", {}).get("success") is True
        # The run is in the history, which survives restarts (read back from disk).
        from pipeline.orchestration.refresh import read_history

        assert read_history(stack.settings)[0]["run_id"] == run.run_id
        assert not app.errors, app.errors


async def test_cancel_during_load_leaves_bronze_consistent(stack):
    stack.seeded()
    # Small raw objects, so that the load is made of many transactions and can be cut.
    settings = stack.settings.model_copy(update={"ingest_batch_size": 40})
    app = BiConsoleApp(settings, runtime=stack.runtime)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f")
        pipeline = app.view("pipeline")
        await wait_for(
            pilot,
            lambda: pipeline.rows.get(("product", "load"), {}).get("state") == "running",
            300,
            interval=0.02,
            what="product:load to run",
        )
        await pilot.press("x")
        await wait_for(pilot, lambda: not pipeline.running, 120, interval=0.2, what="the run to stop")
        run = pipeline.last_run
        assert run.outcome == "cancelled", (run.outcome, run.steps)
        states = pipeline.step_states()
        assert states["all:transform"] == "skipped" and states["product:ingest"] == "ok", states
        assert "cancelled" in states.values()
    bronze, meta = settings.file.bronze_schema, settings.file.meta_schema
    for table in settings.tables:
        ((rows,),) = stack.psql(f'SELECT count(*) FROM "{bronze}"."{table.bronze_table}"')
        ((recorded,),) = stack.psql(
            f'SELECT coalesce(sum(inserted), 0) FROM "{meta}".load_manifest WHERE bronze_table = %s',
            (table.bronze_table,),
        )
        assert rows == recorded, (table.name, rows, recorded)
        ((dupes,),) = stack.psql(
            f"SELECT count(*) - count(DISTINCT (kafka_topic, kafka_partition, kafka_offset)) "
            f'FROM "{bronze}"."{table.bronze_table}"'
        )
        assert dupes == 0


async def test_service_stopped_behind_the_apps_back_shows_down_within_5s(stack):
    app = BiConsoleApp(stack.settings, runtime=stack.runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        services = app.view("services")
        await wait_for(
            pilot, lambda: services.status_of("s3") and services.status_of("s3").healthy, 15, what="s3 healthy"
        )
        try:
            stack.runtime.stop("s3")
            stopped = time.monotonic()
            await wait_for(pilot, lambda: not services.status_of("s3").healthy, 5, interval=0.05, what="s3 shown down")
            elapsed = time.monotonic() - stopped
            await wait_for(pilot, lambda: "down: s3" in screen_text(app), 5, what="'down: s3' on screen")
            assert elapsed < 5
        finally:
            stack.runtime.start("s3", log=lambda line: None)
        await wait_for(pilot, lambda: services.status_of("s3").healthy, 10, what="s3 back up")


async def test_no_cdc_events_panel_diagnoses_stopped_connector_and_fix_restarts_it(stack):
    stack.runtime.stop("cdc")
    try:
        app = BiConsoleApp(stack.settings, runtime=stack.runtime)
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("5")
            view = app.view("troubleshoot")
            panel = view.panel("no_cdc_events")
            await wait_for(pilot, lambda: panel.checks is not None and not panel.running, 20, what="diagnosis")
            connector = next(c for c in panel.checks if c.name == "Connector state")
            assert not connector.ok and "RUNNING" not in connector.evidence, connector
            assert any(c.name.startswith("Topic ") and "end offset" in c.evidence for c in panel.checks)
            await wait_for(
                pilot, lambda: "✗ Connector state" in screen_text(app), 20, what="'✗ Connector state' on screen"
            )

            await pilot.press("c")  # the panel's fix: restart connector
            from tui.confirm import ConfirmScreen

            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, what="the fix's question")
            await pilot.press("y")
            await wait_for(pilot, lambda: "no_cdc_events" in view._fixing, 2, interval=0.02, what="fix to start")
            await wait_for(pilot, lambda: "no_cdc_events" not in view._fixing, 180, interval=0.5, what="the fix to end")
            await wait_for(pilot, lambda: not panel.running and panel.checks, 20, what="re-diagnosis")
            connector = next(c for c in panel.checks if c.name == "Connector state")
            assert connector.ok, connector
        assert stack.runtime.connector_status().effective_state == "RUNNING"
    finally:
        if not stack.runtime.process("cdc").is_running():
            stack.runtime.start("cdc", log=lambda line: None)
