"""Fixtures for the Superset tests: a real PostgreSQL 15 and a real Superset 6.1.

- PostgreSQL: a cluster of the tests' one harness (support/postgres.py), scram-sha-256
  passwords. It holds an `analytics` database
  with `bronze.product_cdc`, the view `staging_staging.stg_product` over it and the
  table `marts.dim_product`, and the read-only `bi_reader` role.
- Superset: installed once into `$BI_TEST_SUPERSET_HOME/venv` (default
  /tmp/bi-console-superset-cache) and reused by later runs; each session gets its own
  data dir (the venv is symlinked in) and metadata database: a copy of the one the
  first session initialised (`BI_TEST_SUPERSET_FRESH_METADATA=1` runs db upgrade and
  init again), served by the command `pipeline.superset.install.run_command` returns.

Test modules load the fixtures with `pytest_plugins = ["tests.superset_support"]`, so
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
from support.net import free_port
from support.postgres import start_cluster
from support.settings import make_settings as make_test_settings

SUPERSET_CACHE = Path(os.environ.get("BI_TEST_SUPERSET_HOME", "/tmp/bi-console-superset-cache"))


# --------------------------------------------------------------------------- PostgreSQL

SCHEMA_SQL = """
CREATE SCHEMA bronze;
CREATE SCHEMA staging_staging;
CREATE SCHEMA marts;

CREATE TABLE bronze.product_cdc (
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    kafka_timestamp  bigint,
    kafka_key        jsonb,
    cdc_payload      jsonb,
    batch_file       text,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kafka_topic, kafka_partition, kafka_offset)
);

-- Like dbt's stg_product: typed columns out of the JSON payload, latest event per product.
CREATE VIEW staging_staging.stg_product AS
SELECT DISTINCT ON ((cdc_payload->'after'->>'ID')::bigint)
    (cdc_payload->'after'->>'ID')::bigint          AS product_id,
    cdc_payload->'after'->>'NetUID'                 AS net_uid,
    cdc_payload->'after'->>'Name'                   AS name,
    cdc_payload->'after'->>'VendorCode'             AS vendor_code,
    cdc_payload->'after'->>'NamePL'                 AS name_pl,
    cdc_payload->'after'->>'NameUA'                 AS name_ua,
    (cdc_payload->'after'->>'Weight')::float8       AS weight,
    (cdc_payload->'after'->>'IsForSale')::boolean   AS is_for_sale,
    (cdc_payload->'after'->>'IsForWeb')::boolean    AS is_for_web,
    (cdc_payload->'after'->>'Deleted')::boolean     AS deleted,
    cdc_payload->>'op'                              AS cdc_operation,
    kafka_offset,
    ingested_at
FROM bronze.product_cdc
ORDER BY (cdc_payload->'after'->>'ID')::bigint, kafka_offset DESC;

CREATE TABLE marts.dim_product (
    product_id               bigint PRIMARY KEY,
    net_uid                  text NOT NULL UNIQUE,
    name                     text,
    supplier_name            text NOT NULL,
    multilingual_status      text NOT NULL,
    weight_category          text NOT NULL,
    is_for_sale              boolean NOT NULL,
    is_for_web               boolean NOT NULL,
    is_for_zero_sale         boolean NOT NULL,
    has_analogue             boolean NOT NULL,
    has_image                boolean NOT NULL,
    has_component            boolean NOT NULL,
    last_modified_in_source  timestamp,
    ingested_timestamp       timestamptz NOT NULL
);
"""

# What the pipeline's migrations must grant the reader (kept here for the tests):
# schema usage + SELECT on existing and FUTURE relations (dbt drops and re-creates
# its tables and views on every run), nothing on bronze, no TEMP, read-only sessions.
READER_SQL = """
REVOKE ALL ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT ON DATABASE {db} TO {reader};
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA staging_staging, marts TO {reader};
GRANT SELECT ON ALL TABLES IN SCHEMA staging_staging, marts TO {reader};
ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA staging_staging, marts GRANT SELECT ON TABLES TO {reader};
ALTER ROLE {reader} SET default_transaction_read_only = on;
"""


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

    def connect(self, user: str | None = None, password: str | None = None, database: str | None = None):
        user = user or self.owner
        if password is None:
            password = {self.owner: self.owner_password, self.reader: self.reader_password,
                        "postgres": self.superuser_password}[user]
        conn = psycopg2.connect(host=self.host, port=self.port, dbname=database or self.database, user=user,
                                password=password, connect_timeout=5)
        conn.autocommit = True
        return conn

    def execute(self, sql: str, params=None, *, user: str | None = None) -> list[tuple]:
        with self.connect(user) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []


def _product_row(product_id: int, supplier: str, status: str = "Complete") -> dict:
    return {"product_id": product_id, "net_uid": f"00000000-0000-4000-8000-{product_id:012d}",
            "name": f"Пневмоподушка {product_id}", "supplier_name": supplier, "multilingual_status": status,
            "weight_category": "Light (<1kg)", "is_for_sale": False, "is_for_web": True, "is_for_zero_sale": False,
            "has_analogue": product_id % 3 != 0, "has_image": False, "has_component": False}


def insert_products(pg: PgServer, ids: range | list[int], supplier: str = "SEM1", status: str = "Complete") -> None:
    """Rows into bronze (as CDC events) and into marts (as a dbt run would), ingested now."""
    with pg.connect() as conn, conn.cursor() as cur:
        for pid in ids:
            row = _product_row(pid, supplier, status)
            after = {"ID": pid, "NetUID": row["net_uid"], "Name": row["name"], "VendorCode": supplier + "-X",
                     "NamePL": "Resor pneumatyczny", "NameUA": "Пневмоподушка", "Weight": 0.35,
                     "IsForSale": False, "IsForWeb": True, "Deleted": False}
            cur.execute("INSERT INTO bronze.product_cdc (kafka_topic, kafka_partition, kafka_offset, kafka_key,"
                        " cdc_payload, batch_file) VALUES (%s, 0, %s, %s, %s, %s)",
                        ("cord.ConcordDb.dbo.Product", pid, json.dumps({"ID": pid}),
                         json.dumps({"op": "r", "after": after}), "product/raw/batch=test.jsonl"))
            cur.execute("INSERT INTO marts.dim_product (product_id, net_uid, name, supplier_name, multilingual_status,"
                        " weight_category, is_for_sale, is_for_web, is_for_zero_sale, has_analogue, has_image,"
                        " has_component, last_modified_in_source, ingested_timestamp) VALUES (%(product_id)s,"
                        " %(net_uid)s, %(name)s, %(supplier_name)s, %(multilingual_status)s, %(weight_category)s,"
                        " %(is_for_sale)s, %(is_for_web)s, %(is_for_zero_sale)s, %(has_analogue)s, %(has_image)s,"
                        " %(has_component)s, now() - interval '1 day', clock_timestamp())", row)


@pytest.fixture(scope="session")
def pg() -> Iterator[PgServer]:
    superuser_password = secrets.token_urlsafe(18)
    cluster = start_cluster(superuser="postgres", password=superuser_password, prefix="bi-superset-pg-",
                            options=("-c shared_buffers=32MB", "-c max_connections=50"))
    server = PgServer(port=cluster.port, superuser_password=superuser_password, owner="analytics",
                      owner_password=secrets.token_urlsafe(18), reader="bi_reader",
                      reader_password=secrets.token_urlsafe(18))
    try:
        su = server.connect("postgres", database="postgres")
        with su.cursor() as cur:
            cur.execute(f"CREATE ROLE {server.owner} LOGIN PASSWORD %s", (server.owner_password,))
            cur.execute(f"CREATE ROLE {server.reader} LOGIN PASSWORD %s", (server.reader_password,))
            cur.execute(f"CREATE DATABASE {server.database} OWNER {server.owner}")
        su.close()
        server.execute(SCHEMA_SQL)
        with server.connect("postgres") as conn, conn.cursor() as cur:
            cur.execute(READER_SQL.format(db=server.database, reader=server.reader, owner=server.owner))
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
    values = dict(pg_host=pg.host, pg_port=pg.port, pg_database=pg.database, pg_user=pg.owner,
                  pg_password=pg.owner_password, pg_reader_user=pg.reader, pg_reader_password=pg.reader_password,
                  superset_url=f"http://127.0.0.1:{free_port()}", superset_user="bi_admin")
    return make_test_settings(data_dir, **{**values, **overrides})


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
    process = subprocess.Popen(argv, env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               cwd=install.superset_home(settings), start_new_session=True)
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
