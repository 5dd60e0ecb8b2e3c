"""Issue 9, security, without the stack: generated secrets, refusal of default credentials
in compose mode, and hostile identifiers in the configuration rejected before any SQL is
built. bi_reader's grants and the scan of logs and outputs for secrets are in
tests/stack/test_security.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.faults


def cli(*args: str, env_file: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BI_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**base, **(env or {})},
    )


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
@pytest.mark.parametrize(
    "lines, named",
    [
        (
            ["BI_S3_ACCESS_KEY=minioadmin", "BI_S3_SECRET_KEY=minioadmin"],
            "BI_S3_ACCESS_KEY is a known default credential ('minioadmin')",
        ),
        (
            ["BI_SUPERSET_USER=admin", "BI_SUPERSET_PASSWORD=admin"],
            "BI_SUPERSET_PASSWORD is a known default credential ('admin')",
        ),
        (
            ["BI_SUPERSET_SECRET_KEY=thisISaSECRET_1234"],
            "BI_SUPERSET_SECRET_KEY is Superset's published default SECRET_KEY",
        ),
        (["BI_SUPERSET_SECRET_KEY=short-but-random-9Xq"], "BI_SUPERSET_SECRET_KEY is shorter than 32 characters"),
        (["BI_PG_PASSWORD=analytics"], "BI_PG_PASSWORD is a known default credential ('analytics')"),
    ],
)
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
    fields = {
        "name": "poison",
        "source_table": "Poison",
        "topic": "test.poison",
        "raw_prefix": "poison/raw",
        "bronze_table": "poison_cdc",
        "dbt_selector": "",
        "staging_relation": "stg_poison",
        "marts_relation": "dim_poison",
        field: value,
    }
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
        result = cli(
            *command, env_file=env_file, env={"BI_CONFIG_FILE": str(config), "BI_DATA_DIR": str(tmp_path / "data")}
        )
        assert result.returncode == 2, (command, result.returncode, result.stderr[-2000:])
        assert f"tables.{field}={value!r} is not a plain SQL identifier" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_security_hostile_schema_name_is_rejected(tmp_path):
    from pipeline.config import ConfigError, load_file_config

    config = tmp_path / "bi-console.toml"
    config.write_text('bronze_schema = "bronze\\"; DROP SCHEMA marts; --"\n')
    with pytest.raises(ConfigError, match="bronze_schema"):
        load_file_config(config)
