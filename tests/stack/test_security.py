"""Issue 9, security, on the embedded stack: bi_reader's grants, identifiers quoted rather
than folded, and no secret in any log or output. The checks that need no stack are in
tests/unit/test_security.py."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors

pytestmark = pytest.mark.faults


# -- the embedded stack: bi_reader, and secrets in logs and outputs --------------------------------
@pytest.fixture(scope="module")
def refreshed(stack):
    stack.seeded()
    result = stack.cli("refresh", "--full", "--json")
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def reader_connect(stack, dbname: str | None = None):
    s = stack.settings
    return psycopg2.connect(**s.pg_dsn(dbname, user=s.pg_reader_user, password=s.pg_reader_password))


DENIED = [
    "INSERT INTO marts.dim_product (product_id) VALUES (1)",
    "UPDATE marts.dim_product SET name = 'x'",
    "DELETE FROM marts.dim_product",
    "TRUNCATE marts.dim_product",
    "DROP TABLE marts.dim_product",
    "ALTER TABLE marts.dim_product ADD COLUMN evil int",
    "INSERT INTO marts.dim_measure_unit (measure_unit_id) VALUES (1)",
    "DELETE FROM staging_staging.stg_product",
    "UPDATE staging_staging.stg_product SET name = 'x'",
    "CREATE TABLE marts.evil (i int)",
    "CREATE VIEW staging_staging.evil AS SELECT 1",
    "CREATE TABLE public.evil (i int)",
    "CREATE TABLE bronze.evil (i int)",
    "CREATE TABLE bi_console.evil (i int)",
    "CREATE SCHEMA evil",
    "CREATE TEMP TABLE evil (i int)",
    "CREATE FUNCTION public.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "SELECT count(*) FROM bronze.product_cdc",
    "SELECT count(*) FROM bronze.measure_unit_cdc",
    "SELECT count(*) FROM bi_console.ingest_checkpoint",
    "SELECT count(*) FROM bi_console.load_manifest",
    "SELECT count(*) FROM bi_console.load_rejects",
    "INSERT INTO bronze.product_cdc (kafka_topic, kafka_partition, kafka_offset) VALUES ('x', 0, -1)",
]


def test_security_bi_reader_reads_staging_and_marts_only(stack, refreshed):
    conn = reader_connect(stack)
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM marts.dim_product")
        assert cur.fetchone()[0] == 115
        cur.execute("SELECT count(*) FROM staging_staging.stg_product WHERE deleted = false")
        assert cur.fetchone()[0] == 115
        cur.execute("SELECT count(*) FROM marts.dim_measure_unit")
        assert cur.fetchone()[0] > 0
        conn.rollback()
        # The reader's sessions start read-only; a client that turns that off must still be
        # refused by the grants themselves.
        for mode in ("default", "READ WRITE"):
            if mode != "default":
                conn.autocommit = True
                cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
                conn.autocommit = False
            refused = {}
            for statement in DENIED:
                try:
                    cur.execute(statement)
                except (
                    errors.InsufficientPrivilege,
                    errors.ReadOnlySqlTransaction,
                    errors.ObjectNotInPrerequisiteState,
                ) as exc:
                    # A write to stg_product (a non-updatable view) may be refused as such before
                    # its privileges are checked; the privilege catalogue is checked below.
                    if mode != "default" and isinstance(exc, errors.ReadOnlySqlTransaction):
                        raise
                    if isinstance(exc, errors.ObjectNotInPrerequisiteState) and "stg_product" not in statement:
                        raise
                    refused[statement] = str(exc).splitlines()[0]
                conn.rollback()
            assert set(refused) == set(DENIED), (mode, sorted(set(DENIED) - set(refused)))
        # Every relation of staging and marts: SELECT only. No USAGE on bronze or the meta
        # schema, CREATE in no schema, no CREATE or TEMP on the database.
        cur.execute("""
            SELECT n.nspname || '.' || c.relname, has_table_privilege(c.oid, 'SELECT'),
                   has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE')
                   OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE')
                   OR has_table_privilege(c.oid, 'REFERENCES') OR has_table_privilege(c.oid, 'TRIGGER')
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname IN ('staging_staging', 'marts') AND c.relkind IN ('r', 'v', 'm', 'p')""")
        relations = cur.fetchall()
        assert len(relations) >= 4 and all(r[1] and not r[2] for r in relations), relations
        cur.execute("""SELECT nspname, has_schema_privilege(oid, 'USAGE'), has_schema_privilege(oid, 'CREATE')
                       FROM pg_namespace WHERE nspname NOT LIKE 'pg_%' AND nspname <> 'information_schema'""")
        schemas = {name: (usage, create) for name, usage, create in cur.fetchall()}
        assert not any(create for _, create in schemas.values()), schemas
        assert not schemas["bronze"][0] and not schemas["bi_console"][0], schemas
        cur.execute(
            "SELECT has_database_privilege(current_database(), 'CREATE'), "
            "has_database_privilege(current_database(), 'TEMP')"
        )
        assert cur.fetchone() == (False, False)
        conn.rollback()
    finally:
        conn.close()
    # Nothing changed behind the refusals.
    assert stack.psql("SELECT count(*) FROM marts.dim_product")[0][0] == 115
    # The source database is not the reader's either.
    try:
        source = reader_connect(stack, stack.settings.source_database)
    except psycopg2.OperationalError as exc:
        assert "permission denied" in str(exc)
    else:
        try:
            with pytest.raises(errors.InsufficientPrivilege):
                source.cursor().execute('SELECT count(*) FROM dbo."Product"')
        finally:
            source.close()


def test_security_identifiers_are_quoted_not_folded(stack, refreshed):
    """A legal but case-sensitive bronze table name is created and loaded exactly as named:
    the SQL quotes it (psycopg2.sql.Identifier) rather than splicing it in."""
    from pipeline.config import TableConfig
    from pipeline.steps.load import load

    table = TableConfig(
        name="quoted",
        source_table="Quoted",
        topic="test.quoted",
        raw_prefix="quoted/raw",
        bronze_table="Quoted_Case_CDC",
        dbt_selector="",
        staging_relation="stg_quoted",
        marts_relation="dim_quoted",
    )
    result = load(stack.settings, table, full=True, log=lambda line: None)
    assert result.objects == 0
    assert stack.psql("SELECT relname FROM pg_class WHERE relname ILIKE 'quoted_case_cdc'") == [("Quoted_Case_CDC",)]


def test_security_no_secret_in_any_log_or_output(stack, refreshed):
    settings = stack.settings
    secrets = {
        name: getattr(settings, name)
        for name in ("pg_password", "pg_reader_password", "source_password", "s3_access_key", "s3_secret_key")
    }
    assert all(len(v) >= 16 for v in secrets.values())
    outputs = {"refresh --full --json": refreshed.stdout + refreshed.stderr}
    commands = [
        ["--check", "--json"],
        ["stack", "status", "--json"],
        ["connector", "status"],
        ["refresh", "--incremental", "--json"],
    ]
    commands += [["stack", "logs", service, "-n", "100000"] for service in stack.runtime.service_names()]
    for command in commands:
        result = stack.cli(*command)
        assert result.returncode in (0, 1), (command, result.stderr[-2000:])
        outputs[" ".join(command)] = result.stdout + result.stderr
        if command == ["--check", "--json"]:
            assert json.loads(result.stdout)  # the JSON report itself was produced and scanned
    data = Path(settings.data_dir)
    files = [p for p in data.rglob("*") if p.is_file() and "pgdata" not in p.parts]
    scanned = {str(p.relative_to(data)): p.read_bytes() for p in files}
    assert any(k.startswith("logs/") for k in scanned) and any(k.startswith("dbt/logs/") for k in scanned)
    assert any(k.startswith("validation/") for k in scanned)
    leaks = [
        f"{name} in output of `bi-console {where}`"
        for where, text in outputs.items()
        for name, value in secrets.items()
        if value in text
    ]
    leaks += [
        f"{name} in {path}"
        for path, body in scanned.items()
        for name, value in secrets.items()
        if value.encode() in body
    ]
    assert not leaks, leaks
    print(
        f"SECURITY-RESULT secrets_scan: {len(secrets)} secrets, {len(outputs)} command outputs, "
        f"{len(scanned)} files under the data dir ({sum(map(len, scanned.values())):,} bytes): no leak"
    )
