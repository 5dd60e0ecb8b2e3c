"""The `cdc` service: Debezium's embedded engine running the PostgreSQL connector on the
demo source, producing each change to Kafka as Kafka Connect would.

Run as `python -m pipeline.runtime.cdc_engine STATE_DIR [LOG_FILE]`. It writes `status.json`
(state, events captured, last event time, error trace, retry attempt, heartbeat) and obeys
`control.json` (`{"paused": true}`).

While its source is unreachable Debezium keeps the task "started" and retries on its own;
the only record of that is its log (`Failed with retriable exception, will retry later;
attempt #6 out of infinity`). The engine reads its own log (LOG_FILE, where its output
goes) so that the state it publishes is RETRYING then, with the attempt and the error. Source offsets live in `offsets.dat` and are
committed only after every event of a batch is acknowledged by the broker.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2
from confluent_kafka import KafkaError, Message, Producer

from pipeline.config import Settings, load_settings
from pipeline.runtime.model import ConnectorStatus, TaskStatus
from pipeline.stores.kafka import ensure_topic, topic_offsets

HEARTBEAT_STALE_SECONDS = 10
RETRY_LINE = re.compile(r"Failed with retriable exception, will retry later; attempt #(\d+) out of (\S+)")
# Debezium's coordinator logs this once the task (re)started and reads changes again.
STREAMING_LINE = re.compile(r"ChangeEventSourceCoordinator.* - Starting streaming")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def write_control(state_dir: Path, *, paused: bool) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    _write_json(state_dir / "control.json", {"paused": paused, "at": _now()})


def mark_starting(state_dir: Path) -> None:
    """Forget the previous run's state (not its counters) before a new engine starts."""
    path = state_dir / "status.json"
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    data.update(state="STARTING", trace=None, retry=None, heartbeat=_now())
    _write_json(path, data)


class RetryWatch:
    """Debezium's retries, read from its log lines: the attempt count and the error retried."""

    def __init__(self) -> None:
        self.attempt: int | None = None
        self.limit: str | None = None
        self.since: str | None = None
        self.trace: str | None = None
        self._collecting: list[str] | None = None

    def feed(self, line: str) -> None:
        if self._collecting is not None:
            # The exception logged with the retry line: its head, its frames and its causes.
            if line.startswith(("\t", " ", "Caused by:")) or (not self._collecting and line.strip()):
                self._collecting.append(line)
                self.trace = "\n".join(self._collecting)
                return
            self._collecting = None
        retry = RETRY_LINE.search(line)
        if retry:
            if self.attempt is None:
                self.since = _now()
            self.attempt, self.limit = int(retry.group(1)), retry.group(2)
            self.trace = None
            self._collecting = []
        elif STREAMING_LINE.search(line):
            self.recovered()

    def recovered(self) -> None:
        self.attempt = self.limit = self.since = self.trace = None
        self._collecting = None

    @property
    def retrying(self) -> bool:
        return self.attempt is not None


def read_status(state_dir: Path, name: str, *, process_alive: bool, exited: bool = False) -> ConnectorStatus:
    """The connector's state as Kafka Connect would report it; a dead engine is never RUNNING,
    and an engine whose task retries is RETRYING, not RUNNING.

    `exited`: the engine's process ended without being stopped (its pid record is left)."""
    try:
        data = json.loads((state_dir / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    state = data.get("state", "STOPPED")
    trace = data.get("trace")
    retry = data.get("retry") or {}
    if not process_alive:
        if state != "FAILED":
            state = "STOPPED"
            trace = (
                "the cdc engine exited without being stopped (killed or crashed); start the cdc service"
                if exited
                else "the cdc engine is stopped; start the cdc service"
            )
        retry = {}
    elif state in ("RUNNING", "PAUSED", "RETRYING"):
        heartbeat = data.get("heartbeat")
        if heartbeat:
            age = (datetime.now(timezone.utc) - datetime.fromisoformat(heartbeat)).total_seconds()
            if age > HEARTBEAT_STALE_SECONDS:
                state, trace, retry = "FAILED", f"engine heartbeat is {age:.0f}s old: the engine is hung", {}
    if state != "RETRYING":
        retry = {}
    last = data.get("last_event_at")
    task_state = state if state in ("RUNNING", "RETRYING", "PAUSED", "FAILED", "STOPPED") else "UNASSIGNED"
    return ConnectorStatus(
        name=name,
        state=state,
        tasks=[
            TaskStatus(
                id=0,
                state=task_state,
                worker_id="embedded",
                trace=trace if task_state in ("FAILED", "RETRYING") else None,
            )
        ],
        trace=trace,
        events_captured=data.get("events_captured"),
        last_event_at=datetime.fromisoformat(last) if last else None,
        retry_attempt=retry.get("attempt"),
        retry_limit=retry.get("limit"),
        retrying_since=datetime.fromisoformat(retry["since"]) if retry.get("since") else None,
    )


def debezium_properties(settings: Settings, state_dir: Path) -> dict[str, str]:
    tables = ",".join(f"{t.source_schema}.{t.source_table}" for t in settings.tables)
    schemas = "true" if settings.cdc_schemas_enable else "false"
    return {
        "name": settings.connector_name,
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": str(state_dir / "offsets.dat"),
        "offset.flush.interval.ms": "0",
        "database.hostname": settings.source_host,
        "database.port": str(settings.source_port),
        "database.user": settings.source_user,
        "database.password": settings.source_password,
        "database.dbname": settings.source_database,
        "topic.prefix": settings.cdc_topic_prefix,
        "plugin.name": "pgoutput",
        "slot.name": settings.cdc_slot_name,
        "publication.name": "bi_console_cdc",
        "publication.autocreate.mode": "filtered",
        "table.include.list": tables,
        "snapshot.mode": "when_needed",
        "tombstones.on.delete": "true",
        "decimal.handling.mode": "string",
        "time.precision.mode": "adaptive",
        "binary.handling.mode": "base64",
        "max.batch.size": "2048",
        "poll.interval.ms": "100",
        "converter.schemas.enable": schemas,
        "key.converter.schemas.enable": "false",
        "value.converter.schemas.enable": schemas,
    }


def topic_for(settings: Settings, destination: str) -> str:
    """Map the PostgreSQL connector's `prefix.schema.table` to the contract's
    `prefix.Database.schema.table` (the SQL Server connector's naming)."""
    for table in settings.tables:
        if destination == f"{settings.cdc_topic_prefix}.{table.source_schema}.{table.source_table}":
            return table.topic
    return destination


class Engine:
    def __init__(self, settings: Settings, state_dir: Path, log_file: Path | None = None):
        self.settings = settings
        self.state_dir = state_dir
        self.log_file = log_file
        self.retry = RetryWatch()
        self.status_path = state_dir / "status.json"
        self.control_path = state_dir / "control.json"
        previous = self._previous_status()
        self.events_total = int(previous.get("events_captured") or 0)
        self.last_event_at = previous.get("last_event_at")
        self.state = "STARTING"
        self.trace: str | None = None
        self.stopping = threading.Event()
        self.producer: Producer | None = None
        self.engine: Any = None  # pydbzengine's, untyped
        self.delivery_errors: list[str] = []
        self.completion_message: str | None = None

    def _previous_status(self) -> dict[str, Any]:
        try:
            previous: dict[str, Any] = json.loads(self.status_path.read_text())
            return previous
        except (FileNotFoundError, ValueError):
            return {}

    def paused(self) -> bool:
        try:
            return bool(json.loads(self.control_path.read_text()).get("paused"))
        except (FileNotFoundError, ValueError):
            return False

    def publish_status(self) -> None:
        state, trace, retry = self.state, self.trace, None
        if state in ("STARTING", "RUNNING") and self.retry.retrying:
            # A retrying task captures nothing, paused or not: RETRYING is what an operator must see.
            state, trace = "RETRYING", self.retry.trace
            retry = {"attempt": self.retry.attempt, "limit": self.retry.limit, "since": self.retry.since}
        elif state == "RUNNING" and self.paused():
            state = "PAUSED"
        _write_json(
            self.status_path,
            {
                "state": state,
                "trace": trace,
                "retry": retry,
                "events_captured": self.events_total,
                "last_event_at": self.last_event_at,
                "heartbeat": _now(),
                "pid": os.getpid(),
            },
        )

    def heartbeat_loop(self) -> None:
        while not self.stopping.is_set():
            self.publish_status()
            self.stopping.wait(0.5)

    def watch_log(self) -> None:
        """Follow our own log from its current end (earlier runs' retries are not ours)."""
        if self.log_file is None:
            return
        with open(self.log_file, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            pending = b""
            while not self.stopping.is_set():
                chunk = fh.read()
                if not chunk:
                    self.stopping.wait(0.25)
                    continue
                *complete, pending = (pending + chunk).split(b"\n")
                for line in complete:
                    self.retry.feed(line.decode("utf-8", "replace"))

    def recover_from_broker_loss(self) -> None:
        """The memory broker forgets its topics when it restarts. Stored source offsets
        would then point past data that no longer exists, so start over with a snapshot."""
        offsets_file = self.state_dir / "offsets.dat"
        lost = []
        for table in self.settings.tables:
            offsets = topic_offsets(self.settings, table.topic)
            if not offsets or all(p.high == 0 for p in offsets):
                lost.append(table.topic)
            ensure_topic(self.settings, table.topic)
        if offsets_file.exists() and lost and len(lost) == len(self.settings.tables):
            print(
                f"cdc: topics {', '.join(lost)} are empty but source offsets exist: the broker lost its data. "
                "Discarding stored offsets and the replication slot; a new snapshot will recover the full state.",
                flush=True,
            )
            offsets_file.unlink()
            self._drop_slot()

    def _drop_slot(self) -> None:
        with psycopg2.connect(**self.settings.source_dsn()) as conn:
            cur = conn.cursor()
            cur.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s AND NOT active",
                (self.settings.cdc_slot_name,),
            )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.delivery_errors.append(f"{msg.topic()}: {err}")

    def handle_batch(self, records: Any) -> None:
        while self.paused() and not self.stopping.is_set():
            time.sleep(0.2)
        if self.producer is None:
            raise RuntimeError("a batch arrived before the Kafka producer was created")
        produced = 0
        for record in records:
            destination = str(record.destination())
            if destination.startswith("__debezium-heartbeat"):
                continue
            key = record.key()
            value = record.value()
            self.producer.produce(
                topic_for(self.settings, destination),
                key=None if key is None else str(key).encode("utf-8"),
                value=None if value is None else str(value).encode("utf-8"),
                on_delivery=self._on_delivery,
            )
            produced += 1
            self.producer.poll(0)
        remaining = self.producer.flush(60)
        if remaining or self.delivery_errors:
            errors = "; ".join(self.delivery_errors[:3]) or f"{remaining} messages not acknowledged"
            self.delivery_errors.clear()
            raise RuntimeError(f"Kafka did not acknowledge the batch: {errors}")
        # Offsets are committed by the engine after this returns: only acknowledged events count.
        self.events_total += produced
        if produced:
            self.last_event_at = _now()

    def run(self) -> int:
        threading.Thread(target=self.heartbeat_loop, daemon=True).start()
        if self.log_file is not None:
            threading.Thread(target=self.watch_log, daemon=True).start()
        try:
            self.recover_from_broker_loss()
            self.producer = Producer(
                {
                    "bootstrap.servers": self.settings.kafka_bootstrap,
                    "acks": "all",
                    "linger.ms": 20,
                    "batch.num.messages": 10000,
                    "message.timeout.ms": 60000,
                }
            )
            props = debezium_properties(self.settings, self.state_dir)
            self.engine = build_engine(self, props)
            signal.signal(signal.SIGTERM, self._on_term)
            print(f"cdc: engine starting, tables {props['table.include.list']}", flush=True)
            self.engine.run()
            if self.stopping.is_set():
                self.state = "STOPPED"
                return 0
            raise RuntimeError(f"the Debezium engine stopped: {self.completion_message or 'see the log above'}")
        except BaseException:  # report every failure as FAILED with its trace
            if self.stopping.is_set():
                self.state = "STOPPED"
                return 0
            self.trace = traceback.format_exc()
            self.state = "FAILED"
            print(f"cdc: FAILED\n{self.trace}", flush=True)
            # Stay up in FAILED, as a Kafka Connect worker does, until restarted or stopped.
            self.stopping.wait()
            return 1
        finally:
            self.stopping.set()
            self.publish_status()

    def _on_term(self, *_: object) -> None:
        self.stopping.set()
        threading.Thread(target=self._close, daemon=True).start()

    def _close(self) -> None:
        try:
            self.engine.close()
        except Exception:
            pass
        time.sleep(10)
        os._exit(0)


def build_engine(owner: Engine, props: dict[str, str]) -> Any:
    """The engine with callbacks: RUNNING only once the connector task has started, and the
    connector's own error (not a generic one) as the trace when it stops."""
    # Heavy (ARCHITECTURE.md): only the engine's own process loads the JVM bridge.
    import jpype
    from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine

    class Handler(BasePythonChangeHandler):
        def handleJsonBatch(self, records: Any) -> None:
            owner.handle_batch(records)

    class CallbackEngine(DebeziumJsonEngine):
        def _build_engine(self) -> Any:
            self._ensure_jvm_started()
            from pydbzengine.engine._jvm import JDebeziumEngine, JProperties  # needs the JVM started above

            @jpype.JImplements("io.debezium.engine.DebeziumEngine$ConnectorCallback")
            class ConnectorCallback:
                @jpype.JOverride
                def connectorStarted(self) -> None:
                    print("cdc: connector started", flush=True)

                @jpype.JOverride
                def connectorStopped(self) -> None:
                    print("cdc: connector stopped", flush=True)

                @jpype.JOverride
                def taskStarted(self) -> None:
                    owner.state = "RUNNING"
                    owner.publish_status()
                    print("cdc: task started, RUNNING", flush=True)

                @jpype.JOverride
                def taskStopped(self) -> None:
                    print("cdc: task stopped", flush=True)

            @jpype.JImplements("io.debezium.engine.DebeziumEngine$CompletionCallback")
            class CompletionCallback:
                @jpype.JOverride
                def handle(self, success: Any, message: Any, error: Any) -> None:
                    if not success:
                        detail = str(message)
                        if error is not None:
                            writer = jpype.JClass("java.io.StringWriter")()
                            error.printStackTrace(jpype.JClass("java.io.PrintWriter")(writer))
                            detail += "\n" + str(writer.toString())
                        owner.completion_message = detail

            java_props = JProperties()
            for key, value in self.properties.items():
                java_props.setProperty(str(key), str(value))
            self._callbacks = (ConnectorCallback(), CompletionCallback())
            return (
                JDebeziumEngine.create(self._resolve_format())
                .using(java_props)
                .using(self._callbacks[0])
                .using(self._callbacks[1])
                .notifying(self.consumer)
                .build()
            )

    return CallbackEngine(properties=props, handler=Handler(), jvm_opts=["-Xmx768m", "-Xms128m"])


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    state_dir = Path(argv[0])
    log_file = Path(argv[1]) if len(argv) > 1 else None
    settings = load_settings(env_file=None)
    return Engine(settings, state_dir, log_file).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
