"""The embedded stack for the tests: real PostgreSQL, tansu, moto and Debezium on free
ports in a temporary data directory, with generated secrets.

One set of servers (PostgreSQL, the broker, the S3 API) serves the whole session. Each test
module is a tenant of them: databases, roles, topics, bucket, consumer groups, replication
slot and a cdc engine of its own, so one module never sees another's rows, offsets or
checkpoints. A module that stops, restarts or freezes a server says why at its top and is
marked `own_stack`: it gets servers of its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from psycopg2 import errors, sql

from pipeline.config import Settings, load_settings
from tests.support import REPO
from tests.support.net import free_port
from tests.support.settings import make_settings

if TYPE_CHECKING:  # the runtime and its stores load at first use: every tier loads this plugin
    from pipeline.runtime.embedded import EmbeddedRuntime

SHARED_SERVICES = ("postgres", "kafka", "s3")


def write_env(settings: Settings, path: Path) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in settings.to_env().items()))
    return path


def table_rows(stack, relation: str, exclude: tuple[str, ...] = ()) -> list[tuple]:
    """Every row of `relation` as text, columns in table order less `exclude`: two states of a
    layer compare equal only when every value is."""
    schema, name = relation.split(".")
    columns = [
        r[0]
        for r in stack.psql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position",
            (schema, name),
        )
        if r[0] not in exclude
    ]
    assert columns, relation
    select = ", ".join(f'"{c}"::text' for c in columns)
    return stack.psql(f"SELECT {select} FROM {relation} ORDER BY 1, 2, 3")


@dataclass
class StackHandle:
    settings: Settings
    runtime: object
    env_file: Path
    _seeded: dict = field(default_factory=dict)

    def cli(
        self,
        *args: str,
        timeout: float = 600,
        check: bool = False,
        env: dict | None = None,
        env_file: Path | None = None,
    ):
        """Run `bi-console --env-file ... ARGS` as a separate process, as an operator would."""
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", "--env-file", str(env_file or self.env_file), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env={k: v for k, v in {**os.environ, **(env or {})}.items() if not k.startswith("BI_")} | (env or {}),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"bi-console {' '.join(args)} exited {result.returncode}\n{result.stderr[-3000:]}"
                f"{self.service_log_tails()}"
            )
        return result

    def service_log_tails(self, lines: int = 60) -> str:
        """The end of the cdc and broker logs: the fixture removes the stack's directory, and
        with it the only evidence of why events did not arrive."""
        tails = []
        for service in ("cdc", "kafka"):
            try:
                tail = list(self.runtime.logs(service, tail=lines))
            except Exception as exc:
                tail = [f"(could not read: {exc})"]
            tails.append(f"\n--- last {lines} lines of the {service} log ---\n" + "\n".join(tail))
        return "".join(tails)

    def seeded(self) -> dict:
        """`demo seed` once per session, waiting until every event reached Kafka."""
        if not self._seeded:
            result = self.cli("demo", "seed", check=True)
            import json

            self._seeded.update(json.loads(result.stdout.strip().splitlines()[-1]))
        return self._seeded

    @contextlib.contextmanager
    def source_refusing_logins(self):
        """The CDC source as an outage looks to Debezium: its role may not log in and its
        sessions are cut, while the analytics database (the same server here) keeps serving."""
        from pipeline.runtime import pgserver

        server = pgserver.EmbeddedPostgres(self.settings, self.runtime.state_dir("postgres"))
        user = self.settings.source_user

        def admin(query: str) -> None:
            conn = server.admin_connect()
            conn.autocommit = True
            try:
                conn.cursor().execute(query)
            finally:
                conn.close()

        admin(f'ALTER ROLE "{user}" NOLOGIN')
        try:
            admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}'")
            yield
        finally:
            admin(f'ALTER ROLE "{user}" LOGIN')

    def wait_connector(self, predicate, timeout: float, what: str):
        """The connector status once predicate(status) holds; the cdc log tail if it never does."""
        deadline = time.monotonic() + timeout
        status = self.runtime.connector_status()
        while not predicate(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"connector never {what} in {timeout:.0f}s: {status}{self.service_log_tails()}")
            time.sleep(0.5)
            status = self.runtime.connector_status()
        return status

    def psql(self, query: str, params=None) -> list[tuple]:
        from pipeline.stores.db import connect

        conn = connect(self.settings)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()


def _log(line: str) -> None:
    print(line, file=sys.stderr)


def _stack_dir(prefix: str) -> Path:
    # Not under pytest's own temp dir: every new pytest session resets that tree to 0700,
    # which would cut PostgreSQL (running as its own system user) off from its data.
    return Path(tempfile.mkdtemp(prefix=prefix))


@dataclass
class Servers:
    """The session's PostgreSQL, broker and S3 API, and the settings they were started with."""

    settings: Settings
    runtime: EmbeddedRuntime

    def admin_connect(self):
        from pipeline.runtime import pgserver

        conn = pgserver.EmbeddedPostgres(self.settings, self.runtime.state_dir("postgres")).admin_connect()
        conn.autocommit = True
        return conn


@pytest.fixture(scope="session")
def stack_servers() -> Iterator[Servers]:
    from pipeline.runtime.embedded import EmbeddedRuntime

    root = _stack_dir("bi-console-servers-")
    settings = make_settings(root / "data", own_ports=True)
    runtime = EmbeddedRuntime(settings)
    started = time.monotonic()
    try:
        runtime.up(log=_log, services=list(SHARED_SERVICES))
    except Exception:
        runtime.down(log=lambda line: None)
        raise
    print(f"shared servers up in {time.monotonic() - started:.1f}s", file=sys.stderr)
    yield Servers(settings=settings, runtime=runtime)
    runtime.down(log=lambda line: None)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(request) -> Iterator[StackHandle]:
    """The stack of one test module, so that one module's changes never shift another's figures."""
    if request.node.get_closest_marker("own_stack"):
        yield from _own_stack()
        return
    token = re.sub(r"[^a-z0-9]+", "_", request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").lower())
    yield from _tenant_stack(request.getfixturevalue("stack_servers"), token)


def _own_stack() -> Iterator[StackHandle]:
    """Servers of the module's own, for a module that stops, restarts or freezes one."""
    from pipeline.runtime.embedded import EmbeddedRuntime

    root = _stack_dir("bi-console-stack-")
    settings = make_settings(root / "data", own_ports=True)
    runtime = EmbeddedRuntime(settings)
    started = time.monotonic()
    try:
        runtime.up(log=_log)
    except Exception:
        runtime.down(log=lambda line: None)
        raise
    print(f"own stack up in {time.monotonic() - started:.1f}s", file=sys.stderr)
    yield StackHandle(settings=settings, runtime=runtime, env_file=write_env(settings, root / ".env"))
    runtime.down(log=lambda line: None)
    shutil.rmtree(root, ignore_errors=True)


def tenant_settings(servers: Settings, data_dir: Path, token: str) -> Settings:
    """A module's settings on the session's servers: every name that another module could
    meet (databases, roles, topics, bucket, consumer groups, slot) carries the module's token;
    its own secrets, and the servers' addresses. Its config file is the one the tests run on,
    with the topics renamed."""
    prefix = f"cord_{token}"
    settings = make_settings(
        data_dir,
        pg_port=servers.pg_port,
        source_port=servers.source_port,
        kafka_bootstrap=servers.kafka_bootstrap,
        s3_endpoint=servers.s3_endpoint,
        superset_url=f"http://127.0.0.1:{free_port()}",
        pg_database=f"analytics_{token}",
        pg_user=f"analytics_{token}",
        pg_reader_user=f"bi_reader_{token}",
        source_database=f"concord_{token}",
        source_user=f"concord_{token}",
        cdc_topic_prefix=prefix,
        cdc_slot_name=f"bi_console_cdc_{token}",
        kafka_consumer_group=f"bi-console-ingest-{token}",
        s3_bucket=f"cord-raw-{token.replace('_', '-')}",
    )
    shipped = Path(str(settings.config_file))
    text = shipped.read_text()
    tables = text.count("\n[[tables]]")
    text, renamed = re.subn(r'^topic = "cord\.', f'topic = "{prefix}.', text, flags=re.M)
    assert renamed == tables > 0, f"{shipped}: {renamed} topics renamed for {tables} tables"
    config_file = data_dir.parent / f"bi-console.{token}.toml"
    config_file.write_text(text)
    return load_settings(env_file=None, **{**settings.model_dump(), "config_file": str(config_file)})


def _tenant_stack(servers: Servers, token: str) -> Iterator[StackHandle]:
    from pipeline.runtime import pgserver
    from pipeline.runtime.embedded import EmbeddedRuntime
    from pipeline.stores.storage import RawStore

    root = _stack_dir(f"bi-console-stack-{token}-")
    settings = tenant_settings(servers.settings, root / "data", token)
    runtime = EmbeddedRuntime(settings)
    # The module's runtime, and `bi-console` run on its .env, see the session's servers as
    # running: their pid records, logs and PostgreSQL state are linked into its data dir.
    for service in SHARED_SERVICES:
        ours, theirs = runtime.process(service), servers.runtime.process(service)
        ours.pid_file.symlink_to(theirs.pid_file)
        ours.log_file.symlink_to(theirs.log_file)
    (runtime.root / "postgres").symlink_to(servers.runtime.state_dir("postgres"))
    started = time.monotonic()
    try:
        pgserver.EmbeddedPostgres(settings, runtime.state_dir("postgres")).bootstrap(_log)
        RawStore(settings).ensure_bucket()
        runtime.start("cdc", log=_log)
    except Exception:
        _drop_tenant(servers, settings, runtime)
        raise
    print(f"stack {token} up on the shared servers in {time.monotonic() - started:.1f}s", file=sys.stderr)
    yield StackHandle(settings=settings, runtime=runtime, env_file=write_env(settings, root / ".env"))
    _drop_tenant(servers, settings, runtime)
    shutil.rmtree(root, ignore_errors=True)


def _drop_tenant(servers: Servers, settings: Settings, runtime: EmbeddedRuntime) -> None:
    """Everything the module created on the shared servers, so the session stays as it began:
    its processes, slots, databases, roles, topics, consumer groups and bucket."""
    for service in ("superset", "cdc"):
        runtime.stop(service)
    roles = [settings.pg_user, settings.source_user, settings.pg_reader_user]
    conn = servers.admin_connect()
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = ANY(%s)", (roles,)
        )
        databases = [row[0] for row in cur.fetchall()]
        # A database with a replication slot cannot be dropped, even by force.
        cur.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE database = ANY(%s) AND active_pid IS NOT NULL",
            (databases,),
        )
        deadline = time.monotonic() + 10
        while True:
            cur.execute("SELECT slot_name FROM pg_replication_slots WHERE database = ANY(%s)", (databases,))
            slots = [row[0] for row in cur.fetchall()]
            try:
                for slot in slots:
                    cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                break
            except errors.ObjectInUse:  # still active: its walsender has not ended yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for database in databases:
            cur.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(database)))
        for role in roles:
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    finally:
        conn.close()
    _drop_topics(settings)
    _drop_bucket(settings)


def _drop_bucket(settings: Settings) -> None:
    from botocore.exceptions import ClientError

    from pipeline.stores.storage import RawStore

    store = RawStore(settings)
    try:
        store.client.head_bucket(Bucket=settings.s3_bucket)
    except ClientError:
        return  # the module failed before it made its bucket
    store.delete_prefix("")
    store.client.delete_bucket(Bucket=settings.s3_bucket)


def _drop_topics(settings: Settings) -> None:
    from confluent_kafka import KafkaError, KafkaException

    from pipeline.stores.kafka import admin

    client = admin(settings)
    topics = [t for t in client.list_topics(timeout=10).topics if t.startswith(f"{settings.cdc_topic_prefix}.")]
    for future in (client.delete_topics(topics) if topics else {}).values():
        future.result(timeout=10)
    groups = [f"{settings.kafka_consumer_group}-{table.name}" for table in settings.tables]
    for future in client.delete_consumer_groups(groups).values():
        try:
            future.result(timeout=10)
        except KafkaException as exc:  # a table the module never ingested has no group
            if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
                raise
