"""Fixtures for the Superset tests: a real PostgreSQL 15 and a real Superset 6.1.

- PostgreSQL: a cluster of the tests' one harness (support/postgres.py), scram-sha-256
  passwords. Its `analytics` database gets the pipeline's own grants (the read-only
  `bi_reader` role) and bronze tables, CDC events of eight products (the shared row
  generator, via tests/fixtures/events/make_events.py), and the staging views and marts
  tables that dbt builds from them.
- Superset: installed once into `$BI_TEST_SUPERSET_HOME/venv` (default
  /tmp/bi-console-superset-cache) and reused by later runs; each session gets its own
  data dir (the venv is symlinked in) and metadata database: a copy of the one the
  first session initialised (`BI_TEST_SUPERSET_FRESH_METADATA=1` runs db upgrade and
  init again), served by the command `pipeline.superset.install.run_command` returns.

Test modules load the fixtures with `pytest_plugins = ["tests.support.superset"]`, so
that the session-scoped servers start once for all of them.
Timings (install, init, start until /health OK) are appended to
`$BI_TEST_SUPERSET_HOME/timings.jsonl`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pytest

from pipeline.config import Settings
from pipeline.runtime.pgserver import grant_reader
from pipeline.stores.bronze import ensure_bronze
from tests.support.dbt import event_factory, load_events, read_events
from tests.support.net import free_port
from tests.support.postgres import start_cluster
from tests.support.settings import make_settings as make_test_settings

SUPERSET_CACHE = Path(os.environ.get("BI_TEST_SUPERSET_HOME", "/tmp/bi-console-superset-cache"))


# --------------------------------------------------------------------------- PostgreSQL


@dataclass
class PgServer:
    port: int
    superuser_password: str
    owner: str
    owner_password: str
    reader: str
    reader_password: str
    database: str = "analytics"
    host: str = "127.0.0.1"
    # The pipeline's settings for this server (dbt writes its profile under data_dir).
    settings: Settings | None = None

    def connect(self, user: str | None = None, password: str | None = None, database: str | None = None):
        user = user or self.owner
        if password is None:
            password = {
                self.owner: self.owner_password,
                self.reader: self.reader_password,
                "postgres": self.superuser_password,
            }[user]
        conn = psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=database or self.database,
            user=user,
            password=password,
            connect_timeout=5,
        )
        conn.autocommit = True
        return conn

    def execute(self, sql: str, params=None, *, user: str | None = None) -> list[tuple]:
        with self.connect(user) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []


def insert_products(pg: PgServer, ids: range | list[int], supplier: str = "SEM1") -> None:
    """Products as a refresh brings them: their CDC events into bronze, then the dbt models
    of the product table (incremental, as a refresh runs them) build staging and the marts."""
    from pipeline.steps.transform import DbtProject

    settings = pg.settings
    events = event_factory()
    table = settings.table("product")
    records = [
        events.record(
            pid,
            {"ID": pid},
            events.env(
                "c",
                None,
                events.product_row(pid, VendorCode=f"{supplier}-{pid}"),
                events.sqlserver_source(f"{pid:08x}:00000001:0003", f"{pid:08x}:00000001:0002", 1, 1700000000000),
            ),
            topic=table.topic,
        )
        for pid in ids
    ]
    load_events(settings, "product", records, batch_file="product/raw/batch=superset-test.jsonl")
    result = DbtProject(settings).run(table.dbt_selector)
    if not result.success:
        raise AssertionError(f"dbt run failed: {result}")


@pytest.fixture(scope="session")
def pg(tmp_path_factory) -> Iterator[PgServer]:
    superuser_password = secrets.token_urlsafe(18)
    cluster = start_cluster(
        superuser="postgres",
        password=superuser_password,
        prefix="bi-superset-pg-",
        options=("-c shared_buffers=32MB", "-c max_connections=50"),
    )
    server = PgServer(
        port=cluster.port,
        superuser_password=superuser_password,
        owner="analytics",
        owner_password=secrets.token_urlsafe(18),
        reader="bi_reader",
        reader_password=secrets.token_urlsafe(18),
    )
    try:
        su = server.connect("postgres", database="postgres")
        with su.cursor() as cur:
            cur.execute(f"CREATE ROLE {server.owner} LOGIN PASSWORD %s", (server.owner_password,))
            cur.execute(f"CREATE ROLE {server.reader} LOGIN PASSWORD %s", (server.reader_password,))
            cur.execute(f"CREATE DATABASE {server.database} OWNER {server.owner}")
        su.close()
        # The schemas, grants and bronze tables as the pipeline's migrations make them, then
        # the marts built by dbt from bronze events: what a refresh leaves, not a copy of it.
        server.settings = make_settings(server, tmp_path_factory.mktemp("bi-marts"))
        grant_reader(server.settings, server.connect("postgres"))
        with server.connect() as conn, conn.cursor() as cur:
            for table in server.settings.tables:
                ensure_bronze(cur, server.settings.file, table)
        load_events(server.settings, "measure_unit", read_events("measure_unit_sqlserver.jsonl"))
        from pipeline.steps.transform import DbtProject

        # The configured tables' models, as a refresh selects them.
        built = DbtProject(server.settings).run(" ".join(t.dbt_selector for t in server.settings.tables))
        if not built.success:
            pytest.fail(f"dbt run failed: {built}")
        insert_products(server, range(7807552, 7807552 + 5), "SEM1")
        insert_products(server, range(7807600, 7807600 + 3), "SABO")
        yield server
    finally:
        cluster.stop()


# --------------------------------------------------------------------------- Superset


@dataclass
class SupersetServer:
    settings: Settings
    process: subprocess.Popen
    log_path: Path
    timings: dict = field(default_factory=dict)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def make_settings(pg: PgServer, data_dir: Path, **overrides) -> Settings:
    """The tests' settings, on this PostgreSQL and a Superset of its own port."""
    values = dict(
        pg_host=pg.host,
        pg_port=pg.port,
        pg_database=pg.database,
        pg_user=pg.owner,
        pg_password=pg.owner_password,
        pg_reader_user=pg.reader,
        pg_reader_password=pg.reader_password,
        superset_url=f"http://127.0.0.1:{free_port()}",
        superset_user="bi_admin",
    )
    # Every shipped table (issue 20): the new tables' datasets are provisioned on a real Superset.
    return make_test_settings(data_dir, tables=None, **{**values, **overrides})


def _record(timings: dict) -> None:
    SUPERSET_CACHE.mkdir(parents=True, exist_ok=True)
    with open(SUPERSET_CACHE / "timings.jsonl", "a") as handle:
        handle.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **timings}) + "\n")


@pytest.fixture(scope="session")
def superset(pg: PgServer, tmp_path_factory) -> Iterator[SupersetServer]:
    from pipeline.superset import install

    data_dir = tmp_path_factory.mktemp("bi-data")
    settings = make_settings(pg, data_dir)
    log_path = data_dir / "superset-setup.log"
    setup_log = open(log_path, "a")

    def log(line: str) -> None:
        setup_log.write(line + "\n")
        setup_log.flush()

    timings: dict = {}
    cached_venv = SUPERSET_CACHE / "venv"
    reused = install.installed_version(cached_venv) is not None
    started = time.monotonic()
    install.install_venv(cached_venv, log)
    timings["install_seconds"] = round(time.monotonic() - started, 1)
    timings["install_reused"] = reused
    install.superset_home(settings).mkdir(parents=True, exist_ok=True)
    install.venv_dir(settings).symlink_to(cached_venv, target_is_directory=True)

    # `superset db upgrade` + `superset init` take 35 s on an idle machine and minutes on a
    # busy one; their result does not depend on the secret key or admin, so later sessions
    # start from a copy (ensure_installed then only sets up the admin user).
    version = install.installed_version(cached_venv)
    template = SUPERSET_CACHE / f"metadata-template-{version}.db"
    fresh = os.environ.get("BI_TEST_SUPERSET_FRESH_METADATA") == "1" or not template.exists()
    if not fresh:
        shutil.copyfile(template, install.metadata_path(settings))
        (install.superset_home(settings) / install.INIT_MARKER).write_text(json.dumps({"version": version}))
    started = time.monotonic()
    install.ensure_installed(settings, log)
    timings["init_seconds"] = round(time.monotonic() - started, 1)
    timings["init_from_template"] = not fresh
    if fresh:
        shutil.copyfile(install.metadata_path(settings), template.with_suffix(".tmp"))
        os.replace(template.with_suffix(".tmp"), template)

    argv, env = install.run_command(settings)
    server_log = data_dir / "superset-server.log"
    handle = open(server_log, "ab")
    started = time.monotonic()
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=install.superset_home(settings),
        start_new_session=True,
    )
    server = SupersetServer(settings=settings, process=process, log_path=server_log, timings=timings)
    try:
        try:
            install.wait_until_healthy(settings, timeout=240, alive=lambda: process.poll() is None)
        except install.SupersetInstallError as exc:
            pytest.fail(f"{exc}\n{server.log_tail()}")
        timings["start_seconds"] = round(time.monotonic() - started, 1)
        timings["server"] = Path(argv[0]).name
        _record(timings)
        print(f"\nsuperset timings: {timings}")
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        handle.close()
        setup_log.close()
