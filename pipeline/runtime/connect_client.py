"""A Kafka Connect REST client (httpx) for the CDC connector: the `ConnectorControl` of
compose mode.

Every error names the method, the URL and the HTTP status, with Connect's own message:
    Kafka Connect GET http://127.0.0.1:8083/connectors/x/status -> HTTP 404: Connector x not found

Run as a module it registers (creates or updates) a connector from a JSON file, which is
what compose's one-shot `connect-register` job does:
    python -m pipeline.runtime.connect_client register compose/connectors/sqlserver-product-v2.json --url http://kafka-connect:8083
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from pipeline.runtime.model import ConnectorStatus, TaskStatus

DEFAULT_CONNECT_URL = "http://127.0.0.1:8083"
DEFAULT_CONNECTOR = "sqlserver-product-v2"


class KafkaConnectError(Exception):
    """Kafka Connect answered with an error. One line: method, URL, HTTP status, message."""

    def __init__(self, message: str, *, url: str = "", status_code: int | None = None):
        super().__init__(message)
        self.url = url
        self.status_code = status_code


class KafkaConnectUnavailable(KafkaConnectError):
    """Kafka Connect could not be reached at all."""


class KafkaConnectClient:
    """Kafka Connect's REST API for one connector (and the worker's connector list)."""

    def __init__(
        self,
        base_url: str = DEFAULT_CONNECT_URL,
        connector: str = DEFAULT_CONNECTOR,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.connector = connector
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            auth=auth,
            headers={"Accept": "application/json"},
        )

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> KafkaConnectClient:
        return cls(settings.kafka_connect_url, settings.connector_name, **kwargs)

    # -- plumbing ---------------------------------------------------------------------

    def _path(self, name: str | None, suffix: str = "") -> str:
        return f"/connectors/{quote(name or self.connector, safe='')}{suffix}"

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json_body: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            response = self._http.request(method, path, params=params, json=json_body)
        except httpx.TimeoutException:
            raise KafkaConnectUnavailable(f"Kafka Connect {method} {url}: timed out", url=url) from None
        except httpx.TransportError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise KafkaConnectUnavailable(f"Kafka Connect {method} {url}: unreachable ({reason})", url=url) from None
        if response.status_code not in ok:
            raise KafkaConnectError(
                f"Kafka Connect {method} {response.request.url} -> HTTP {response.status_code}: "
                f"{_error_message(response)}",
                url=str(response.request.url),
                status_code=response.status_code,
            )
        return response

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise KafkaConnectError(
                f"Kafka Connect {response.request.method} {response.request.url} -> HTTP "
                f"{response.status_code}: the body is not JSON",
                url=str(response.request.url),
                status_code=response.status_code,
            ) from None

    # -- reading ----------------------------------------------------------------------

    def list_connectors(self) -> list[str]:
        """GET /connectors"""
        return sorted(self._json(self._request("GET", "/connectors")))

    def status(self, name: str | None = None) -> ConnectorStatus:
        """GET /connectors/{name}/status"""
        return parse_status(self._json(self._request("GET", self._path(name, "/status"))))

    def config(self, name: str | None = None) -> dict[str, str]:
        """GET /connectors/{name}/config"""
        config: dict[str, str] = self._json(self._request("GET", self._path(name, "/config")))
        return config

    def offsets(self, name: str | None = None) -> list[dict[str, Any]]:
        """GET /connectors/{name}/offsets: [{"partition": {...}, "offset": {...}}, ...]"""
        offsets: list[dict[str, Any]] = self._json(self._request("GET", self._path(name, "/offsets"))).get(
            "offsets", []
        )
        return offsets

    def exists(self, name: str | None = None) -> bool:
        try:
            self._request("GET", self._path(name))
        except KafkaConnectError as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    # -- control ----------------------------------------------------------------------

    def restart(
        self,
        *,
        include_tasks: bool = True,
        only_failed: bool = False,
        name: str | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """POST /connectors/{name}/restart?includeTasks=..&onlyFailed=.. (`log` is ConnectorControl's: the
        REST call has nothing to report while it runs)."""
        self._request(
            "POST",
            self._path(name, "/restart"),
            params={"includeTasks": _flag(include_tasks), "onlyFailed": _flag(only_failed)},
            ok=(200, 202, 204),
        )

    def restart_task(self, task_id: int, name: str | None = None) -> None:
        """POST /connectors/{name}/tasks/{id}/restart"""
        self._request("POST", self._path(name, f"/tasks/{int(task_id)}/restart"), ok=(200, 202, 204))

    def pause(self, name: str | None = None) -> None:
        """PUT /connectors/{name}/pause"""
        self._request("PUT", self._path(name, "/pause"), ok=(202, 204))

    def resume(self, name: str | None = None) -> None:
        """PUT /connectors/{name}/resume"""
        self._request("PUT", self._path(name, "/resume"), ok=(202, 204))

    def stop(self, name: str | None = None) -> None:
        """PUT /connectors/{name}/stop (Kafka 3.5+): tasks shut down, config and offsets kept."""
        self._request("PUT", self._path(name, "/stop"), ok=(202, 204))

    def put_config(self, config: dict[str, str], name: str | None = None) -> dict[str, Any]:
        """PUT /connectors/{name}/config: create the connector or update its config."""
        created: dict[str, Any] = self._json(
            self._request("PUT", self._path(name, "/config"), json_body=config, ok=(200, 201))
        )
        return created

    def register(self, path: str | Path) -> dict[str, Any]:
        """Create or update a connector from a file in POST /connectors form: {"name", "config"}."""
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise KafkaConnectError(f"connector file {path}: {exc}") from None
        if not isinstance(document, dict) or "name" not in document or "config" not in document:
            raise KafkaConnectError(f'connector file {path}: expected {{"name": ..., "config": {{...}}}}')
        return self.put_config(document["config"], name=document["name"])

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KafkaConnectClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# `list` as the brief names it; defined after the class body so the builtin stays usable inside it.
KafkaConnectClient.list = KafkaConnectClient.list_connectors  # type: ignore[attr-defined]


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        message = str(body["message"])
    else:
        message = response.reason_phrase or "error"
    return " ".join(message.split())[:300]


def parse_status(body: dict[str, Any]) -> ConnectorStatus:
    """A GET /connectors/{name}/status document as a ConnectorStatus (task traces kept)."""
    connector = body.get("connector") or {}
    tasks = [
        TaskStatus(
            id=int(t.get("id", 0)),
            state=str(t.get("state", "UNASSIGNED")),
            worker_id=str(t.get("worker_id", "")),
            trace=t.get("trace"),
        )
        for t in body.get("tasks") or []
    ]
    tasks.sort(key=lambda t: t.id)
    return ConnectorStatus(
        name=str(body.get("name", "")),
        state=str(connector.get("state", "UNKNOWN")),
        tasks=tasks,
        trace=connector.get("trace"),
        kind=str(body.get("type") or "source"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.runtime.connect_client",
        description="Register a Kafka Connect connector from a JSON file.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    register = sub.add_parser("register", help="create or update the connector in FILE ({name, config})")
    register.add_argument("file")
    register.add_argument("--url", default="http://127.0.0.1:8083")
    register.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the worker")
    args = parser.parse_args(argv)

    with KafkaConnectClient(args.url) as client:
        deadline = time.monotonic() + args.wait
        while True:
            try:
                client.list_connectors()
                break
            except KafkaConnectUnavailable as exc:
                if time.monotonic() > deadline:
                    print(exc, file=sys.stderr)
                    return 1
                time.sleep(2)
        try:
            result = client.register(args.file)
        except KafkaConnectError as exc:
            print(exc, file=sys.stderr)
            return 1
    print(f"connector {result.get('name')} registered at {args.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
