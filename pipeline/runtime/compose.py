"""The Docker Compose runtime: the project's containers, seen and driven through the
Docker Engine API (docker SDK), found by the labels docker compose puts on them.

Compose itself is not needed at run time: `docker compose up` creates the containers,
this runtime reads their state, starts/stops/restarts them and streams their logs.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker
import requests
import yaml
from docker.errors import APIError, DockerException, NotFound
from docker.models.containers import Container

from pipeline.runtime.connect_client import DEFAULT_CONNECT_URL, DEFAULT_CONNECTOR, KafkaConnectClient
from pipeline.runtime.model import RuntimeUnavailable, ServiceStatus

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
NUMBER_LABEL = "com.docker.compose.container-number"
ONE_SHOT_LABEL = "bi-console.one-shot"
RESTART_LOOP_COUNT = 3  # restarts by the engine's restart policy...
RESTART_LOOP_WINDOW = 10.0  # ...the last one less than this many seconds ago

DEFAULT_COMPOSE_FILE = Path("compose") / "docker-compose.yml"
_REPO_COMPOSE_FILE = Path(__file__).resolve().parents[2] / DEFAULT_COMPOSE_FILE


class UnknownService(LookupError):
    """The project has no container for this service. The message is one line."""

    def __str__(self) -> str:  # LookupError would repr() the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------------------
# Project name, as docker compose resolves it
# --------------------------------------------------------------------------------------


def normalize_project_name(name: str) -> str:
    """docker compose's normalisation: lower case, only [a-z0-9_-], starting with a letter or digit."""
    name = re.sub(r"[^a-z0-9_-]", "", name.lower())
    return re.sub(r"^[^a-z0-9]+", "", name)


def split_compose_files(value: str | None) -> list[str]:
    """COMPOSE_FILE / BI_COMPOSE_FILES: paths separated by COMPOSE_PATH_SEPARATOR (default os.pathsep) or commas."""
    if not value:
        return []
    separator = os.environ.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
    parts = re.split(f"[{re.escape(separator)},]", value)
    return [p.strip() for p in parts if p.strip()]


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def _interpolate(value: str, env: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        current = env.get(name)
        if op in (":-", ":?"):
            missing = not current
        else:
            missing = current is None
        if missing and op in (":-", "-"):
            return arg
        return current or ""

    return _INTERPOLATION.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def resolve_project_name(
    project: str | None = None,
    files: Sequence[str | os.PathLike[str]] = (),
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """The compose project name, in docker compose's order of precedence:
    `-p NAME` > COMPOSE_PROJECT_NAME > the top-level `name:` of the files (the last file
    that sets it wins, as files merge in order) > the directory of the first file > the
    current directory."""
    env = os.environ if env is None else env
    if project:
        return normalize_project_name(project)
    if env.get("COMPOSE_PROJECT_NAME"):
        return normalize_project_name(env["COMPOSE_PROJECT_NAME"])
    paths = [Path(f) for f in files]
    name_from_files = None
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise RuntimeUnavailable(f"compose file {path} cannot be read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise RuntimeUnavailable(f"compose file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if isinstance(doc, dict) and doc.get("name"):
            name_from_files = _interpolate(str(doc["name"]), env)
    if name_from_files:
        return normalize_project_name(name_from_files)
    base = paths[0].resolve().parent if paths else (cwd or Path.cwd()).resolve()
    return normalize_project_name(base.name)


# --------------------------------------------------------------------------------------
# Container state -> ServiceStatus
# --------------------------------------------------------------------------------------


def parse_docker_time(value: str | None) -> datetime | None:
    """Engine timestamps have nanoseconds and a Z; 0001-01-01 means never."""
    if not value or value.startswith("0001-01-01"):
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", value)
    if not match:
        return None
    base, fraction, zone = match.groups()
    fraction = (fraction or ".0")[:7]
    zone = "+00:00" if zone in (None, "Z") else zone
    return datetime.fromisoformat(f"{base}{fraction}{zone}").astimezone(timezone.utc)


def _published_ports(attrs: Mapping[str, Any]) -> list[int]:
    ports = ((attrs.get("NetworkSettings") or {}).get("Ports")) or {}
    published: set[int] = set()
    for bindings in ports.values():
        for binding in bindings or []:
            host_port = binding.get("HostPort")
            if host_port and str(host_port).isdigit():
                published.add(int(host_port))
    return sorted(published)


def _last_health_output(health: Mapping[str, Any]) -> str:
    log = health.get("Log") or []
    if not log:
        return ""
    last = log[-1]
    output = " ".join(str(last.get("Output") or "").split())
    code = last.get("ExitCode")
    text = f"last check exit {code}" if code is not None else "last check"
    return f"{text}: {output[:200]}" if output else text


def status_from_inspect(service: str, attrs: Mapping[str, Any]) -> ServiceStatus:
    """Map a GET /containers/{id}/json document to a ServiceStatus."""
    state = attrs.get("State") or {}
    docker_status = state.get("Status") or ""
    health = state.get("Health") or {}
    health_status = health.get("Status")
    restart_count = int(attrs.get("RestartCount") or 0)
    labels = ((attrs.get("Config") or {}).get("Labels")) or {}
    one_shot = str(labels.get(ONE_SHOT_LABEL, "")).lower() == "true"
    exit_code = state.get("ExitCode")
    started_at = parse_docker_time(state.get("StartedAt"))
    pid = state.get("Pid") or None

    if state.get("Restarting") or docker_status == "restarting":
        detail = f"restart loop: {restart_count} restarts, last exit code {exit_code}"
        if state.get("Error"):
            detail += f" ({state['Error']})"
        return ServiceStatus(
            service, "restarting", False, detail, None, started_at, _published_ports(attrs), restart_count
        )
    if docker_status == "running" or state.get("Running"):
        uptime = (datetime.now(timezone.utc) - started_at).total_seconds() if started_at else None
        if restart_count >= RESTART_LOOP_COUNT and uptime is not None and uptime < RESTART_LOOP_WINDOW:
            # Caught between two crashes: the engine counts a restart as a success only after
            # 10 s of running, and so does this.
            return ServiceStatus(
                service,
                "restarting",
                False,
                f"restart loop: {restart_count} restarts, running {uptime:.0f}s since the last",
                pid,
                started_at,
                _published_ports(attrs),
                restart_count,
            )
        if state.get("Paused") or docker_status == "paused":
            return ServiceStatus(
                service, "stopped", False, "paused", pid, started_at, _published_ports(attrs), restart_count
            )
        if health_status == "healthy":
            return ServiceStatus(
                service, "running", True, "healthy", pid, started_at, _published_ports(attrs), restart_count
            )
        if health_status == "starting":
            return ServiceStatus(
                service, "starting", False, "health: starting", pid, started_at, _published_ports(attrs), restart_count
            )
        if health_status == "unhealthy":
            streak = health.get("FailingStreak")
            detail = "unhealthy"
            if streak:
                detail += f" ({streak} failed checks)"
            last = _last_health_output(health)
            if last:
                detail += f"; {last}"
            return ServiceStatus(
                service, "running", False, detail, pid, started_at, _published_ports(attrs), restart_count
            )
        return ServiceStatus(
            service,
            "running",
            True,
            "running (no healthcheck)",
            pid,
            started_at,
            _published_ports(attrs),
            restart_count,
        )
    if docker_status == "paused":
        return ServiceStatus(service, "stopped", False, "paused", pid, started_at, [], restart_count)
    if docker_status in ("exited", "dead"):
        if docker_status == "exited" and exit_code == 0:
            if one_shot:
                return ServiceStatus(
                    service, "exited", True, "completed (exit code 0)", None, started_at, [], restart_count
                )
            return ServiceStatus(service, "exited", False, "exited with code 0", None, started_at, [], restart_count)
        detail = f"exited with code {exit_code}"
        if state.get("OOMKilled"):
            detail += " (out of memory)"
        if state.get("Error"):
            detail += f": {state['Error']}"
        return ServiceStatus(service, "failed", False, detail, None, started_at, [], restart_count)
    # created, removing, or anything newer
    return ServiceStatus(service, "stopped", False, docker_status or "unknown", None, started_at, [], restart_count)


# --------------------------------------------------------------------------------------
# The runtime
# --------------------------------------------------------------------------------------


def _short_error(exc: BaseException) -> str:
    text = str(exc)
    for marker in (
        "Connection refused",
        "No such file or directory",
        "Permission denied",
        "timed out",
        "Name or service not known",
    ):
        if marker in text:
            return marker.lower()
    return " ".join(text.split())[:160]


class ComposeRuntime:
    """The `Runtime` of a compose project, through the Docker Engine API."""

    name = "compose"

    def __init__(
        self,
        project: str | None = None,
        *,
        files: Sequence[str | os.PathLike[str]] = (),
        base_url: str | None = None,
        client: docker.DockerClient | None = None,
        timeout: float = 10.0,
        stop_timeout: int = 10,
        env: Mapping[str, str] | None = None,
        connect_url: str | None = None,
        connector_name: str | None = None,
    ):
        self.files = [Path(f) for f in files]
        # In compose the connector runs in Kafka Connect, reached over its REST API.
        self.connect_url = connect_url
        self.connector_name = connector_name
        self.project = resolve_project_name(project, self.files, env)
        self.base_url = base_url
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        self._client = client

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> ComposeRuntime:
        """Project and files from BI_COMPOSE_PROJECT_NAME / BI_COMPOSE_FILES, then
        COMPOSE_PROJECT_NAME / COMPOSE_FILE, then ./compose/docker-compose.yml."""
        files = (
            split_compose_files(getattr(settings, "compose_files", None))
            or split_compose_files(os.environ.get("COMPOSE_FILE"))
            or [str(p) for p in (DEFAULT_COMPOSE_FILE, _REPO_COMPOSE_FILE) if p.is_file()][:1]
        )
        kwargs.setdefault("connect_url", getattr(settings, "kafka_connect_url", None))
        kwargs.setdefault("connector_name", getattr(settings, "connector_name", None))
        return cls(getattr(settings, "compose_project_name", None), files=files, **kwargs)

    # -- engine -------------------------------------------------------------------

    @property
    def engine_url(self) -> str:
        return self.base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def client(self) -> docker.DockerClient:
        if self._client is None:
            try:
                if self.base_url:
                    self._client = docker.DockerClient(base_url=self.base_url, timeout=self.timeout)  # type: ignore[arg-type]
                else:
                    # docker-py hands the timeout to requests, which takes a float.
                    self._client = docker.from_env(timeout=self.timeout)  # type: ignore[arg-type]
                self._client.ping()
            except (DockerException, requests.exceptions.RequestException) as exc:
                self._client = None
                raise RuntimeUnavailable(
                    f"Docker engine not reachable at {self.engine_url}: {_short_error(exc)}"
                ) from None
        return self._client

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotFound as exc:
            raise UnknownService(f"{what}: {exc.explanation or 'not found'}") from None
        except APIError as exc:
            raise RuntimeUnavailable(
                f"Docker engine at {self.engine_url} refused {what}: HTTP {exc.status_code} "
                f"{' '.join(str(exc.explanation or '').split())}"
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, DockerException) as exc:
            raise RuntimeUnavailable(f"Docker engine not reachable at {self.engine_url}: {_short_error(exc)}") from None

    def containers(self) -> list[Container]:
        """The project's service containers (one-off `docker compose run` containers excluded)."""
        client = self.client()
        found = self._call(
            f"listing containers of project {self.project}",
            client.containers.list,
            all=True,
            filters={"label": [f"{PROJECT_LABEL}={self.project}"]},
            ignore_removed=True,
        )
        return [
            c
            for c in found
            if str((c.labels or {}).get(ONEOFF_LABEL, "False")).lower() != "true"
            and (c.labels or {}).get(SERVICE_LABEL)
        ]

    def has_containers(self) -> bool:
        return bool(self.containers())

    def _by_service(self) -> dict[str, list[Container]]:
        containers = self.containers()
        if not containers:
            hint = f" -f {' -f '.join(str(f) for f in self.files)}" if self.files else ""
            raise RuntimeUnavailable(
                f"compose project {self.project!r} has no containers; start it with "
                f"`docker compose -p {self.project}{hint} --env-file .env up -d`"
            )
        grouped: dict[str, list[Container]] = {}
        for container in containers:
            grouped.setdefault(container.labels[SERVICE_LABEL], []).append(container)
        for items in grouped.values():
            items.sort(key=lambda c: int(str(c.labels.get(NUMBER_LABEL, "1")) or 1))
        return grouped

    def _service_containers(self, service: str) -> list[Container]:
        grouped = self._by_service()
        if service not in grouped:
            known = ", ".join(sorted(grouped))
            raise UnknownService(
                f"service {service!r} has no container in compose project {self.project!r} (known: {known})"
            )
        return grouped[service]

    # -- Runtime protocol ---------------------------------------------------------

    def service_names(self) -> list[str]:
        return sorted(self._by_service())

    def status(self, service: str) -> ServiceStatus:
        return self._status_of(service, self._service_containers(service))

    def status_all(self) -> list[ServiceStatus]:
        return [self._status_of(name, items) for name, items in sorted(self._by_service().items())]

    def _status_of(self, service: str, containers: list[Container]) -> ServiceStatus:
        statuses = [status_from_inspect(service, c.attrs) for c in containers]
        if len(statuses) == 1:
            return statuses[0]
        # Scaled service: report the worst replica, with the count.
        order = {"failed": 0, "restarting": 1, "stopped": 2, "exited": 3, "starting": 4, "running": 5}
        worst = min(statuses, key=lambda s: (order.get(s.state, 0), s.healthy))
        healthy = sum(1 for s in statuses if s.healthy)
        worst.health_detail = f"{healthy}/{len(statuses)} replicas healthy; {worst.health_detail}"
        worst.restart_count = sum(s.restart_count for s in statuses)
        return worst

    def start(self, service: str) -> None:
        for container in self._service_containers(service):
            self._call(f"start of {service}", container.start)

    def _stop_timeout(self, container: Container) -> int:
        """The service's own stop_grace_period when the compose file sets one."""
        configured = ((container.attrs or {}).get("Config") or {}).get("StopTimeout")
        return int(configured) if configured else self.stop_timeout

    def stop(self, service: str) -> None:
        for container in self._service_containers(service):
            self._call(f"stop of {service}", container.stop, timeout=self._stop_timeout(container))

    def restart(self, service: str) -> None:
        for container in self._service_containers(service):
            self._call(f"restart of {service}", container.restart, timeout=self._stop_timeout(container))

    def logs(
        self,
        service: str,
        *,
        follow: bool = False,
        tail: int | None = 200,
        since: datetime | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        """The service's log as text lines (stdout and stderr interleaved as the engine
        sends them), from its first container. Follows until the container stops, or
        `stop()` is true when the next chunk comes, when `follow` is set."""
        container = self._service_containers(service)[0]
        kwargs: dict[str, Any] = {
            "stream": True,
            "follow": follow,
            "stdout": True,
            "stderr": True,
            "tail": "all" if tail is None else max(int(tail), 0),
        }
        if since is not None:
            if since.tzinfo is None:
                since = since.replace(tzinfo=timezone.utc)
            stamp = since.timestamp()
            kwargs["since"] = int(stamp) if stamp.is_integer() else stamp
        chunks = self._call(f"logs of {service}", container.logs, **kwargs)
        return self._lines(service, chunks, stop or (lambda: False))

    def _lines(self, service: str, chunks: Iterator[bytes], stop: Callable[[], bool]) -> Iterator[str]:
        # A followed log of a quiet container blocks in a socket read: a watcher closes the
        # stream once `stop()` is true, so a reader that went away never holds a thread.
        done = threading.Event()
        stopped = threading.Event()

        def watch() -> None:
            while not done.wait(0.2):
                if stop():
                    stopped.set()
                    getattr(chunks, "close", lambda: None)()
                    return

        threading.Thread(target=watch, daemon=True, name=f"log-stop-{service}").start()
        pending = b""
        try:
            for chunk in chunks:
                if stopped.is_set():
                    return
                pending += chunk
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    yield line.rstrip(b"\r").decode("utf-8", errors="replace")
        except Exception as exc:
            if stopped.is_set():
                return  # the read failed because the watcher closed the stream
            if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
                raise RuntimeUnavailable(
                    f"log stream of {service} from {self.engine_url} broke: {_short_error(exc)}"
                ) from None
            raise
        finally:
            done.set()
        if pending and not stopped.is_set():
            yield pending.rstrip(b"\r").decode("utf-8", errors="replace")

    def connector(self) -> KafkaConnectClient:
        return KafkaConnectClient(self.connect_url or DEFAULT_CONNECT_URL, self.connector_name or DEFAULT_CONNECTOR)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


# --------------------------------------------------------------------------------------
# Runtime selection
# --------------------------------------------------------------------------------------


def detect_runtime(settings: Any, *, compose_factory: Callable[[Any], ComposeRuntime] | None = None) -> str:
    """'compose' or 'embedded'. BI_RUNTIME=compose|embedded forces the choice; with auto,
    compose when the compose project has containers on a reachable engine, else embedded."""
    forced = getattr(settings, "runtime", "auto")
    if forced in ("compose", "embedded"):
        return forced
    factory = compose_factory or (lambda s: ComposeRuntime.from_settings(s, timeout=3.0))
    try:
        runtime = factory(settings)
        return "compose" if runtime.has_containers() else "embedded"
    except RuntimeUnavailable:
        return "embedded"
