"""Default-credential refusal and secret redaction."""

from __future__ import annotations

import os

import pytest

from pipeline.config import generate_env, load_settings
from pipeline.config.security import (
    DefaultCredentialError,
    check_default_credentials,
    default_credential_problems,
    redact,
    sql_server_password_ok,
)


def settings_from(tmp_path, monkeypatch, text: str, **overrides):
    for key in list(os.environ):
        if key.startswith("BI_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)  # BI_SOURCE_SA_PASSWORD is read from ./.env
    env = tmp_path / ".env"
    env.write_text(text)
    return load_settings(env, **overrides)


def test_security_generated_env_passes(tmp_path, monkeypatch):
    settings = settings_from(tmp_path, monkeypatch, generate_env(compose=True))
    assert default_credential_problems(settings) == []
    check_default_credentials(settings)  # no exception


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("S3_ACCESS_KEY", "minioadmin", "BI_S3_ACCESS_KEY is a known default credential ('minioadmin')"),
        ("S3_SECRET_KEY", "minioadmin", "BI_S3_SECRET_KEY is a known default credential ('minioadmin')"),
        ("SUPERSET_PASSWORD", "admin", "BI_SUPERSET_PASSWORD is a known default credential ('admin')"),
        ("PG_PASSWORD", "analytics", "BI_PG_PASSWORD is a known default credential ('analytics')"),
        (
            "SUPERSET_SECRET_KEY",
            "thisISaSECRET_1234",
            "BI_SUPERSET_SECRET_KEY is Superset's published default SECRET_KEY",
        ),
        (
            "SUPERSET_SECRET_KEY",
            "CHANGE_ME_TO_A_COMPLEX_RANDOM_SECRET",
            "BI_SUPERSET_SECRET_KEY is Superset's published default",
        ),
        ("SUPERSET_SECRET_KEY", "x7Qe9LmP2vRt8KsY", "BI_SUPERSET_SECRET_KEY is shorter than 32 characters"),
        (
            "SOURCE_SA_PASSWORD",
            "alllowercaseletters",
            "BI_SOURCE_SA_PASSWORD does not meet SQL Server's password policy",
        ),
    ],
)
def test_security_known_defaults_are_refused_naming_the_variable(tmp_path, monkeypatch, variable, value, expected):
    lines = [line for line in generate_env(compose=True).splitlines() if not line.startswith(f"BI_{variable}=")]
    settings = settings_from(tmp_path, monkeypatch, "\n".join(lines + [f"BI_{variable}={value}"]) + "\n")
    with pytest.raises(DefaultCredentialError) as info:
        check_default_credentials(settings)
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


def test_security_admin_admin_superset_and_missing_secret_key(tmp_path, monkeypatch):
    lines = [
        line
        for line in generate_env(compose=True).splitlines()
        if not line.startswith(("BI_SUPERSET_PASSWORD=", "BI_SUPERSET_SECRET_KEY="))
    ]
    settings = settings_from(
        tmp_path, monkeypatch, "\n".join(lines + ["BI_SUPERSET_USER=admin", "BI_SUPERSET_PASSWORD=admin"]) + "\n"
    )
    problems = default_credential_problems(settings)
    assert problems[0].startswith("BI_SUPERSET_PASSWORD is a known default credential ('admin')")
    assert any(p.startswith("BI_SUPERSET_SECRET_KEY is not set") for p in problems)
    with pytest.raises(DefaultCredentialError, match=r"\(and 1 more\)$"):
        check_default_credentials(settings)


def test_security_password_equal_to_user_is_refused(tmp_path, monkeypatch):
    lines = [line for line in generate_env(compose=True).splitlines() if not line.startswith("BI_PG_READER_PASSWORD=")]
    settings = settings_from(
        tmp_path,
        monkeypatch,
        "\n".join(lines + ["BI_PG_READER_USER=reader_x9", "BI_PG_READER_PASSWORD=reader_x9"]) + "\n",
    )
    assert default_credential_problems(settings) == [
        "BI_PG_READER_PASSWORD equals BI_PG_READER_USER; run `bi-console init --compose` to generate a random one"
    ]


def test_security_sa_password_from_explicit_env(tmp_path, monkeypatch):
    settings = settings_from(tmp_path, monkeypatch, generate_env(compose=True))
    assert default_credential_problems(settings, env={"BI_SOURCE_SA_PASSWORD": "Strong-Passw0rd-x9"}) == []
    assert default_credential_problems(settings, env={"BI_SOURCE_SA_PASSWORD": "password"}) == [
        "BI_SOURCE_SA_PASSWORD is a known default credential; run `bi-console init --compose` to generate a random one"
    ]


def test_security_generated_sa_password_meets_sql_server_policy():
    for _ in range(200):
        line = next(
            entry for entry in generate_env(compose=True).splitlines() if entry.startswith("BI_SOURCE_SA_PASSWORD=")
        )
        value = line.split("=", 1)[1]
        assert sql_server_password_ok(value), value
        assert not set(value) & set("$#'\"\\ `"), "safe in .env, compose interpolation and shells"
    assert not sql_server_password_ok("Short1!")
    assert not sql_server_password_ok("onlylowerand123")
    assert sql_server_password_ok("Upper-lower-123")


def test_security_redact_replaces_every_secret():
    secrets = ["s3cr3t-value-1", "s3cr3t-value-12", None, "", "ab"]
    text = "user=x password=s3cr3t-value-12 key=s3cr3t-value-1 short=ab"
    assert redact(text, secrets) == "user=x password=*** key=*** short=ab"
    assert redact("nothing here", secrets) == "nothing here"


def test_security_redact_with_settings_secret_values(tmp_path, monkeypatch):
    settings = settings_from(tmp_path, monkeypatch, generate_env(compose=True))
    line = f"postgresql://analytics:{settings.pg_password}@127.0.0.1:5433/analytics s3={settings.s3_secret_key}"
    out = redact(line, settings.secret_values())
    assert settings.pg_password not in out and settings.s3_secret_key not in out
    assert out == "postgresql://analytics:***@127.0.0.1:5433/analytics s3=***"
