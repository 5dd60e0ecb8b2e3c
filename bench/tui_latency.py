"""Input-to-render latency of the TUI while a full refresh runs.

Starts a throw-away embedded stack (free ports, temporary data directory, generated
secrets), seeds the demo source, opens the TUI headless, presses `f` and, while the
refresh runs, presses keys (switching views, moving cursors) one at a time. For each key
it measures the time from sending the key to the next frame the app renders, and prints
median / p95 / max.

    python bench/tui_latency.py                  # temporary stack (about 30 s to start)
    python bench/tui_latency.py --env-file .env  # an already running stack (it must be seeded)
    python bench/tui_latency.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import bench_settings  # noqa: E402
from pipeline.config import load_settings  # noqa: E402
from tui.app import BiConsoleApp  # noqa: E402

KEYS = ["2", "3", "down", "4", "5", "1", "down", "up", "3", "down"]


class TimedApp(BiConsoleApp):
    """Records the time of every frame the app renders (headless too)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.frames: list[float] = []

    def ui_state(self) -> tuple:
        """What a key press changes: the active view and the focused widget's cursor."""
        try:
            active = self.query_one("#views").active
        except Exception:
            active = None
        focused = self.focused
        return (active, type(focused).__name__, getattr(focused, "cursor_row", getattr(focused, "cursor", None)))

    def _display(self, screen, renderable) -> None:
        if renderable is not None:
            self.frames.append((time.perf_counter(), self.ui_state()))
        super()._display(screen, renderable)


async def measure(settings, runtime, size=(120, 40), gap: float = 0.15) -> dict:
    app = TimedApp(settings, runtime=runtime)
    latencies: list[float] = []
    per_key: list[tuple[str, float]] = []
    async with app.run_test(size=size) as pilot:
        await pilot.pause(1.0)
        await pilot.press("f")
        pipeline = app.view("pipeline")
        started = time.monotonic()
        while not pipeline.running and time.monotonic() - started < 10:
            await pilot.pause(0.05)
        index = 0
        while pipeline.running:
            key = KEYS[index % len(KEYS)]
            index += 1
            before, state = len(app.frames), app.ui_state()
            sent = time.perf_counter()
            await pilot.press(key)
            deadline = time.perf_counter() + 5
            changed = None
            while changed is None and time.perf_counter() < deadline:
                # the first rendered frame that shows the key's effect
                changed = next((t for t, st in app.frames[before:] if st != state), None)
                if changed is None:
                    await asyncio.sleep(0.001)
            if changed is not None and pipeline.running:
                latencies.append(changed - sent)
                per_key.append((key, round((changed - sent) * 1000, 1)))
            await pilot.pause(gap)
        run = pipeline.last_run
    if not latencies:
        raise SystemExit("no key was measured: the refresh ended at once")
    ordered = sorted(latencies)
    return {
        "keys": len(latencies),
        "median_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "refresh_outcome": getattr(run, "outcome", None),
        "refresh_seconds": round(getattr(run, "duration", 0.0), 1),
        "terminal": f"{size[0]}x{size[1]}",
        "per_key_ms": per_key,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", help="use the running stack of this settings file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from pipeline.runtime.select import select_runtime

    stack = None
    if args.env_file:
        settings = load_settings(env_file=args.env_file)
        runtime = select_runtime(settings)
    else:
        root = Path(tempfile.mkdtemp(prefix="bi-console-bench-"))
        settings = bench_settings(root / "data")
        from pipeline.runtime.embedded import EmbeddedRuntime

        runtime = stack = EmbeddedRuntime(settings)
        print("starting a temporary embedded stack…", file=sys.stderr)
        stack.up(log=lambda line: None)
    try:
        if stack is not None:
            from pipeline import demo
            from pipeline.stores.kafka import topic_event_count

            result = demo.seed(settings, log=lambda line: None)
            topic = settings.tables[0].topic
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if topic_event_count(settings, topic) >= result["product_events"]:
                        break
                except Exception:
                    pass
                time.sleep(0.5)
        print("measuring input-to-render latency during a full refresh…", file=sys.stderr)
        result = asyncio.run(measure(settings, runtime))
    finally:
        if stack is not None:
            stack.down(log=lambda line: None)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"input-to-render latency during a full refresh ({result['refresh_outcome']}, "
            f"{result['refresh_seconds']}s, {result['terminal']}): {result['keys']} keys, "
            f"median {result['median_ms']} ms, p95 {result['p95_ms']} ms, max {result['max_ms']} ms"
        )
        slow = [f"{key} {ms:.0f}" for key, ms in result["per_key_ms"] if ms >= 100]
        print(f"keys at 100 ms or more (key ms, in order): {', '.join(slow) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
