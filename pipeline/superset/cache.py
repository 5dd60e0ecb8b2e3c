"""Superset's chart cache: invalidate and warm after a refresh, read its state, set its timeout.

Cache model (Superset 6.1): chart data is cached in DATA_CACHE_CONFIG for the first
non-null of chart, dataset, database `cache_timeout`, else the cache default. bi-console
leaves chart and dataset timeouts empty, so the database connection's timeout (the
runbook's "Cache Timeout", default 300 s) rules. Note: POST /api/v1/cachekey/invalidate
deletes keys from CACHE_CONFIG, not from DATA_CACHE_CONFIG; install.py points both at
the same store so that the endpoint does evict chart data.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from pipeline.config import Settings
from pipeline.process.log_sink import Log, no_log
from pipeline.superset.client import SupersetApiError, SupersetClient
from pipeline.superset.dashboards import PRODUCT_CATALOG, DashboardSpec
from pipeline.superset.provision import (
    DATABASE_NAME,
    dashboard_charts,
    dataset_names,
    find_dashboard,
    find_database,
    find_dataset,
)

# --------------------------------------------------------------------------- cache


def parse_dttm(value: Any) -> datetime | None:
    """Superset's cached_dttm is naive UTC ISO text."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _resolve_datasets(
    client: SupersetClient, settings: Settings, datasets: Iterable[str] | None, database_id: int
) -> dict[str, int]:
    wanted = list(datasets) if datasets is not None else [f"{s}.{t}" for s, t in dataset_names(settings)]
    found: dict[str, int] = {}
    for name in wanted:
        schema, _, table = name.rpartition(".")
        if not schema:
            raise ValueError(f"dataset {name!r}: expected schema.table")
        row = find_dataset(client, database_id, schema, table)
        if row is not None:
            found[name] = int(row["id"])
    return found


def invalidate_and_warm(settings: Settings, datasets: Iterable[str] | None = None, log: Log = no_log) -> dict[str, Any]:
    """Drop the cached chart data of `datasets` ("schema.table"; None = every managed
    dataset) and re-run every chart built on them with force=true.

    Returns {"datasets": [...], "invalidated": <datasets>, "charts_warmed": n,
    "charts_failed": [{"id", "name", "error"}], "seconds": s}.
    """
    started = time.monotonic()
    with SupersetClient.from_settings(settings) as client:
        database = find_database(client)
        if database is None:
            raise SupersetApiError(
                f"{client.base_url}: database connection {DATABASE_NAME!r} does not exist; provision Superset first"
            )
        found = _resolve_datasets(client, settings, datasets, int(database["id"]))
        if datasets is not None:
            for name in datasets:
                if name not in found:
                    log(f"superset: no dataset {name}; nothing to invalidate for it")
        uids = [f"{ds_id}__table" for ds_id in found.values()]
        if uids:
            client.post("/api/v1/cachekey/invalidate", {"datasource_uids": uids})
            log(f"superset: invalidated cache of {', '.join(found)}")
        warmed = 0
        failed: list[dict[str, Any]] = []
        seen: set[int] = set()
        for ds_id in found.values():
            for chart in client.find("chart", "datasource_id", ds_id):
                if chart.get("datasource_type", "table") != "table" or chart["id"] in seen:
                    continue
                seen.add(chart["id"])
                try:
                    result = client.chart_data(int(chart["id"]), force=True)
                    warmed += 1
                    log(f"superset: warmed chart {chart.get('slice_name')!r} ({result.get('rowcount', '?')} rows)")
                except SupersetApiError as exc:
                    failed.append({"id": chart["id"], "name": chart.get("slice_name"), "error": str(exc)})
                    log(f"superset: chart {chart.get('slice_name')!r} not warmed: {exc}")
        return {
            "datasets": list(found),
            "invalidated": len(uids),
            "charts_warmed": warmed,
            "charts_failed": failed,
            "seconds": round(time.monotonic() - started, 2),
        }


def chart_cache_entry(chart_id: int, name: str, result: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(timezone.utc)
    cached_at = parse_dttm(result.get("cached_dttm")) if result.get("is_cached") else None
    return {
        "id": chart_id,
        "name": name,
        "is_cached": bool(result.get("is_cached")),
        "cached_at": cached_at.isoformat() if cached_at else None,
        "age_seconds": round((now - cached_at).total_seconds(), 1) if cached_at else 0.0,
        "cache_timeout": result.get("cache_timeout"),
        "rowcount": result.get("rowcount"),
    }


def cache_status(settings: Settings, spec: DashboardSpec = PRODUCT_CATALOG) -> dict[str, Any]:
    """What the dashboard shows right now: per chart, whether its data came from the
    cache, from when, and for how long it stays; plus the connection's cache_timeout.

    Reading the data goes through the cache like a dashboard view does: a chart whose
    entry had expired is computed (and cached) by this call and reported with age 0.
    """
    with SupersetClient.from_settings(settings) as client:
        database = find_database(client)
        dashboard = find_dashboard(client, spec.title)
        charts: list[dict[str, Any]] = []
        if dashboard is not None:
            now = datetime.now(timezone.utc)
            for chart in dashboard_charts(client, int(dashboard["id"])):
                try:
                    result = client.chart_data(int(chart["id"]))
                    charts.append(chart_cache_entry(int(chart["id"]), chart.get("slice_name", ""), result, now))
                except SupersetApiError as exc:
                    charts.append({"id": chart["id"], "name": chart.get("slice_name"), "error": str(exc)})
        ages = [c["age_seconds"] for c in charts if c.get("is_cached")]
        return {
            "database": None
            if database is None
            else {
                "id": database["id"],
                "name": database.get("database_name"),
                "cache_timeout": database.get("cache_timeout"),
            },
            "dashboard": None if dashboard is None else {"id": dashboard["id"], "title": spec.title},
            "charts": charts,
            "max_age_seconds": max(ages) if ages else None,
        }


def set_cache_timeout(settings: Settings, seconds: int | None) -> dict[str, Any]:
    """Set the connection's cache timeout (the runbook's Settings -> Database Connections ->
    Cache Timeout). None falls back to Superset's default; 0 caches without expiry;
    -1 disables caching."""
    if seconds is not None and (not isinstance(seconds, int) or seconds < -1):
        raise ValueError(f"cache timeout {seconds!r}: expected whole seconds >= -1 or None")
    with SupersetClient.from_settings(settings) as client:
        database = find_database(client)
        if database is None:
            raise SupersetApiError(
                f"{client.base_url}: database connection {DATABASE_NAME!r} does not exist; provision Superset first"
            )
        client.put(f"/api/v1/database/{database['id']}", {"cache_timeout": seconds})
        return {"id": database["id"], "name": DATABASE_NAME, "cache_timeout": seconds}
