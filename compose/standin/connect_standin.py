"""Stand-in for Kafka Connect with Debezium: the embedded stack's Debezium engine
(pipeline/runtime/cdc_engine.py, PostgreSQL connector on the demo source) supervised
here, behind the part of Kafka Connect's REST API that bi-console uses:

  GET  /connector-plugins, /connectors, /connectors/{name}/status
  POST /connectors/{name}/restart[?onlyFailed=true]
  PUT  /connectors/{name}/pause | /resume

This is not Kafka Connect. Its documents have Kafka Connect's shape so that
pipeline/runtime/connect_client.py drives it unchanged; that client is proven against real
Kafka Connect only by recorded responses (tests/support/recordings/connect/).

The broker stand-in advertises 127.0.0.1:PORT (the port published on the host), so a
forwarder on this container's 127.0.0.1:PORT carries the engine's Kafka traffic to it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from pipeline.config import load_settings
from pipeline.demo import ensure_source_tables
from pipeline.runtime.cdc_engine import mark_starting, read_status, write_control
from pipeline.runtime.embedded import java_home
from pipeline.runtime.supervisor import wait_until

STATE = Path(os.environ.get("BI_STANDIN_CDC_STATE", "/var/lib/bi-console/cdc"))
KAFKA_UPSTREAM = os.environ.get("BI_STANDIN_KAFKA_UPSTREAM", "kafka:9092")
REST_PORT = 8083


def forward(listen_port: int, upstream: str) -> None:
    host, _, port = upstream.rpartition(":")
    server = socket.create_server(("127.0.0.1", listen_port), reuse_port=True)

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve() -> None:
        while True:
            client, _ = server.accept()
            try:
                remote = socket.create_connection((host, int(port)), timeout=10)
                remote.settimeout(None)
            except OSError:
                client.close()
                continue
            threading.Thread(target=pipe, args=(client, remote), daemon=True).start()
            threading.Thread(target=pipe, args=(remote, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True, name="kafka-forwarder").start()


class Engine:
    """The engine process; Kafka Connect's restart is a new process here."""

    def __init__(self, settings):
        self.settings = settings
        self.lock = threading.Lock()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.lock:
            STATE.mkdir(parents=True, exist_ok=True)
            mark_starting(STATE)
            env = {**os.environ, **self.settings.to_env()}
            java = java_home()
            if java:
                env["JAVA_HOME"] = java
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.runtime.cdc_engine", str(STATE)], env=env, cwd=STATE
            )

    def stop(self) -> None:
        with self.lock:
            if self.process and self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(30)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self):
        return read_status(STATE, self.settings.connector_name, process_alive=self.alive())


def status_document(status) -> dict:
    connector = {"state": status.state, "worker_id": "connect-standin:8083"}
    if status.trace:
        connector["trace"] = status.trace
    tasks = [
        {"id": t.id, "state": t.state, "worker_id": "connect-standin:8083", **({"trace": t.trace} if t.trace else {})}
        for t in status.tasks
    ]
    return {"name": status.name, "connector": connector, "tasks": tasks, "type": "source"}


def handler_for(engine: Engine):
    name = engine.settings.connector_name

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body=None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(code)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if method == "GET" and parts == ["connector-plugins"]:
                return self._send(
                    200,
                    [
                        {
                            "class": "io.debezium.connector.postgresql.PostgresConnector",
                            "type": "source",
                            "version": "embedded-engine",
                        }
                    ],
                )
            if method == "GET" and parts == ["connectors"]:
                return self._send(200, [name])
            if len(parts) >= 2 and parts[0] == "connectors":
                if parts[1] != name:
                    return self._send(404, {"error_code": 404, "message": f"Connector {parts[1]} not found"})
                action = parts[2] if len(parts) > 2 else ""
                if method == "GET" and action == "status":
                    return self._send(200, status_document(engine.status()))
                if method == "POST" and action == "restart":
                    if query.get("onlyFailed") == "true" and engine.status().effective_state != "FAILED":
                        return self._send(204)
                    engine.stop()
                    engine.start()
                    return self._send(204)
                if method == "PUT" and action in ("pause", "resume"):
                    write_control(STATE, paused=action == "pause")
                    return self._send(202)
            return self._send(404, {"error_code": 404, "message": f"{method} {url.path} is not served by the stand-in"})

        def do_GET(self):  # noqa: N802 - http.server's names
            self._route("GET")

        def do_POST(self):  # noqa: N802
            self._route("POST")

        def do_PUT(self):  # noqa: N802
            self._route("PUT")

        def log_message(self, fmt, *args):
            if not self.path.startswith("/connector-plugins"):  # the healthcheck's requests are noise
                print(f"connect stand-in: {self.command} {self.path} -> {args[1] if len(args) > 1 else ''}", flush=True)

    return Handler


def main() -> int:
    # As PID 1 this process ignores SIGTERM until it has a handler: install it first, so that
    # a stop during start-up is a clean exit, not a kill at the end of the grace period.
    running: dict = {}

    def shutdown(*_):
        if "engine" in running:
            running["engine"].stop()
        if "http" in running:
            threading.Thread(target=running["http"].shutdown, daemon=True).start()
        else:
            sys.exit(0)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    settings = load_settings(env_file=None)
    kafka_port = int(settings.kafka_bootstrap.rpartition(":")[2])
    forward(kafka_port, KAFKA_UPSTREAM)
    last_error: list[BaseException] = []

    def source_ready() -> bool:
        try:
            ensure_source_tables(settings)
            return True
        except Exception as exc:  # retried until the timeout; the last reason is printed
            last_error[:] = [exc]
            raise

    if not wait_until(source_ready, timeout=60, interval=1):
        reason = f": {type(last_error[0]).__name__}: {last_error[0]}" if last_error else ""
        print(
            f"connect stand-in: the demo source at {settings.source_host}:{settings.source_port} is not ready{reason}",
            flush=True,
        )
        return 1
    engine = running["engine"] = Engine(settings)
    engine.start()
    http = running["http"] = ThreadingHTTPServer(("0.0.0.0", REST_PORT), handler_for(engine))
    print(f"connect stand-in: REST on :{REST_PORT}, engine pid {engine.process.pid}", flush=True)
    http.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
