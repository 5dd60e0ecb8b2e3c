"""Issue 18 without a stack: the fix output comes into view, past runs open with their log
and per-step results, and the run history keeps a bounded number of run logs."""

from __future__ import annotations

import pytest

from pipeline.config import DEFAULT_CONFIG, load_settings
from pipeline.runtime.embedded import EmbeddedRuntime
from tui.app import BiConsoleApp
try:
    from tests.tui_support import wait_for
except ImportError:  # tests/ is not a package
    from tui_support import wait_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_settings(tmp_path):
    from conftest import free_port

    # Ports nothing listens on: every service of this "stack" is stopped, and says so fast.
    return load_settings(env_file=None, data_dir=str(tmp_path / "data"), config_file=str(DEFAULT_CONFIG),
                         runtime="embedded", pg_port=free_port(), source_port=free_port(),
                         kafka_bootstrap=f"127.0.0.1:{free_port()}", s3_endpoint=f"http://127.0.0.1:{free_port()}",
                         superset_url=f"http://127.0.0.1:{free_port()}",
                         pg_password="unit-pg-pass", pg_reader_password="unit-reader", source_password="unit-src",
                         s3_access_key="unit-key", s3_secret_key="unit-secret")


def in_view(scroll, widget) -> bool:
    top, bottom = scroll.scroll_offset.y, scroll.scroll_offset.y + scroll.scrollable_content_region.height
    region = widget.virtual_region
    return region.y < bottom and region.y + min(region.height, 3) > top


async def test_a_fixs_output_is_scrolled_into_view(tmp_path):
    from textual.containers import VerticalScroll

    from tui.confirm import ConfirmScreen

    settings = make_settings(tmp_path)
    app = BiConsoleApp(settings, runtime=EmbeddedRuntime(settings))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("5")
        view = app.view("troubleshoot")
        await wait_for(pilot, lambda: all(p.checks is not None and not p.running for p in
                                          (view.panel(name) for name in ("no_cdc_events", "stale_bi"))), 60,
                       what="the first diagnosis")
        problems = view.query_one("#problems", VerticalScroll)
        pane = view.query_one("#fix-log")
        assert not in_view(problems, pane), "at 100x30 the fix output starts below the fold"
        await pilot.press("e")  # refresh BI: fails at once here (no Superset), and says so in its output
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, what="the fix's question")
        await pilot.press("y")
        await wait_for(pilot, lambda: "stale_bi" not in view._fixing and pane.query_one("LogView").raw_lines, 60,
                       what="the fix to end with output")
        await pilot.pause(0.2)
        assert in_view(problems, pane), (problems.scroll_offset, pane.virtual_region, problems.size)
