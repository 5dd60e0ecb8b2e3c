"""Provisioning a real Superset 6.1 against a real PostgreSQL: idempotent, read-only role."""

from __future__ import annotations

import time

import pytest

from pipeline.superset import api, install

pytest_plugins = ["tests.support.superset"]  # the pg and superset fixtures, once per session
pytestmark = pytest.mark.timeout(2400)


def _count(client: api.SupersetClient, resource: str, column: str, value: str) -> int:
    return len([r for r in client.find(resource, column, value) if r.get(column) == value])


def test_health_and_run_command_bind_loopback(superset):
    argv, env = install.run_command(superset.settings)
    port = install.listen_port(superset.settings)
    assert f"127.0.0.1:{port}" in argv or ["-h", "127.0.0.1"] == argv[argv.index("-h") : argv.index("-h") + 2]
    assert env["SUPERSET_SECRET_KEY"] == superset.settings.superset_secret_key
    assert superset.settings.superset_secret_key not in " ".join(argv)
    config = install.config_path(superset.settings).read_text()
    assert superset.settings.superset_secret_key not in config
    assert "STORE_CACHE_KEYS_IN_METADATA_DB = True" in config
    assert install.is_healthy(superset.settings)


def test_provision_twice_creates_each_object_once(superset, pg):
    settings = superset.settings
    lines: list[str] = []
    first = api.provision(settings, lines.append)
    second = api.provision(settings, lines.append)

    assert first["database_id"] == second["database_id"]
    assert first["datasets"] == second["datasets"]
    # Every validated table of the shipped config gets datasets (managed_tables): MeasureUnit
    # has a suite, the three staging-only tables their source contract's.
    assert set(first["datasets"]) == {
        "marts.dim_product",
        "staging_staging.stg_product",
        "marts.dim_measure_unit",
        "staging_staging.stg_measure_unit",
        "staging_staging.stg_product_pricing",
        "staging_staging.stg_product_availability",
        "staging_staging.stg_product_image",
    }
    assert first["dashboards"][0]["id"] == second["dashboards"][0]["id"]
    assert first["dashboards"][0]["charts"] == second["dashboards"][0]["charts"]
    assert len(first["dashboards"][0]["charts"]) == len(api.PRODUCT_CATALOG.charts)

    with api.SupersetClient.from_settings(settings) as client:
        databases = client.get("/api/v1/database/")["result"]
        assert [d["database_name"] for d in databases] == [api.DATABASE_NAME]
        datasets = client.get("/api/v1/dataset/")["result"]
        assert sorted(f"{d['schema']}.{d['table_name']}" for d in datasets) == [
            "marts.dim_measure_unit",
            "marts.dim_product",
            "staging_staging.stg_measure_unit",
            "staging_staging.stg_product",
            "staging_staging.stg_product_availability",
            "staging_staging.stg_product_image",
            "staging_staging.stg_product_pricing",
        ]
        dashboards = client.get("/api/v1/dashboard/")["result"]
        assert [d["dashboard_title"] for d in dashboards] == ["Product Catalog"]
        for spec in api.PRODUCT_CATALOG.charts:
            assert _count(client, "chart", "slice_name", spec.title) == 1
        attached = {c["id"] for c in api.dashboard_charts(client, dashboards[0]["id"])}
        assert attached == set(first["dashboards"][0]["charts"])

        # The connection uses the read-only role, never the owner.
        database = client.get(f"/api/v1/database/{first['database_id']}")["result"]
        connection = client.get(f"/api/v1/database/{first['database_id']}/connection")["result"]
        assert f"//{settings.pg_reader_user}:" in connection["sqlalchemy_uri"]
        assert settings.pg_reader_password not in connection["sqlalchemy_uri"]
        assert database["allow_dml"] is False
        assert database["cache_timeout"] == api.DEFAULT_DATABASE_CACHE_TIMEOUT

        # Every chart answers its validation query.
        by_title = {c["slice_name"]: c["id"] for c in api.dashboard_charts(client, dashboards[0]["id"])}
        supplier = client.chart_data(by_title["Product Catalog: Supplier distribution"])
        rows = {r["supplier_name"]: r for r in supplier["data"]}
        assert rows["SEM1"]["product_count"] >= 5 and rows["SABO"]["product_count"] >= 3
        assert abs(sum(r["percentage"] for r in supplier["data"]) - 100) < 0.1
        flags = client.chart_data(by_title["Product Catalog: Business flags"])["data"][0]
        assert flags["is_for_web"] == flags["product_count"] and flags["is_for_sale"] == 0
        multilingual = client.chart_data(by_title["Product Catalog: Multilingual coverage"])["data"]
        assert {r["multilingual_status"] for r in multilingual} >= {"Complete"}
        freshness = client.chart_data(by_title["Product Catalog: Data freshness"])["data"][0]
        assert freshness["latest_ingest"] and freshness["data_age_minutes"] is not None
    # No secret in what provisioning logged.
    assert not any(settings.pg_reader_password in line or settings.superset_password in line for line in lines)


def test_set_cache_timeout_round_trip(superset):
    api.provision(superset.settings)
    assert api.set_cache_timeout(superset.settings, 120)["cache_timeout"] == 120
    assert api.cache_status(superset.settings)["database"]["cache_timeout"] == 120
    api.set_cache_timeout(superset.settings, api.DEFAULT_DATABASE_CACHE_TIMEOUT)
    with pytest.raises(ValueError):
        api.set_cache_timeout(superset.settings, -5)


def test_bad_password_is_one_line_naming_the_url(superset):
    settings = superset.settings.model_copy(update={"superset_password": "wrong-password-123"})
    with pytest.raises(api.SupersetApiError) as info:
        api.provision(settings)
    message = str(info.value)
    assert "\n" not in message
    assert "/api/v1/security/login" in message and "401" in message


def test_secret_key_is_required(superset, tmp_path):
    from pipeline.config import ConfigError

    for key in (None, "short-key"):
        settings = superset.settings.model_copy(update={"superset_secret_key": key, "data_dir": tmp_path})
        with pytest.raises(ConfigError, match="BI_SUPERSET_SECRET_KEY"):
            install.ensure_installed(settings)
        with pytest.raises(ConfigError, match="BI_SUPERSET_SECRET_KEY"):
            install.run_command(settings)


def test_ensure_installed_is_idempotent_and_follows_a_new_password(superset):
    settings = superset.settings
    lines: list[str] = []
    started = time.monotonic()
    assert install.ensure_installed(settings, lines.append) == install.installed_version(install.venv_dir(settings))
    assert time.monotonic() - started < 5 and lines == []  # nothing re-run

    rotated = settings.model_copy(update={"superset_password": settings.superset_password + "-rotated"})
    try:
        install.ensure_installed(rotated, lines.append)
        assert any("admin user" in line for line in lines)
        assert not any(rotated.superset_password in line for line in lines)
        with api.SupersetClient.from_settings(rotated):
            pass
        with pytest.raises(api.SupersetApiError, match="401"):
            with api.SupersetClient.from_settings(settings):
                pass
    finally:
        install.ensure_installed(settings)
    with api.SupersetClient.from_settings(settings):
        pass
