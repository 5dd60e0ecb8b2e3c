"""PostgreSQL and bronze helpers for the dbt / validation / query tests.

The server: `BI_TEST_PG_DSN` (a libpq URL or key=value DSN of a superuser-ish role
that may CREATE DATABASE) when set; otherwise a throw-away PostgreSQL cluster started
with the system binaries (`BI_TEST_PG_BINDIR`, default /usr/lib/postgresql/15/bin)
in a temp dir on a free 127.0.0.1 port, password auth, stopped at interpreter exit.
When running as root the cluster runs as the `postgres` system user.

Every test module gets its own database (`fresh_settings`) so modules never see
each other's bronze rows or dbt relations.
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from pipeline.stores.bronze import ensure_bronze
from pipeline.config import Settings, load_settings

FIXTURES = Path(__file__).parent / "fixtures" / "events"


@dataclass
class PgServer:
    host: str
    port: int
    user: str
    password: str
    admin_db: str = "postgres"

    def connect(self, dbname: str | None = None):
        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=dbname or self.admin_db, connect_timeout=5)


_SERVER: PgServer | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_local_server() -> PgServer:
    bindir = Path(os.environ.get("BI_TEST_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
    if not (bindir / "initdb").exists():
        raise RuntimeError(f"no PostgreSQL binaries in {bindir}; set BI_TEST_PG_DSN or BI_TEST_PG_BINDIR")
    root = Path(tempfile.mkdtemp(prefix="bi-dbt-pg-"))
    password = secrets.token_urlsafe(16)
    port = _free_port()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if as_root:
        shutil.chown(root, "postgres")
        shutil.chown(pwfile, "postgres")
    data = root / "data"
    subprocess.run(prefix + [str(bindir / "initdb"), "-D", str(data), "-U", "analytics", f"--pwfile={pwfile}",
                             "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                   check=True, capture_output=True)
    opts = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"),
                             "-w", "-t", "60", "start"], check=True, capture_output=True)

    def stop() -> None:
        subprocess.run(prefix + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    return PgServer("127.0.0.1", port, "analytics", password)


def pg_server() -> PgServer:
    """The test server (one per process)."""
    global _SERVER
    if _SERVER is None:
        dsn = os.environ.get("BI_TEST_PG_DSN")
        if dsn:
            p = parse_dsn(dsn)
            _SERVER = PgServer(p.get("host", "127.0.0.1"), int(p.get("port", 5432)), p.get("user", "postgres"),
                               p.get("password", ""), p.get("dbname", "postgres"))
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
    settings = load_settings(
        env_file=None,
        pg_host=server.host,
        pg_port=server.port,
        pg_user=server.user,
        pg_password=server.password,
        pg_database=name,
        pg_reader_password="x",
        source_password="x",
        s3_access_key="x",
        s3_secret_key="x",
        data_dir=data_dir,
        **overrides,
    )
    with connect(settings) as conn, conn.cursor() as cur:
        for table in settings.tables:
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


def load_events(settings: Settings, table: str, records: list[dict], batch_file: str = "fixture.jsonl",
                ingested_at=None) -> int:
    """Insert raw-zone records into the table's bronze table, as the runbook's Step 3 loader does
    (ON CONFLICT DO NOTHING). A null value is stored as SQL NULL, or as JSON null when the record
    says "_bronze_null": "json"."""
    cfg = settings.table(table)
    rel = sql.SQL("{}.{}").format(sql.Identifier(settings.file.bronze_schema), sql.Identifier(cfg.bronze_table))
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
            cur.execute(stmt, (r["topic"], r["partition"], r["offset"], r.get("timestamp"),
                               json.dumps(r.get("key")), payload, batch_file, ingested_at))
            inserted += cur.rowcount
    return inserted


def query(settings: Settings, statement, params=None) -> list[dict]:
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        if cur.description is None:
            return []
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]


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
