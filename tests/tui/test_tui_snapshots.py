"""Snapshots of every view at 80x24 and 160x48, from a fixed recorded state (tui/recorded.py):
no stack, a frozen clock, so every render is the same. Update with --snapshot-update."""

from __future__ import annotations

import pytest

from tests.support.settings import make_settings
from tui.app import BiConsoleApp

SIZES = [(80, 24), (160, 48)]
VIEWS = {"services": "1", "connector": "2", "pipeline": "3", "quality": "4", "troubleshoot": "5"}


def recorded_settings(tmp_path):
    return make_settings(tmp_path / "data")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("view", list(VIEWS))
def test_view_snapshot(snap_compare, tmp_path, view, size):
    app = BiConsoleApp(recorded_settings(tmp_path), recorded=True)
    assert snap_compare(app, press=[VIEWS[view]], terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help_overlay_snapshot(snap_compare, tmp_path, size):
    app = BiConsoleApp(recorded_settings(tmp_path), recorded=True)
    assert snap_compare(app, press=["3", "question_mark"], terminal_size=size)


def test_log_filter_snapshot(snap_compare, tmp_path):
    """`/` filters the log and highlights the matches; JSON lines are pretty-printed."""
    app = BiConsoleApp(recorded_settings(tmp_path), recorded=True)
    assert snap_compare(app, press=["l", "slash", *"info", "enter"], terminal_size=(80, 24))
