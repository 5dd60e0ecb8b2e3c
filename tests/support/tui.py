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


def screen_text(app) -> str:
    """What the screen shows now, as text, the way an operator reads it."""
    return "\n".join("".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips())


async def start_refresh_on_f(pilot, app):
    """Press `f` once the first service status is in, as an operator would; the Pipeline view
    once its refresh runs."""
    await wait_for(pilot, lambda: app.status_updates, 15, what="first service status")
    await pilot.press("f")
    pipeline = app.view("pipeline")
    await wait_for(pilot, lambda: pipeline.running, 5, what="the refresh to start")
    return pipeline
