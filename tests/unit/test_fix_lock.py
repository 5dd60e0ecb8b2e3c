"""The Troubleshoot fixes that write (bronze repair, dbt rerun) and `quarantine replay` take the
refresh lock: while a refresh holds it they refuse with the lock's own message, touching nothing."""

from __future__ import annotations

import os

import pytest

from pipeline.checks import fixes
from pipeline.orchestration.refresh import RefreshLock, RefreshLocked
from tests.support.settings import make_settings


@pytest.fixture
def held_lock(tmp_path):
    settings = make_settings(tmp_path / "data", own_ports=True)
    lock = RefreshLock(settings)
    lock.acquire({"run_id": "run-under-test", "mode": "full", "pid": os.getpid(), "started_at": "2026-12-02T17:00"})
    yield settings
    lock.release()


@pytest.mark.parametrize("fix", [fixes.fix_bronze_load, fixes.fix_rerun_dbt_debug])
def test_a_fix_that_writes_refuses_while_a_refresh_runs(held_lock, fix):
    lines: list[str] = []
    with pytest.raises(RefreshLocked, match="another refresh is running: run run-under-test"):
        fix(held_lock, lines.append)
    assert lines == []  # refused before it did anything


def test_the_lock_is_free_again_after_a_refused_fix(held_lock):
    with pytest.raises(RefreshLocked):
        fixes.fix_bronze_load(held_lock)
    # The fix did not take the lock over: the refresh still holds it.
    with pytest.raises(RefreshLocked):
        RefreshLock(held_lock).acquire({"run_id": "second"})
