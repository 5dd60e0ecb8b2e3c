"""The role Superset connects with reads staging and marts, writes nothing, never sees bronze."""

from __future__ import annotations

import psycopg2
import pytest
from psycopg2 import errors

pytest_plugins = ["tests.support.superset"]
pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def reader(pg):
    conn = pg.connect(pg.reader)
    yield conn
    conn.close()


def _run(conn, statement: str):
    with conn.cursor() as cur:
        cur.execute(statement)
        return cur.fetchall() if cur.description else None


def test_reader_reads_marts_and_staging(reader):
    assert _run(reader, "SELECT count(*) FROM marts.dim_product")[0][0] > 0
    assert _run(reader, "SELECT count(*) FROM staging_staging.stg_product WHERE deleted = false")[0][0] > 0


def test_reader_cannot_read_bronze(reader):
    with pytest.raises(errors.InsufficientPrivilege):
        _run(reader, "SELECT count(*) FROM bronze.product_cdc")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO marts.dim_product (product_id, net_uid, supplier_name, multilingual_status, weight_category,"
        " is_for_sale, is_for_web, is_for_zero_sale, has_analogue, has_image, has_component, ingested_timestamp)"
        " VALUES (1, 'x', 'x', 'x', 'x', false, false, false, false, false, false, now())",
        "UPDATE marts.dim_product SET name = 'x'",
        "DELETE FROM marts.dim_product",
        "TRUNCATE marts.dim_product",
        "DELETE FROM bronze.product_cdc",
        "CREATE TABLE marts.evil (id int)",
        "CREATE TABLE staging_staging.evil (id int)",
        "CREATE TABLE public.evil (id int)",
        "CREATE TEMP TABLE evil (id int)",
        "CREATE SCHEMA evil",
        "DROP VIEW staging_staging.stg_product",
    ],
)
def test_reader_cannot_write(reader, statement):
    # Sessions are read-only by default; the privileges refuse even when the reader lifts that.
    with pytest.raises((errors.ReadOnlySqlTransaction, errors.InsufficientPrivilege)):
        _run(reader, statement)
    _run(reader, "SET default_transaction_read_only = off")
    with pytest.raises((errors.InsufficientPrivilege, errors.UndefinedTable)):
        _run(reader, statement)


def test_reader_keeps_access_when_dbt_recreates_the_table(pg):
    owner = pg.connect()
    try:
        _run(owner, "CREATE TABLE marts.dim_product_rebuilt AS SELECT * FROM marts.dim_product")
        conn = pg.connect(pg.reader)
        try:
            assert _run(conn, "SELECT count(*) FROM marts.dim_product_rebuilt")[0][0] > 0
        finally:
            conn.close()
    finally:
        _run(owner, "DROP TABLE marts.dim_product_rebuilt")
        owner.close()


def test_reader_password_is_required(pg):
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=pg.host,
            port=pg.port,
            dbname=pg.database,
            user=pg.reader,
            password="not-the-password",
            connect_timeout=5,
        )


def test_the_marts_are_what_dbt_builds(pg):
    # Superset's tests read a refresh's relations: dbt's columns, a view for staging, and no
    # constraint dbt does not declare (the incremental model, not an index, keeps keys unique).
    columns = {
        r[0]
        for r in pg.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'marts' AND table_name = 'dim_product'"
        )
    }
    assert {"days_since_created", "days_since_updated", "measure_unit_id", "weight", "name_pl"} <= columns
    kinds = dict(
        pg.execute(
            "SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE (n.nspname, c.relname) IN (('marts', 'dim_product'), ('staging_staging', 'stg_product'))"
        )
    )
    assert kinds == {"dim_product": "r", "stg_product": "v"}
    assert pg.execute("SELECT conname FROM pg_constraint WHERE conrelid = 'marts.dim_product'::regclass") == []
