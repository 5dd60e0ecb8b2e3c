"""The service and connector model shared by every runtime (embedded, compose)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol


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

    def as_dict(self) -> dict:
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
    state: str  # RUNNING | PAUSED | FAILED | UNASSIGNED
    worker_id: str = ""
    trace: str | None = None


@dataclass
class ConnectorStatus:
    name: str
    state: str  # RUNNING | PAUSED | FAILED | UNASSIGNED | STOPPED | UNKNOWN
    tasks: list[TaskStatus] = field(default_factory=list)
    trace: str | None = None
    events_captured: int | None = None
    last_event_at: datetime | None = None
    kind: str = "source"

    @property
    def effective_state(self) -> str:
        """FAILED if the connector or any task failed: a failed task is never shown as RUNNING."""
        if self.state == "FAILED" or any(t.state == "FAILED" for t in self.tasks):
            return "FAILED"
        return self.state

    @property
    def error_trace(self) -> str | None:
        if self.trace:
            return self.trace
        for task in self.tasks:
            if task.trace:
                return task.trace
        return None


class Runtime(Protocol):
    """What the TUI and `--check` need from a runtime."""

    name: str

    def service_names(self) -> list[str]: ...

    def status(self, service: str) -> ServiceStatus: ...

    def status_all(self) -> list[ServiceStatus]: ...

    def start(self, service: str) -> None: ...

    def stop(self, service: str) -> None: ...

    def restart(self, service: str) -> None: ...

    def logs(self, service: str, *, follow: bool = False, tail: int | None = 200,
             since: datetime | None = None) -> Iterator[str]: ...


class ConnectorControl(Protocol):
    """Control of the CDC connector, through Kafka Connect or the embedded engine."""

    def status(self) -> ConnectorStatus: ...

    def restart(self, *, include_tasks: bool = True, only_failed: bool = False) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...
