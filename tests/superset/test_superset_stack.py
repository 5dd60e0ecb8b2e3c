"""Issue 7 through bi-console itself: Superset as a supervised service of the embedded
stack, provisioned at start, refreshed by the `bi` step after the marts change."""

from __future__ import annotations

import json

import pytest

from pipeline.superset import api, install

pytestmark = [pytest.mark.stack, pytest.mark.timeout(2400)]

ACTIVE = "Product Catalog: Active products"


@pytest.fixture(scope="module")
def with_superset(stack):
    from tests.support.superset import SUPERSET_CACHE

    cached = SUPERSET_CACHE / "venv"
    install.install_venv(cached, lambda line: None)  # once per machine; reused afterwards
    install.superset_home(stack.settings).mkdir(parents=True, exist_ok=True)
    if not install.venv_dir(stack.settings).exists():
        install.venv_dir(stack.settings).symlink_to(cached, target_is_directory=True)
    stack.runtime.up(log=lambda line: None, with_superset=True)
    return stack


def _active_products_shown(settings) -> int:
    with api.SupersetClient.from_settings(settings) as client:
        dashboard = api.find_dashboard(client, api.PRODUCT_CATALOG.title)
        charts = {c["slice_name"]: int(c["id"]) for c in api.dashboard_charts(client, int(dashboard["id"]))}
        return client.chart_data(charts[ACTIVE])["data"][0]["product_count"]


def test_refresh_with_bi_step_shows_new_rows(with_superset):
    stack = with_superset
    stack.seeded()
    run = json.loads(stack.cli("refresh", "--full", "--json", "--steps", "ingest,load,transform,bi", check=True).stdout)
    assert [s["step"] for s in run["steps"]][-1] == "bi"
    assert _active_products_shown(stack.settings) == 115
    stack.cli("demo", "changes", "300", check=True)
    stack.cli("refresh", "--incremental", "--steps", "ingest,load,transform,bi", check=True)
    live = stack.psql("SELECT count(*) FROM marts.dim_product")[0][0]
    assert live != 115
    assert _active_products_shown(stack.settings) == live


def test_superset_is_a_healthy_service_provisioned_once(with_superset):
    stack = with_superset
    status = {s.name: s for s in stack.runtime.status_all()}
    assert status["superset"].healthy, status["superset"]
    api.provision(stack.settings)  # the bi step provisioned; provisioning again updates, never duplicates
    with api.SupersetClient.from_settings(stack.settings) as client:
        assert len(client.find("database", "database_name", api.DATABASE_NAME)) == 1
        assert len(client.find("dashboard", "dashboard_title", api.PRODUCT_CATALOG.title)) == 1
        assert len(client.find("dataset", "table_name", "dim_product")) == 1
        assert len(client.find("dataset", "table_name", "stg_product")) == 1
