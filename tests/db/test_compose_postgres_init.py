"""compose/postgres/initdb/10-bi-console.sql run the way the postgres image's entrypoint
runs it (psql as POSTGRES_USER on POSTGRES_DB, the reader's credentials in the
environment), on a real PostgreSQL server started here from the system binaries."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import REPO
from tests.support.postgres import start_cluster

INIT_SQL = REPO / "compose" / "postgres" / "initdb" / "10-bi-console.sql"
READER_PASSWORD = "fixture-reader-pw-7Hq2"  # test fixture only


@pytest.fixture(scope="module")
def server():
    # The compose image runs Debian's PostgreSQL: the harness prefers it when installed.
    cluster = start_cluster(superuser="analytics", prefix="bi-compose-pg-")
    try:
        connection = ["-h", cluster.socket_dir, "-p", str(cluster.port)]
        cluster.run(["createdb", *connection, "-U", "analytics", "analytics"])
        cluster.run(
            [
                "psql",
                "-v",
                "ON_ERROR_STOP=1",
                *connection,
                "--username",
                "analytics",
                "--dbname",
                "analytics",
                "--no-password",
                "-f",
                INIT_SQL,
            ],
            env={"BI_PG_READER_USER": "bi_reader", "BI_PG_READER_PASSWORD": READER_PASSWORD},
        )
        yield cluster
    finally:
        cluster.stop(mode="immediate")


def psql(server, user: str, sql: str, database: str = "analytics") -> subprocess.CompletedProcess:
    return server.run(
        [
            "psql",
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            server.socket_dir,
            "-p",
            str(server.port),
            "-U",
            user,
            "-d",
            database,
            "-c",
            sql,
        ],
        check=False,
    )


def test_compose_postgres_init_creates_bronze_and_dbt_schemas(server):
    out = psql(
        server,
        "analytics",
        "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) "
        "FROM information_schema.columns WHERE table_schema='bronze' AND table_name='product_cdc'",
    )
    assert out.stdout.strip() == (
        "kafka_topic:text,kafka_partition:integer,kafka_offset:bigint,kafka_epoch:integer,kafka_timestamp:bigint,"
        "kafka_key:jsonb,cdc_payload:jsonb,batch_file:text,ingested_at:timestamp with time zone,"
        # the change columns, now created with the table (the DDL of bronze.py)
        "record_key:text,cdc_operation:text,source_position:text,is_snapshot:boolean"
    )
    insert = (
        "INSERT INTO bronze.product_cdc (kafka_topic, kafka_partition, kafka_offset) "
        "VALUES ('cord.ConcordDb.dbo.Product', 0, 1)"
    )
    assert psql(server, "analytics", insert).returncode == 0
    duplicate = psql(server, "analytics", insert)
    assert duplicate.returncode != 0 and "product_cdc_kafka_position_key" in duplicate.stderr
    assert psql(server, "analytics", "SELECT ingested_at IS NOT NULL FROM bronze.product_cdc").stdout.strip() == "t"
    schemas = psql(
        server,
        "analytics",
        "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace "
        "WHERE nspname IN ('bronze','staging_staging','marts','bi_console')",
    )
    assert schemas.stdout.strip() == "bi_console,bronze,marts,staging_staging"
    assert psql(server, "analytics", "SELECT 1", database="superset").returncode == 0


def test_compose_postgres_init_reader_sees_marts_and_staging_not_bronze(server):
    # dbt, as the analytics user, creates relations after the init: default privileges apply.
    assert (
        psql(
            server,
            "analytics",
            "CREATE TABLE marts.dim_product AS SELECT 7807552::bigint AS product_id; "
            "CREATE VIEW staging_staging.stg_product AS SELECT 1 AS product_id",
        ).returncode
        == 0
    )
    assert psql(server, "bi_reader", "SELECT product_id FROM marts.dim_product").stdout.strip() == "7807552"
    assert psql(server, "bi_reader", "SELECT count(*) FROM staging_staging.stg_product").stdout.strip() == "1"
    denied = psql(server, "bi_reader", "SELECT count(*) FROM bronze.product_cdc")
    assert denied.returncode != 0 and "permission denied for schema bronze" in denied.stderr
    read_only = psql(server, "bi_reader", "CREATE TABLE marts.x (i int)")
    assert read_only.returncode != 0 and (
        "read-only transaction" in read_only.stderr or "permission denied" in read_only.stderr
    )
    assert psql(server, "bi_reader", "SELECT 1", database="superset").returncode != 0
    role = psql(
        server, "analytics", "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname='bi_reader'"
    )
    assert role.stdout.strip() == "f|f|f"
