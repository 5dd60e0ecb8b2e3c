"""PostgreSQL and bronze helpers for the dbt / validation / query tests.

The server: `BI_TEST_PG_DSN` (a libpq URL or key=value DSN of a superuser-ish role
that may CREATE DATABASE) when set; otherwise a throw-away cluster of the tests' one
PostgreSQL harness (support/postgres.py), password auth, stopped at interpreter exit.

Every test module gets its own database (`fresh_settings`) so modules never see
each other's bronze rows or dbt relations.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from pipeline.config import DEFAULT_CONFIG, Settings, load_file_config
from pipeline.stores.bronze import ensure_bronze
from tests.support.postgres import start_cluster
from tests.support.settings import make_settings

FIXTURES = Path(__file__).parent / "fixtures" / "events"


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str
    admin_db: str = "postgres"

    def connect(self, dbname: str | None = None):
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=dbname or self.admin_db,
            connect_timeout=5,
        )


_SERVER: PgServer | None = None


def _start_local_server() -> PgServer:
    password = secrets.token_urlsafe(16)
    cluster = start_cluster(superuser="analytics", password=password, prefix="bi-dbt-pg-")
    atexit.register(cluster.stop)
    return PgServer(cluster.host, cluster.port, cluster.superuser, password)


def pg_server() -> PgServer:
    """The test server (one per process)."""
    global _SERVER
    if _SERVER is None:
        dsn = os.environ.get("BI_TEST_PG_DSN")
        if dsn:
            p = parse_dsn(dsn)
            _SERVER = PgServer(
                p.get("host", "127.0.0.1"),
                int(p.get("port", 5432)),
                p.get("user", "postgres"),
                p.get("password", ""),
                p.get("dbname", "postgres"),
            )
        else:
            _SERVER = _start_local_server()
    return _SERVER


def fresh_settings(name: str, data_dir: Path, **overrides) -> Settings:
    """A new empty database `name` on the test server, its bronze tables, and Settings for it."""
    server = pg_server()
    conn = server.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn.close()
    settings = make_settings(
        data_dir,
        pg_host=server.host,
        pg_port=server.port,
        pg_user=server.user,
        pg_password=server.password,
        pg_database=name,
        **overrides,
    )
    # Every shipped table's bronze, configured or not: these tests run the whole dbt project,
    # whose models read each of them.
    shipped = {t.name: t for t in load_file_config(DEFAULT_CONFIG).tables}
    with connect(settings) as conn, conn.cursor() as cur:
        for table in {**shipped, **{t.name: t for t in settings.tables}}.values():
            ensure_bronze(cur, settings.file, table)
    return settings


class connect:
    """`with connect(settings) as conn:` an autocommit connection, closed afterwards."""

    def __init__(self, settings: Settings):
        self.conn = psycopg2.connect(**settings.pg_dsn())
        self.conn.autocommit = True

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


def read_events(name: str) -> list[dict]:
    with open(FIXTURES / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_events(
    settings: Settings,
    table: str,
    records: list[dict],
    batch_file: str = "fixture.jsonl",
    ingested_at=None,
    bronze_table: str | None = None,
) -> int:
    """Insert raw-zone records into the table's bronze table (or `bronze_table`), as the
    runbook's Step 3 loader does (ON CONFLICT DO NOTHING). A null value is stored as SQL NULL,
    or as JSON null when the record says "_bronze_null": "json"."""
    name = bronze_table or settings.table(table).bronze_table
    rel = sql.SQL("{}.{}").format(sql.Identifier(settings.file.bronze_schema), sql.Identifier(name))
    stmt = sql.SQL(
        "INSERT INTO {} (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, kafka_key, cdc_payload,"
        " batch_file, ingested_at) VALUES (%s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()))"
        " ON CONFLICT (kafka_topic, kafka_epoch, kafka_partition, kafka_offset) DO NOTHING"
    ).format(rel)
    inserted = 0
    with connect(settings) as conn, conn.cursor() as cur:
        for r in records:
            value = r.get("value")
            if value is None:
                payload = "null" if r.get("_bronze_null") == "json" else None
            else:
                payload = json.dumps(value)
            cur.execute(
                stmt,
                (
                    r["topic"],
                    r["partition"],
                    r["offset"],
                    r.get("timestamp"),
                    json.dumps(r.get("key")),
                    payload,
                    batch_file,
                    ingested_at,
                ),
            )
            inserted += cur.rowcount
    return inserted


def query(settings: Settings, statement, params=None) -> list[dict]:
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        if cur.description is None:
            return []
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def execute(settings: Settings, statement, params=None) -> int:
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.rowcount


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def event_factory():
    """tests/fixtures/events/make_events.py as a module (builders for Debezium records)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bi_make_events", FIXTURES / "make_events.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
