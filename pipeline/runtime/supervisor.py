"""Detached processes with a pid record, a log file and a clean stop.

A process started here outlives the command that started it (`bi-console stack up`
returns), so the pid record stores the process's creation time: a recycled pid is
never mistaken for ours, and `stop` never signals a process we did not start.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psutil


@dataclass
class PidRecord:
    pid: int
    create_time: float
    argv: list[str]
    started_at: str

    @classmethod
    def read(cls, path: Path) -> PidRecord | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        os.replace(tmp, path)

    def process(self) -> psutil.Process | None:
        """The live process this record describes, or None if it is gone or the pid was reused."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.Error:
            return None


class ManagedProcess:
    """One supervised process: `<state_dir>/<name>.pid` and `<log_dir>/<name>.log`."""

    def __init__(self, name: str, state_dir: Path, log_dir: Path):
        self.name = name
        self.pid_file = state_dir / f"{name}.pid"
        self.log_file = log_dir / f"{name}.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)

    def record(self) -> PidRecord | None:
        return PidRecord.read(self.pid_file)

    def process(self) -> psutil.Process | None:
        record = self.record()
        return record.process() if record else None

    def is_running(self) -> bool:
        return self.process() is not None

    def started_at(self) -> datetime | None:
        record = self.record()
        if record is None or record.process() is None:
            return None
        return datetime.fromtimestamp(record.create_time, tz=timezone.utc)

    def start(
        self, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, user: str | None = None
    ) -> PidRecord:
        """Start argv detached (own session), appending its output to the log file."""
        existing = self.record()
        if existing and existing.process():
            return existing
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- {datetime.now(timezone.utc).isoformat()} starting {self.name}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
                user=user,
                close_fds=True,
            )
        record = PidRecord(
            pid=proc.pid,
            create_time=psutil.Process(proc.pid).create_time(),
            argv=argv,
            started_at=datetime.now(timezone.utc).isoformat(),
        )
        record.write(self.pid_file)
        return record

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> bool:
        """Stop the process and its children; True if something was stopped."""
        proc = self.process()
        if proc is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        try:
            children = proc.children(recursive=True)
        except psutil.Error:
            children = []
        for p in [proc, *children]:
            try:
                p.send_signal(sig)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs([proc, *children], timeout=timeout)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash would: the pid record stays, as after a real crash."""
        proc = self.process()
        if proc is not None:
            proc.kill()
            try:
                proc.wait(5)
            except psutil.Error:
                pass

    def tail(self, lines: int = 200) -> list[str]:
        if not self.log_file.exists():
            return []
        with open(self.log_file, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            block = min(size, max(lines, 1) * 400)
            fh.seek(size - block)
            data = fh.read().decode("utf-8", "replace")
        return data.splitlines()[-lines:]

    def follow(self, poll: float = 0.25, stop: Callable[[], bool] = lambda: False) -> Iterator[str]:
        """Yield new log lines as they are written, until stop() is true."""
        self.log_file.touch(exist_ok=True)
        with open(self.log_file, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            buffer = b""
            while not stop():
                chunk = fh.read()
                if not chunk:
                    time.sleep(poll)
                    continue
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    yield line.decode("utf-8", "replace")


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(interval)
    return False
