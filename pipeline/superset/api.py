"""bi-console's Superset API, the names its callers use. Each lives in the module of its concern:

- `client`: the REST client, its errors and Rison;
- `dashboards`: the managed dashboards and charts, as data;
- `provision`: the database connection, datasets and dashboards, created or updated by name;
- `cache`: invalidation and warming after a refresh, the cache's state and timeout.
"""

from __future__ import annotations

from pipeline.superset.cache import cache_status, chart_cache_entry, invalidate_and_warm, set_cache_timeout
from pipeline.superset.client import SupersetApiError, SupersetClient, SupersetUnreachable, rison
from pipeline.superset.dashboards import DASHBOARDS, PRODUCT_CATALOG, ChartSpec, DashboardSpec, chart_definition
from pipeline.superset.provision import (
    DATABASE_NAME,
    DEFAULT_DATABASE_CACHE_TIMEOUT,
    dashboard_charts,
    dataset_columns,
    dataset_names,
    ensure_dashboard,
    ensure_database,
    ensure_dataset,
    find_chart,
    find_dashboard,
    find_database,
    find_dataset,
    managed_tables,
    provision,
    reader_uri,
    superset_pg_address,
)

__all__ = [
    "DASHBOARDS",
    "DATABASE_NAME",
    "DEFAULT_DATABASE_CACHE_TIMEOUT",
    "PRODUCT_CATALOG",
    "ChartSpec",
    "DashboardSpec",
    "SupersetApiError",
    "SupersetClient",
    "SupersetUnreachable",
    "cache_status",
    "chart_cache_entry",
    "chart_definition",
    "dashboard_charts",
    "dataset_columns",
    "dataset_names",
    "ensure_dashboard",
    "ensure_database",
    "ensure_dataset",
    "find_chart",
    "find_dashboard",
    "find_database",
    "find_dataset",
    "invalidate_and_warm",
    "managed_tables",
    "provision",
    "reader_uri",
    "rison",
    "set_cache_timeout",
    "superset_pg_address",
]
