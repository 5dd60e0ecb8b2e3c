"""Issue 9, security: generated secrets, refusal of default credentials in compose mode,
bi_reader's grants on the embedded stack, no secret in any log or output, and hostile
identifiers in the configuration rejected before any SQL is built."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import errors

from conftest import REPO

pytestmark = pytest.mark.faults


def cli(*args: str, env_file: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BI_")}
    return subprocess.run([sys.executable, "-m", "cli.main", "--env-file", str(env_file), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO, env={**base, **(env or {})})


def read_env(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


# -- init ------------------------------------------------------------------------------------
@pytest.mark.parametrize("compose", [False, True])
def test_security_init_generates_every_secret(tmp_path, compose):
    from pipeline.config import SECRET_VARIABLES, load_settings
    from pipeline.config.security import default_credential_problems

    flag = ["--compose"] if compose else []
    generated = []
    for attempt in range(2):
        path = tmp_path / f"{attempt}.env"
        result = cli("init", *flag, env_file=path)
        assert result.returncode == 0, result.stderr
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        values = read_env(path)
        secrets = {name: values.get(f"BI_{name}") for name in SECRET_VARIABLES}
        assert all(secrets.values()), [n for n, v in secrets.items() if not v]
        assert all(len(v) >= 32 for v in secrets.values()), {n: len(v) for n, v in secrets.items()}
        assert len(set(secrets.values())) == len(secrets), "two secrets are equal"
        assert not any(v in result.stdout + result.stderr for v in secrets.values())
        settings = load_settings(env_file=path)
        assert default_credential_problems(settings, env=values) == []
        generated.append(set(secrets.values()))
    assert not generated[0] & generated[1], "a second init repeated a secret"
    again = cli("init", *flag, env_file=tmp_path / "0.env")
    assert again.returncode == 2 and "--force" in again.stderr  # existing secrets are never overwritten silently


# -- compose refuses default credentials ----------------------------------------------------------
@pytest.mark.parametrize("lines, named", [
    (["BI_S3_ACCESS_KEY=minioadmin", "BI_S3_SECRET_KEY=minioadmin"], "BI_S3_ACCESS_KEY is a known default credential ('minioadmin')"),
    (["BI_SUPERSET_USER=admin", "BI_SUPERSET_PASSWORD=admin"], "BI_SUPERSET_PASSWORD is a known default credential ('admin')"),
    (["BI_SUPERSET_SECRET_KEY=thisISaSECRET_1234"], "BI_SUPERSET_SECRET_KEY is Superset's published default SECRET_KEY"),
    (["BI_SUPERSET_SECRET_KEY=short-but-random-9Xq"], "BI_SUPERSET_SECRET_KEY is shorter than 32 characters"),
    (["BI_PG_PASSWORD=analytics"], "BI_PG_PASSWORD is a known default credential ('analytics')"),
])
def test_security_compose_runtime_refuses_default_credentials(tmp_path, monkeypatch, lines, named):
    from pipeline.config import generate_env, load_settings
    from pipeline.config.security import DefaultCredentialError
    from pipeline.runtime.select import select_runtime

    for key in list(os.environ):
        if key.startswith("BI_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    replaced = {line.split("=", 1)[0] for line in lines}
    kept = [line for line in generate_env(compose=True).splitlines() if line.split("=", 1)[0] not in replaced]
    env = tmp_path / ".env"
    env.write_text("\n".join(kept + lines) + "\n")
    settings = load_settings(env_file=env)
    assert settings.runtime == "compose"
    with pytest.raises(DefaultCredentialError) as info:
        select_runtime(settings)
    assert str(info.value).startswith(named)
    assert "\n" not in str(info.value)


def test_security_compose_runtime_accepts_generated_credentials(tmp_path, monkeypatch):
    from pipeline.config import generate_env, load_settings
    from pipeline.runtime.select import select_runtime

    for key in list(os.environ):
        if key.startswith("BI_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(generate_env(compose=True))
    runtime = select_runtime(load_settings(env_file=tmp_path / ".env"))
    assert runtime.name == "compose"


# -- hostile identifiers in the configuration -------------------------------------------------------
HOSTILE = [
    ("bronze_table", "x; DROP TABLE y"),
    ("bronze_table", 'product"--'),
    ("staging_relation", "stg_product; DROP SCHEMA marts CASCADE"),
    ("marts_relation", "dim_product WHERE 1=1"),
    ("key_column", "ID') OR ('1'='1"),
]


def _table_toml(field: str, value: str) -> str:
    fields = {"name": "poison", "source_table": "Poison", "topic": "test.poison", "raw_prefix": "poison/raw",
              "bronze_table": "poison_cdc", "dbt_selector": "", "staging_relation": "stg_poison",
              "marts_relation": "dim_poison", field: value}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in fields.items())
    return f"[[tables]]\n{body}\nsuites = []\n"


@pytest.mark.parametrize("field, value", HOSTILE)
def test_security_hostile_identifier_in_config_is_rejected(tmp_path, field, value):
    from pipeline.config import ConfigError, generate_env, load_file_config

    config = tmp_path / "bi-console.toml"
    config.write_text(_table_toml(field, value))
    with pytest.raises(ConfigError, match="is not a plain SQL identifier"):
        load_file_config(config)
    env_file = tmp_path / ".env"
    env_file.write_text(generate_env().replace("BI_RUNTIME=auto", "BI_RUNTIME=embedded"))
    for command in (["refresh", "--incremental"], ["--check", "--json"], ["stack", "status"]):
        result = cli(*command, env_file=env_file, env={"BI_CONFIG_FILE": str(config),
                                                       "BI_DATA_DIR": str(tmp_path / "data")})
        assert result.returncode == 2, (command, result.returncode, result.stderr[-2000:])
        assert f"tables.{field}={value!r} is not a plain SQL identifier" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_security_hostile_schema_name_is_rejected(tmp_path):
    from pipeline.config import ConfigError, load_file_config

    config = tmp_path / "bi-console.toml"
    config.write_text('bronze_schema = "bronze\\"; DROP SCHEMA marts; --"\n')
    with pytest.raises(ConfigError, match="bronze_schema"):
        load_file_config(config)


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


@pytest.mark.stack
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
                except (errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction,
                        errors.ObjectNotInPrerequisiteState) as exc:
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
        cur.execute("SELECT has_database_privilege(current_database(), 'CREATE'), "
                    "has_database_privilege(current_database(), 'TEMP')")
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


@pytest.mark.stack
def test_security_identifiers_are_quoted_not_folded(stack, refreshed):
    """A legal but case-sensitive bronze table name is created and loaded exactly as named:
    the SQL quotes it (psycopg2.sql.Identifier) rather than splicing it in."""
    from pipeline.config import TableConfig
    from pipeline.steps.load import load

    table = TableConfig(name="quoted", source_table="Quoted", topic="test.quoted", raw_prefix="quoted/raw",
                        bronze_table="Quoted_Case_CDC", dbt_selector="", staging_relation="stg_quoted",
                        marts_relation="dim_quoted")
    result = load(stack.settings, table, full=True, log=lambda line: None)
    assert result.objects == 0
    assert stack.psql("SELECT relname FROM pg_class WHERE relname ILIKE 'quoted_case_cdc'") == [("Quoted_Case_CDC",)]


@pytest.mark.stack
def test_security_no_secret_in_any_log_or_output(stack, refreshed):
    settings = stack.settings
    secrets = {name: getattr(settings, name) for name in
               ("pg_password", "pg_reader_password", "source_password", "s3_access_key", "s3_secret_key")}
    assert all(len(v) >= 16 for v in secrets.values())
    outputs = {"refresh --full --json": refreshed.stdout + refreshed.stderr}
    commands = [["--check", "--json"], ["stack", "status", "--json"], ["connector", "status"],
                ["refresh", "--incremental", "--json"]]
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
    leaks = [f"{name} in output of `bi-console {where}`" for where, text in outputs.items()
             for name, value in secrets.items() if value in text]
    leaks += [f"{name} in {path}" for path, body in scanned.items()
              for name, value in secrets.items() if value.encode() in body]
    assert not leaks, leaks
    print(f"SECURITY-RESULT secrets_scan: {len(secrets)} secrets, {len(outputs)} command outputs, "
          f"{len(scanned)} files under the data dir ({sum(map(len, scanned.values())):,} bytes): no leak")
