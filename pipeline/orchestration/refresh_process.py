"""A refresh in a child process, with the same interface as `run_refresh`.

dbt and Great Expectations are CPU-bound Python: run in a thread of the TUI's process they
hold the GIL and the screen stops answering keys. The child runs `run_refresh` and writes
its events as JSON lines; the parent turns them back into the same event objects. Cancel
is a signal to the child, which sets its cancel event: steps still stop at a safe point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from pipeline.config import ConfigError, Settings, load_settings
from pipeline.orchestration.refresh import (
    RefreshEvent,
    RefreshLocked,
    RefreshRun,
    RunFinished,
    StepFinished,
    StepLog,
    StepStarted,
    run_refresh,
)

_EVENTS = {cls.__name__: cls for cls in (StepStarted, StepLog, StepFinished)}
_ERRORS = {"RefreshLocked": RefreshLocked, "ConfigError": ConfigError}


def _encode(event: RefreshEvent) -> str:
    if isinstance(event, RunFinished):
        return json.dumps({"type": "RunFinished", "run": event.run.as_dict()}, default=str)
    return json.dumps({"type": type(event).__name__, **asdict(event)}, default=str)


def _decode(line: str) -> RefreshEvent | None:
    data = json.loads(line)
    kind = data.pop("type", None)
    if kind == "RunFinished":
        run = data["run"]
        run["steps"] = [StepFinished(**step) for step in run["steps"]]
        return RunFinished(RefreshRun(**run))
    if kind in _EVENTS:
        return _EVENTS[kind](**data)
    if kind == "error":
        raise _ERRORS.get(data["kind"], RuntimeError)(data["message"])
    return None


def run_refresh_in_child(
    settings: Settings,
    *,
    mode: str = "incremental",
    steps: list[str] | None = None,
    tables: list[str] | None = None,
    on_event: Callable[[RefreshEvent], None] = lambda e: None,
    cancel: threading.Event | None = None,
    nice: int = 10,
    under_lock_of: str | None = None,
) -> RefreshRun:
    request = json.dumps({"mode": mode, "steps": steps, "tables": tables, "under_lock_of": under_lock_of})
    log_dir = Path(settings.data_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    # The child's own output (dbt's console, warnings) goes to a file nobody has to drain.
    with open(log_dir / "refresh.log", "ab") as child_log:
        # Lower priority: on a small machine the operator's key presses win over dbt's CPU work.
        child = subprocess.Popen(
            [sys.executable, "-m", "pipeline.orchestration.refresh_process", request],
            stdout=subprocess.PIPE,
            stderr=child_log,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **settings.to_env()},
            start_new_session=True,
            preexec_fn=lambda: os.nice(nice),
        )
    done = threading.Event()

    def forward_cancel() -> None:
        while not done.is_set():
            if cancel is not None and cancel.wait(0.2):
                if child.poll() is None:
                    child.send_signal(signal.SIGUSR1)
                return

    threading.Thread(target=forward_cancel, daemon=True).start()
    run: RefreshRun | None = None
    try:
        assert child.stdout is not None  # stdout=PIPE
        for line in child.stdout:
            event = _decode(line)
            if event is None:
                continue
            if isinstance(event, RunFinished):
                run = event.run
            on_event(event)
    finally:
        done.set()
        child.wait()
    if run is None:
        raise RuntimeError(
            f"the refresh process exited {child.returncode} without a result; see {log_dir / 'refresh.log'}"
        )
    return run


def main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    cancel = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: cancel.set())
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # only events go to the parent's pipe, whatever else writes to stdout
    sys.stdout = sys.stderr

    def send(event: RefreshEvent) -> None:
        out.write(_encode(event) + "\n")

    try:
        run_refresh(
            load_settings(env_file=None),
            mode=request["mode"],
            steps=request["steps"],
            tables=request["tables"],
            cancel=cancel,
            on_event=send,
            under_lock_of=request.get("under_lock_of"),
        )
    except (RefreshLocked, ConfigError) as exc:
        out.write(json.dumps({"type": "error", "kind": type(exc).__name__, "message": str(exc)}) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
