"""The compose files: valid against the Compose Specification JSON schema, and keeping
the project's policy (pinned images, healthchecks, 127.0.0.1, secrets from .env only)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.config import SECRET_VARIABLES
from pipeline.config.security import compose_policy_problems, dockerfile_problems, image_pinned
from tests.support import REPO
from tests.support.shared import shared_file

COMPOSE = REPO / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
SCHEMA = json.loads((COMPOSE / "schema" / "compose-spec.json").read_text())


def compose_doc() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def schema_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_validates_against_the_compose_spec_schema():
    assert SCHEMA["title"] == "Compose Specification"
    assert schema_errors(compose_doc()) == []


def test_compose_schema_check_can_fail():
    bad = {
        "services": {"kafka": {"image": "apache/kafka:3.9.0", "helthcheck": {}, "ports": [{"target": "x"}]}},
        "volumes": {"data": {"drvier": "local"}},
    }
    errors = schema_errors(bad)
    assert any("helthcheck" in e for e in errors)
    assert any("drvier" in e for e in errors)


def test_compose_file_keeps_the_policy():
    assert compose_policy_problems(compose_doc(), base_dir=COMPOSE) == []


BAD_SNIPPET = """
services:
  db:
    image: postgres
    ports: ["5432:5432"]
    environment:
      POSTGRES_PASSWORD: analytics
  storage:
    image: minio/minio:latest
    restart: unless-stopped
    ports: ["0.0.0.0:9000:9000", "127.0.0.1:9001:9001"]
    environment:
      MINIO_ROOT_USER: minioadmin
      MINIO_ROOT_PASSWORD: ${BI_S3_SECRET_KEY:-minioadmin}
    healthcheck: {test: ["CMD", "mc", "ready", "local"]}
  superset:
    image: apache/superset:4.1.2
    restart: unless-stopped
    depends_on: [db]
    environment: ["SUPERSET_SECRET_KEY=thisISaSECRET_1234", "SUPERSET_LOAD_EXAMPLES=no"]
    volumes: ["./superset_home:/app/superset_home"]
    healthcheck: {test: ["CMD", "true"]}
  job:
    image: minio/mc:RELEASE.2025-04-16T18-13-26Z
    restart: "no"
    labels: {bi-console.one-shot: "true"}
    depends_on:
      storage: {condition: service_started}
"""


def test_compose_policy_fails_on_a_bad_snippet():
    problems = compose_policy_problems(yaml.safe_load(BAD_SNIPPET))
    expected = [
        "service db: image 'postgres' is not pinned to an exact version",
        "service db: no healthcheck (only one-shot jobs labelled bi-console.one-shot may go without)",
        "service db: a long-running service needs a restart policy",
        "service db: port 5432:5432 is published on every interface, not 127.0.0.1",
        "service db: POSTGRES_PASSWORD holds a literal value; secrets come from .env as ${BI_...:?error}",
        "service storage: image 'minio/minio:latest' is not pinned to an exact version",
        "service storage: port 0.0.0.0:9000:9000 is published on 0.0.0.0, not 127.0.0.1",
        "service storage: MINIO_ROOT_PASSWORD may fall back to a default; use ${BI_...:?error}",
        "service superset: SUPERSET_SECRET_KEY holds a literal value; secrets come from .env as ${BI_...:?error}",
        "service superset: depends_on lists services without a condition",
        "service superset: bind mount ./superset_home is writable; data goes in named volumes, bind mounts are "
        "read-only configuration",
        "service job: depends on storage with service_started, not service_healthy",
    ]
    assert problems == expected


def test_compose_policy_fails_when_a_healthcheck_is_removed_from_the_real_file():
    doc = compose_doc()
    del doc["services"]["kafka"]["healthcheck"]
    doc["services"]["postgres"]["ports"] = ["5433:5432"]
    doc["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD"] = "minioadmin"
    problems = compose_policy_problems(doc)
    assert "service kafka: no healthcheck (only one-shot jobs labelled bi-console.one-shot may go without)" in problems
    assert "service postgres: port 5433:5432 is published on every interface, not 127.0.0.1" in problems
    assert any(p.startswith("service minio: MINIO_ROOT_PASSWORD holds a literal value") for p in problems)


def test_compose_images_and_dockerfiles_are_pinned(tmp_path):
    for image in (
        "apache/kafka:3.9.0",
        "quay.io/debezium/connect:3.1.0.Final",
        "postgres:16.8-bookworm",
        "mcr.microsoft.com/mssql/server:2022-CU18-ubuntu-22.04",
        "x@sha256:" + "a" * 64,
    ):
        assert image_pinned(image), image
    for image in ("postgres", "postgres:latest", "localhost:5000/img", "img:${TAG}", "", None, "superset:stable"):
        assert not image_pinned(image), image
    assert dockerfile_problems("bi-console", {"context": "..", "dockerfile": "compose/Dockerfile"}, COMPOSE) == []
    assert dockerfile_problems("superset", {"context": "./superset"}, COMPOSE) == []
    (tmp_path / "Dockerfile").write_text("FROM python:3.11 AS build\nFROM --platform=linux/amd64 debian\n")
    assert dockerfile_problems("x", ".", tmp_path) == ["service x: Dockerfile starts FROM debian, not a pinned version"]


def test_compose_secrets_are_the_config_secret_variables():
    text = COMPOSE_FILE.read_text()
    used = set(re.findall(r"\$\{(BI_[A-Z0-9_]+):\?", text))
    assert used == {f"BI_{name}" for name in SECRET_VARIABLES}, "every secret, and only secrets, are required"
    for needle in ("minioadmin", "admin/admin", "thisISaSECRET", "CHANGE_ME"):
        assert needle not in text


def test_compose_services_profiles_and_one_shots():
    services = compose_doc()["services"]
    assert {
        "kafka",
        "kafka-connect",
        "connect-register",
        "minio",
        "minio-init",
        "postgres",
        "superset-init",
        "superset",
        "sqlserver",
        "sqlserver-init",
        "bi-console",
    } <= set(services)
    assert services["sqlserver"]["profiles"] == ["source-dev"] == services["sqlserver-init"]["profiles"]
    connect = services["kafka-connect"]
    assert connect["environment"]["CONNECT_CONNECTOR_CLIENT_CONFIG_OVERRIDE_POLICY"] == "None"
    assert connect["ports"] == ["127.0.0.1:8083:8083"]
    assert services["superset"]["depends_on"]["superset-init"]["condition"] == "service_completed_successfully"
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]
    assert "ZOOKEEPER" not in json.dumps(services["kafka"]), "KRaft, no ZooKeeper"


def test_compose_connector_file():
    document = json.loads((COMPOSE / "connectors" / "sqlserver-product-v2.json").read_text())
    config = document["config"]
    assert document["name"] == "sqlserver-product-v2"
    assert config["connector.class"] == "io.debezium.connector.sqlserver.SqlServerConnector"
    expected = {
        "topic.prefix": "cord",
        "database.names": "ConcordDb",
        "table.include.list": "dbo.Product",
        "decimal.handling.mode": "string",
        "tombstones.on.delete": "true",
        "snapshot.mode": "when_needed",
        "key.converter.schemas.enable": "true",
        "value.converter.schemas.enable": "true",
    }
    assert {k: config[k] for k in expected} == expected
    assert config["schema.history.internal.kafka.topic"]
    assert config["database.password"] == "${env:BI_SOURCE_PASSWORD}", "secrets through the config provider"
    for key, value in config.items():
        if re.search(r"password|secret", key, re.I):
            assert re.fullmatch(r"\$\{(env|file):[^}]+\}", value), key


def test_compose_source_dev_holds_the_contract_ddl():
    contract = shared_file("contract/concord_product.sqlserver.sql")
    copy = (COMPOSE.parent / "pipeline" / "demo" / "contract" / "concord_product.sqlserver.sql").read_text()
    assert copy == contract.read_text(), "pipeline/demo/contract/ holds the contract DDL verbatim"
    assert "CREATE TABLE dbo.Product" in copy and "sp_cdc_enable_table" in copy
    login = (COMPOSE / "source-dev" / "debezium_login.sql").read_text()
    assert "$(BI_SOURCE_PASSWORD)" in login


def test_compose_postgres_init_bronze_ddl_and_reader_role():
    sql = (COMPOSE / "postgres" / "initdb" / "10-bi-console.sql").read_text()
    assert "CREATE TABLE IF NOT EXISTS bronze.product_cdc" in sql
    assert "UNIQUE (kafka_topic, kafka_epoch, kafka_partition, kafka_offset)" in sql
    assert "\\getenv reader_password BI_PG_READER_PASSWORD" in sql
    grants = [line for line in sql.splitlines() if "GRANT" in line and "REVOKE" not in line]
    assert not any("bronze" in line for line in grants), "bi_reader gets nothing in bronze"
    assert "ALTER DEFAULT PRIVILEGES" in sql


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(COMPOSE).as_posix()
        for p in COMPOSE.rglob("*")
        if p.is_file() and p.suffix in {".yml", ".sh", ".sql", ".py", ".json", ""}
    ),
)
def test_compose_no_literal_secret_in_any_file(path):
    text = (COMPOSE / path).read_text()
    for needle in ("minioadmin", "thisISaSECRET_1234", "admin:admin", "password=admin", "PASSWORD: admin"):
        assert needle not in text, f"{path} holds {needle}"


def _run_config(path: Path, monkeypatch, **env: str) -> dict:
    import runpy

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(path))


def test_compose_superset_config_has_the_embedded_superset_cache_model(tmp_path, monkeypatch):
    """The bi step's invalidate-and-warm relies on install.py's cache settings; the
    containerized Superset must have the same ones (only the directory differs)."""
    from pipeline.config import load_settings
    from pipeline.superset.install import write_config

    key = "k" * 48
    settings = load_settings(
        env_file=None,
        data_dir=str(tmp_path),
        pg_password="p" * 12,
        pg_reader_password="r" * 12,
        source_password="s" * 12,
        s3_access_key="a" * 12,
        s3_secret_key="b" * 12,
        superset_secret_key=key,
        superset_password="c" * 12,
    )
    embedded = _run_config(write_config(settings), monkeypatch, SUPERSET_SECRET_KEY=key)
    compose_env = {"SUPERSET_SECRET_KEY": key, "BI_PG_USER": "analytics", "BI_PG_PASSWORD": "p@ss/word"}
    compose = _run_config(COMPOSE / "superset" / "superset_config.py", monkeypatch, **compose_env)

    assert compose["STORE_CACHE_KEYS_IN_METADATA_DB"] is embedded["STORE_CACHE_KEYS_IN_METADATA_DB"] is True

    def without_dir(config: dict) -> dict:
        return {k: v for k, v in config.items() if k != "CACHE_DIR"}

    assert without_dir(compose["DATA_CACHE_CONFIG"]) == without_dir(embedded["DATA_CACHE_CONFIG"])
    assert compose["CACHE_CONFIG"] == compose["DATA_CACHE_CONFIG"]
    assert compose["DATA_CACHE_CONFIG"]["CACHE_DIR"].startswith("/app/superset_home/")  # the superset_home volume
    assert compose["WTF_CSRF_TIME_LIMIT"] is embedded["WTF_CSRF_TIME_LIMIT"] is None
    assert compose["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://analytics:p%40ss%2Fword@postgres:5432/superset"

    tuned = _run_config(
        COMPOSE / "superset" / "superset_config.py",
        monkeypatch,
        **compose_env,
        BI_SUPERSET_CACHE_TIMEOUT="120",
        BI_SUPERSET_CACHE_DIR="/data/cache",
    )
    assert (tuned["DATA_CACHE_CONFIG"]["CACHE_DEFAULT_TIMEOUT"], tuned["CACHE_CONFIG"]["CACHE_DIR"]) == (
        120,
        "/data/cache",
    )


def test_standin_superset_image_is_the_one_images_build_makes():
    from cli.images import SUPERSET_IMAGE, SUPERSET_VERSION, superset_requirements
    from pipeline.superset.install import EXTRA_PACKAGES, SUPERSET_SPEC

    services = yaml.safe_load((COMPOSE / "docker-compose.standin.yml").read_text())["services"]
    assert services["superset"]["image"] == services["superset-init"]["image"] == SUPERSET_IMAGE
    assert SUPERSET_IMAGE == f"bi-console-superset:{SUPERSET_VERSION}-local"
    # The image's release is one the embedded Superset's spec (6.1.*) accepts, with its extras.
    assert SUPERSET_VERSION.startswith(SUPERSET_SPEC.split("==")[1].rstrip("*"))
    assert superset_requirements()[0] == f"apache-superset=={SUPERSET_VERSION}"
    assert set(EXTRA_PACKAGES) <= set(superset_requirements())
    assert services["superset-init"]["labels"]["bi-console.one-shot"] == "true"
    assert services["superset"]["ports"] == ["127.0.0.1:${BI_SUPERSET_PORT:-8088}:8088"]
    assert "/health" in " ".join(services["superset"]["healthcheck"]["test"])


def test_superset_metadata_initdb_file_is_new_and_idempotent():
    """The stand-in runs it on every start and the postgres image after 10-bi-console.sql,
    which creates the same database: it creates the database only when it is missing."""
    sql = (COMPOSE / "postgres" / "initdb" / "20-superset-metadata.sql").read_text()
    assert re.search(r"WHERE NOT EXISTS \(SELECT FROM pg_database WHERE datname = 'superset'\) \\gexec", sql)
    assert "REVOKE ALL ON DATABASE superset FROM PUBLIC" in sql
    standin = yaml.safe_load((COMPOSE / "docker-compose.standin.yml").read_text())["services"]["postgres"]
    assert (
        "./postgres/initdb/20-superset-metadata.sql:/opt/bi-console/initdb/20-superset-metadata.sql:ro"
        in standin["volumes"]
    )


def test_superset_reaches_postgres_where_its_container_can(tmp_path):
    """The connection Superset queries the marts through names PostgreSQL as the Superset
    server reaches it: the compose service from a container, else where bi-console does."""
    from pipeline.config import generate_env, load_settings
    from pipeline.superset.api import reader_uri

    secrets = dict(
        pg_password="p" * 12,
        pg_reader_password="r@d/r" * 3,
        source_password="s" * 12,
        s3_access_key="a" * 12,
        s3_secret_key="b" * 12,
    )
    host = load_settings(env_file=None, data_dir=str(tmp_path), pg_port=6543, **secrets)
    assert reader_uri(host) == f"postgresql+psycopg2://bi_reader:{'r%40d%2Fr' * 3}@127.0.0.1:6543/analytics"
    env_file = tmp_path / ".env"
    env_file.write_text(generate_env(compose=True))
    compose = load_settings(env_file=env_file, data_dir=str(tmp_path))
    assert (compose.superset_pg_host, compose.superset_pg_port) == ("postgres", 5432)
    assert reader_uri(compose).endswith("@postgres:5432/analytics")
    assert compose.pg_port == 5433  # bi-console itself still uses the published port
