"""Helpers of the headless TUI tests."""

from __future__ import annotations

import time


async def wait_for(pilot, predicate, timeout: float = 30.0, interval: float = 0.05, what: str = ""):
    """Let the app run until `predicate()` is true and return its value, however slow the
    machine (a loaded CI runner); fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await pilot.pause(interval)
