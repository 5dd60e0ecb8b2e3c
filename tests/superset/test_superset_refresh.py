"""After the marts change, Superset shows stale data until bi-console invalidates and warms."""

from __future__ import annotations

import pytest

from pipeline.checks import stale_bi
from pipeline.steps import bi
from pipeline.superset import api
from tests.support.net import free_port
from tests.support.superset import insert_products

pytest_plugins = ["tests.support.superset"]  # the pg and superset fixtures, once per session
pytestmark = pytest.mark.timeout(2400)

ACTIVE = "Product Catalog: Active products"
SUPPLIER = "Product Catalog: Supplier distribution"


def _chart_ids(client: api.SupersetClient) -> dict[str, int]:
    dashboard = api.find_dashboard(client, api.PRODUCT_CATALOG.title)
    return {c["slice_name"]: int(c["id"]) for c in api.dashboard_charts(client, int(dashboard["id"]))}


def _marts_count(pg) -> int:
    return pg.execute("SELECT count(*) FROM marts.dim_product")[0][0]


def _by_name(checks) -> dict[str, dict]:
    return {c.name: c.as_dict() for c in checks}


@pytest.fixture(scope="module")
def provisioned(superset):
    api.provision(superset.settings)
    api.invalidate_and_warm(superset.settings)
    return superset.settings


def test_stale_until_invalidate_and_warm(provisioned, pg):
    settings = provisioned
    with api.SupersetClient.from_settings(settings) as client:
        charts = _chart_ids(client)
        before = client.chart_data(charts[ACTIVE])
        assert before["is_cached"] is True
        shown_before = before["data"][0]["product_count"]
        assert shown_before == _marts_count(pg)

    insert_products(pg, range(7900001, 7900004), supplier="WBR0")
    live = _marts_count(pg)
    assert live == shown_before + 3

    with api.SupersetClient.from_settings(settings) as client:
        # Without invalidation the dashboard keeps serving the cached answer.
        stale = client.chart_data(charts[ACTIVE])
        assert stale["is_cached"] is True
        assert stale["data"][0]["product_count"] == shown_before
        suppliers = {r["supplier_name"] for r in client.chart_data(charts[SUPPLIER])["data"]}
        assert "WBR0" not in suppliers

    diagnosis = _by_name(stale_bi.diagnose_stale(settings))
    assert diagnosis["Cache vs marts data"]["ok"] is False, diagnosis["Cache vs marts data"]
    assert f"has {live} rows" in diagnosis["Cache vs marts data"]["evidence"]
    assert "bi step" in diagnosis["Cache vs marts data"]["fix"]

    result = api.invalidate_and_warm(settings, ["marts.dim_product"])
    assert result["invalidated"] == 1
    assert result["charts_warmed"] == len(api.PRODUCT_CATALOG.charts)
    assert result["charts_failed"] == []

    with api.SupersetClient.from_settings(settings) as client:
        fresh = client.chart_data(charts[ACTIVE])
        assert fresh["is_cached"] is True  # warmed: served from the cache, with the new rows
        assert fresh["data"][0]["product_count"] == live
        suppliers = {r["supplier_name"] for r in client.chart_data(charts[SUPPLIER])["data"]}
        assert "WBR0" in suppliers

    diagnosis = _by_name(stale_bi.diagnose_stale(settings))
    assert all(c["ok"] is True for c in diagnosis.values()), diagnosis


def test_invalidation_alone_evicts_chart_data(provisioned, pg):
    """POST /api/v1/cachekey/invalidate evicts chart data (it deletes from CACHE_CONFIG,
    which install.py makes the same store as DATA_CACHE_CONFIG)."""
    settings = provisioned
    api.invalidate_and_warm(settings)
    insert_products(pg, [7900100])
    with api.SupersetClient.from_settings(settings) as client:
        charts = _chart_ids(client)
        assert client.chart_data(charts[ACTIVE])["is_cached"] is True
        dataset = api.find_dataset(client, int(api.find_database(client)["id"]), "marts", "dim_product")
        client.post("/api/v1/cachekey/invalidate", {"datasource_uids": [f"{dataset['id']}__table"]})
        after = client.chart_data(charts[ACTIVE])
        assert not after["is_cached"]  # Superset reports a miss as null
        assert after["data"][0]["product_count"] == _marts_count(pg)


def test_run_bi_refresh_counts_and_cache_age(provisioned, pg):
    insert_products(pg, [7900200, 7900201])
    lines: list[str] = []
    counts = bi.run_bi_refresh(provisioned, lines.append)
    # Every validated table's datasets: two marts and the five shipped tables' staging relations.
    assert counts["datasets_invalidated"] == 7
    assert counts["charts_warmed"] == len(api.PRODUCT_CATALOG.charts)
    assert counts["charts_failed"] == 0
    assert counts["cache_max_age_seconds"] is not None and counts["cache_max_age_seconds"] < 60
    assert counts["cache_timeout"] == api.DEFAULT_DATABASE_CACHE_TIMEOUT
    assert any("warmed" in line for line in lines)

    status = api.cache_status(provisioned)
    assert status["database"]["cache_timeout"] == api.DEFAULT_DATABASE_CACHE_TIMEOUT
    assert len(status["charts"]) == len(api.PRODUCT_CATALOG.charts)
    for chart in status["charts"]:
        assert chart["is_cached"] and chart["cache_timeout"] == api.DEFAULT_DATABASE_CACHE_TIMEOUT
        assert 0 <= chart["age_seconds"] < 60
    with api.SupersetClient.from_settings(provisioned) as client:
        assert client.chart_data(_chart_ids(client)[ACTIVE])["data"][0]["product_count"] == _marts_count(pg)


def test_cache_timeout_check(provisioned):
    api.set_cache_timeout(provisioned, 0)
    try:
        check = _by_name(stale_bi.diagnose_stale(provisioned))["Cache timeout"]
        assert check["ok"] is False and "never expire" in check["evidence"]
    finally:
        api.set_cache_timeout(provisioned, api.DEFAULT_DATABASE_CACHE_TIMEOUT)
    assert _by_name(stale_bi.diagnose_stale(provisioned))["Cache timeout"]["ok"] is True


def test_sql_lab_refuses_writes_through_the_connection(provisioned):
    with api.SupersetClient.from_settings(provisioned) as client:
        database_id = int(api.find_database(client)["id"])
        with pytest.raises(api.SupersetApiError) as info:
            client.post(
                "/api/v1/sqllab/execute/",
                {
                    "database_id": database_id,
                    "schema": "marts",
                    "sql": "DELETE FROM marts.dim_product",
                    "runAsync": False,
                },
            )
        assert "/api/v1/sqllab/execute/" in str(info.value)


def test_diagnose_when_superset_is_down(provisioned):
    down = provisioned.model_copy(update={"superset_url": f"http://127.0.0.1:{free_port()}"})
    checks = [c.as_dict() for c in stale_bi.diagnose_stale(down)]
    assert checks[0]["name"] == "Superset reachable" and checks[0]["ok"] is False
    assert "/health" in checks[0]["evidence"]
    assert all(c["ok"] is None and c["evidence"].startswith("not checked") for c in checks[1:])
    with pytest.raises(bi.ServiceUnreachable, match="BI_SUPERSET_URL"):
        bi.run_bi_refresh(down)
