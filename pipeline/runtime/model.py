"""The service and connector model shared by every runtime (embedded, compose)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable


class RuntimeUnavailable(Exception):
    """The runtime cannot be reached at all (engine down, project absent)."""


@dataclass
class ServiceStatus:
    name: str
    state: str  # running | stopped | starting | restarting | exited | failed
    healthy: bool
    health_detail: str = ""
    pid: int | None = None
    started_at: datetime | None = None
    ports: list[int] = field(default_factory=list)
    restart_count: int = 0

    @property
    def uptime_seconds(self) -> float | None:
        if self.started_at is None or self.state != "running":
            return None
        return (datetime.now(timezone.utc) - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "healthy": self.healthy,
            "health_detail": self.health_detail,
            "pid": self.pid,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "uptime_seconds": self.uptime_seconds,
            "ports": self.ports,
            "restart_count": self.restart_count,
        }


@dataclass
class TaskStatus:
    id: int
    state: str  # RUNNING | RETRYING | PAUSED | FAILED | UNASSIGNED | STOPPED
    worker_id: str = ""
    trace: str | None = None


@dataclass
class ConnectorStatus:
    name: str
    state: str  # RUNNING | RETRYING | PAUSED | FAILED | UNASSIGNED | STOPPED | STARTING | UNKNOWN
    tasks: list[TaskStatus] = field(default_factory=list)
    trace: str | None = None
    events_captured: int | None = None
    last_event_at: datetime | None = None
    kind: str = "source"
    # While Debezium retries a retriable error (its source unreachable) its task still
    # "runs", so these are what tells RETRYING apart from RUNNING.
    retry_attempt: int | None = None
    retry_limit: str | None = None  # "infinity" unless errors.max.retries is set
    retrying_since: datetime | None = None

    @property
    def effective_state(self) -> str:
        """FAILED if the connector or any task failed: a failed task is never shown as RUNNING."""
        if self.state == "FAILED" or any(t.state == "FAILED" for t in self.tasks):
            return "FAILED"
        if self.state == "RETRYING" or any(t.state == "RETRYING" for t in self.tasks):
            return "RETRYING"
        return self.state

    @property
    def last_error(self) -> str | None:
        """The one line an operator acts on: the deepest cause of the trace."""
        lines = [line.strip() for line in (self.error_trace or "").strip().splitlines() if line.strip()]
        causes = [line for line in lines if line.startswith("Caused by:")]
        if causes:
            return causes[-1].removeprefix("Caused by:").strip()
        if lines and not lines[0].startswith("Traceback") and any(line.startswith("at ") for line in lines):
            return lines[0]  # a Java trace without causes: its head is the exception
        return lines[-1] if lines else None

    @property
    def summary(self) -> str:
        """State with what explains it: `RETRYING (attempt #6 of infinity): <last error>`."""
        state = self.effective_state
        text = state
        if state == "RETRYING" and self.retry_attempt is not None:
            text += f" (attempt #{self.retry_attempt} of {self.retry_limit or 'infinity'})"
        if state != "RUNNING" and self.last_error:
            text += f": {self.last_error}"
        return text

    @property
    def error_trace(self) -> str | None:
        if self.trace:
            return self.trace
        for task in self.tasks:
            if task.trace:
                return task.trace
        return None


@runtime_checkable
class ConnectorControl(Protocol):
    """Control of the CDC connector, through Kafka Connect or the embedded engine."""

    def status(self) -> ConnectorStatus: ...

    def restart(
        self, *, include_tasks: bool = True, only_failed: bool = False, log: Callable[[str], None] = ...
    ) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


@runtime_checkable
class Runtime(Protocol):
    """What the CLI, the TUI and `--check` need from a runtime (embedded processes or
    compose containers): its services, their control and logs, and the CDC connector."""

    @property
    def name(self) -> str: ...

    def service_names(self) -> list[str]: ...

    def status(self, service: str) -> ServiceStatus: ...

    def status_all(self) -> list[ServiceStatus]: ...

    def start(self, service: str) -> None: ...

    def stop(self, service: str) -> None: ...

    def restart(self, service: str) -> None: ...

    def logs(
        self,
        service: str,
        *,
        follow: bool = False,
        tail: int | None = 200,
        since: datetime | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]: ...

    def connector(self) -> ConnectorControl: ...
