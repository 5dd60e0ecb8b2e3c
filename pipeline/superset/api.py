"""Superset REST client: idempotent provisioning, cache invalidation and warming, cache status.

Everything is looked up by name before it is created, so running `provision` again
updates the database connection, the datasets and the dashboard instead of adding
copies. Superset reaches PostgreSQL with the read-only role (BI_PG_READER_*), never
with the pipeline's owner role.

Cache model (Superset 6.1): chart data is cached in DATA_CACHE_CONFIG for the first
non-null of chart, dataset, database `cache_timeout`, else the cache default. bi-console
leaves chart and dataset timeouts empty, so the database connection's timeout (the
runbook's "Cache Timeout", default 300 s) rules. Note: POST /api/v1/cachekey/invalidate
deletes keys from CACHE_CONFIG, not from DATA_CACHE_CONFIG; install.py points both at
the same store so that the endpoint does evict chart data.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import httpx

from pipeline.config import Settings, TableConfig
from pipeline.stores.db import ServiceUnreachable

Log = Callable[[str], None]

DATABASE_NAME = "BI Platform Analytics"
DEFAULT_DATABASE_CACHE_TIMEOUT = 300
LOGIN_TIMEOUT = 30.0
DATA_TIMEOUT = 180.0


def _noop(_: str) -> None:
    pass


class SupersetApiError(Exception):
    """A Superset API call failed. The message is one line: method, URL, status, reason."""

    def __init__(self, message: str, *, status: int | None = None, url: str = ""):
        super().__init__(message)
        self.status = status
        self.url = url


class SupersetUnreachable(SupersetApiError, ServiceUnreachable):
    """Superset did not answer at all (refused, timed out): the refresh marks it unreachable."""


# --------------------------------------------------------------------------- rison

def rison(value: Any) -> str:
    """Encode a value as Rison, the query-string notation of Superset's list endpoints."""
    if value is None:
        return "!n"
    if value is True:
        return "!t"
    if value is False:
        return "!f"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("!", "!!").replace("'", "!'") + "'"
    if isinstance(value, dict):
        return "(" + ",".join(f"{k}:{rison(v)}" for k, v in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        return "!(" + ",".join(rison(v) for v in value) + ")"
    raise TypeError(f"cannot encode {type(value).__name__} as rison")


# --------------------------------------------------------------------------- client

class SupersetClient:
    """Bearer token from /security/login plus the CSRF token and its session cookie,
    which Superset requires on every write when WTF_CSRF_ENABLED is on."""

    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, follow_redirects=False)
        self._csrf: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SupersetClient:
        if not settings.superset_password:
            raise SupersetApiError("BI_SUPERSET_PASSWORD is not set; run `bi-console init`")
        return cls(settings.superset_url, settings.superset_user, settings.superset_password)

    def __enter__(self) -> SupersetClient:
        self.login()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- auth

    def login(self) -> None:
        body = self._request("POST", "/api/v1/security/login", json={
            "username": self._username, "password": self._password, "provider": "db", "refresh": False,
        }, auth=False, timeout=LOGIN_TIMEOUT)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise SupersetApiError(f"POST {self.base_url}/api/v1/security/login: no access_token in the answer")
        self._http.headers["Authorization"] = f"Bearer {token}"
        csrf = self._request("GET", "/api/v1/security/csrf_token/", csrf=False)
        self._csrf = (csrf or {}).get("result")
        if not self._csrf:
            raise SupersetApiError(f"GET {self.base_url}/api/v1/security/csrf_token/: no token in the answer")
        self._http.headers["X-CSRFToken"] = self._csrf
        self._http.headers["Referer"] = self.base_url + "/"

    # -- transport

    def _request(self, method: str, path: str, *, auth: bool = True, csrf: bool = True,
                 timeout: float | None = None, **kwargs: Any) -> Any:
        url = self.base_url + path
        try:
            response = self._http.request(method, path, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs)
        except httpx.TimeoutException:
            raise SupersetUnreachable(f"{method} {url}: timed out", url=url) from None
        except httpx.HTTPError as exc:
            raise SupersetUnreachable(f"{method} {url}: {type(exc).__name__}: {exc}".splitlines()[0],
                                      url=url) from None
        if response.status_code >= 400:
            raise SupersetApiError(f"{method} {url} -> {response.status_code}: {_reason(response)}",
                                   status=response.status_code, url=url)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._request("GET", path, **kwargs)

    def post(self, path: str, payload: Any = None, **kwargs: Any) -> Any:
        return self._request("POST", path, json=payload, **kwargs)

    def put(self, path: str, payload: Any = None, **kwargs: Any) -> Any:
        return self._request("PUT", path, json=payload, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self._request("DELETE", path, **kwargs)

    def find(self, resource: str, column: str, value: Any, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Rows of /api/v1/<resource>/ whose <column> equals value (all pages)."""
        rows: list[dict[str, Any]] = []
        page = 0
        while True:
            q = rison({"filters": [{"col": column, "opr": "eq", "value": value}],
                       "page": page, "page_size": page_size})
            body = self.get(f"/api/v1/{resource}/", params={"q": q})
            batch = body.get("result", [])
            rows.extend(batch)
            if len(batch) < page_size or len(rows) >= body.get("count", 0):
                return rows
            page += 1

    def chart_data(self, chart_id: int, *, force: bool = False) -> dict[str, Any]:
        """The chart's saved query run through the cache (force=True bypasses and refills it)."""
        params = {"format": "json", "type": "full"}
        if force:  # Superset reads any non-empty value as true, so "false" must not be sent
            params["force"] = "true"
        body = self.get(f"/api/v1/chart/{chart_id}/data/", params=params, timeout=DATA_TIMEOUT)
        results = (body or {}).get("result") or []
        if not results:
            raise SupersetApiError(f"GET {self.base_url}/api/v1/chart/{chart_id}/data/: empty result")
        for result in results:
            if result.get("error"):
                raise SupersetApiError(f"GET {self.base_url}/api/v1/chart/{chart_id}/data/: {result['error']}")
        first: dict[str, Any] = results[0]
        return first


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        title = re.search(r"<title>(.*?)</title>", response.text, re.S | re.I)
        text = " ".join((title.group(1) if title else response.text).split())
        return text[:200] or response.reason_phrase
    message: Any = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("msg") or body.get("error")
        if not message and body.get("errors"):
            first = body["errors"][0]
            message = first.get("message") if isinstance(first, dict) else first
    text = message if isinstance(message, str) else json.dumps(message if message is not None else body)
    return " ".join(text.split())[:300]


# --------------------------------------------------------------------------- dashboard specs

def _metric(label: str, sql: str) -> dict[str, Any]:
    return {"expressionType": "SQL", "sqlExpression": sql, "label": label, "hasCustomLabel": True,
            "optionName": f"metric_{label}"}


COUNT = _metric("product_count", "COUNT(*)")


@dataclass(frozen=True)
class ChartSpec:
    """One chart of a managed dashboard. `requires` are the columns it needs in the dataset."""

    key: str
    title: str
    viz_type: str  # table | pie | big_number_total
    metrics: tuple[dict[str, Any], ...]
    groupby: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    optional_flags: tuple[str, ...] = ()  # boolean columns counted when present (table of flags)


@dataclass(frozen=True)
class DashboardSpec:
    title: str
    slug: str
    table: str  # TableConfig.name whose marts dataset the charts read
    charts: tuple[ChartSpec, ...] = field(default_factory=tuple)


FLAG_COLUMNS = ("is_for_sale", "is_for_web", "is_for_zero_sale", "has_analogue", "has_image", "has_component")

# The runbook's validation queries as charts on marts.<product marts relation>.
# Column names are the data contract's (shared/contract/README.md).
PRODUCT_CATALOG = DashboardSpec(
    title="Product Catalog",
    slug="product-catalog",
    table="product",
    charts=(
        ChartSpec("active", "Product Catalog: Active products", "big_number_total", (COUNT,)),
        ChartSpec("supplier", "Product Catalog: Supplier distribution", "table",
                  (COUNT, _metric("percentage", "ROUND(100.0 * COUNT(*) / SUM(COUNT(*)) OVER (), 2)")),
                  groupby=("supplier_name",), requires=("supplier_name",)),
        ChartSpec("multilingual", "Product Catalog: Multilingual coverage", "pie", (COUNT,),
                  groupby=("multilingual_status",), requires=("multilingual_status",)),
        ChartSpec("flags", "Product Catalog: Business flags", "table", (COUNT,), optional_flags=FLAG_COLUMNS),
        ChartSpec("freshness", "Product Catalog: Data freshness", "table", (
            _metric("latest_source_update", "MAX(last_modified_in_source)"),
            _metric("latest_ingest", "MAX(ingested_timestamp)"),
            _metric("data_age_minutes",
                    "ROUND(CAST(EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP - MAX(ingested_timestamp))) / 60 AS numeric), 1)"),
            COUNT,
        ), requires=("last_modified_in_source", "ingested_timestamp")),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (PRODUCT_CATALOG,)


def _chart_metrics(spec: ChartSpec, columns: set[str]) -> list[dict[str, Any]]:
    metrics = list(spec.metrics)
    for flag in spec.optional_flags:
        if flag in columns:
            metrics.append(_metric(flag, f"SUM(CASE WHEN {flag} THEN 1 ELSE 0 END)"))
    return metrics


def chart_definition(spec: ChartSpec, dataset_id: int, columns: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(form_data, query_context) for a chart: the saved query_context is what
    GET /api/v1/chart/<id>/data runs, so it must be stored with the chart."""
    metrics = _chart_metrics(spec, columns)
    datasource = f"{dataset_id}__table"
    groupby = list(spec.groupby)
    if spec.viz_type == "big_number_total":
        form_data = {"viz_type": spec.viz_type, "datasource": datasource, "metric": metrics[0],
                     "adhoc_filters": [], "header_font_size": 0.4, "subheader_font_size": 0.15,
                     "y_axis_format": "SMART_NUMBER", "time_format": "smart_date"}
    elif spec.viz_type == "pie":
        form_data = {"viz_type": spec.viz_type, "datasource": datasource, "groupby": groupby, "metric": metrics[0],
                     "adhoc_filters": [], "row_limit": 100, "sort_by_metric": True, "color_scheme": "supersetColors",
                     "show_labels": True, "label_type": "key_value_percent", "show_legend": True,
                     "legendType": "scroll", "legendOrientation": "top", "number_format": "SMART_NUMBER",
                     "labels_outside": True, "outerRadius": 70, "innerRadius": 30, "donut": False}
    else:
        form_data = {"viz_type": "table", "datasource": datasource, "query_mode": "aggregate", "groupby": groupby,
                     "metrics": metrics, "all_columns": [], "percent_metrics": [], "adhoc_filters": [],
                     "order_by_cols": [], "row_limit": 1000, "server_page_length": 10, "order_desc": True,
                     "table_timestamp_format": "smart_date", "show_cell_bars": True, "color_pn": True}
    query = {
        "columns": groupby,
        "metrics": metrics,
        "orderby": [[metrics[0], False]] if groupby else [],
        "row_limit": 1000,
        "filters": [],
        "extras": {"having": "", "where": ""},
        "annotation_layers": [],
        "series_limit": 0,
        "order_desc": True,
        "url_params": {},
        "custom_params": {},
        "custom_form_data": {},
    }
    query_context = {
        "datasource": {"id": dataset_id, "type": "table"},
        "force": False,
        "queries": [query],
        "form_data": form_data,
        "result_format": "json",
        "result_type": "full",
    }
    return form_data, query_context


# --------------------------------------------------------------------------- provisioning

def managed_tables(settings: Settings) -> list[TableConfig]:
    """Tables that get Superset datasets: those with suites, and always product when configured."""
    tables = [t for t in settings.tables if t.suites or t.name == "product"]
    return tables


def dataset_names(settings: Settings, tables: Iterable[TableConfig] | None = None) -> list[tuple[str, str]]:
    """(schema, relation) of every managed dataset: marts first, then staging, per table."""
    names: list[tuple[str, str]] = []
    for table in tables if tables is not None else managed_tables(settings):
        names.append((settings.file.marts_schema, table.marts_relation))
        names.append((settings.file.staging_schema, table.staging_relation))
    return names


def superset_pg_address(settings: Settings) -> tuple[str, int]:
    """Where the Superset server reaches PostgreSQL (a container: the compose service)."""
    return settings.superset_pg_host or settings.pg_host, settings.superset_pg_port or settings.pg_port


def reader_uri(settings: Settings) -> str:
    host, port = superset_pg_address(settings)
    return (f"postgresql+psycopg2://{quote(settings.pg_reader_user, safe='')}:"
            f"{quote(settings.pg_reader_password, safe='')}@{host}:{port}/"
            f"{quote(settings.pg_database, safe='')}")


def find_database(client: SupersetClient) -> dict[str, Any] | None:
    rows = [r for r in client.find("database", "database_name", DATABASE_NAME)
            if r.get("database_name") == DATABASE_NAME]
    if not rows:
        return None
    database: dict[str, Any] = client.get(f"/api/v1/database/{min(r['id'] for r in rows)}")["result"]
    return database


def ensure_database(client: SupersetClient, settings: Settings, log: Log = _noop) -> int:
    payload = {
        "database_name": DATABASE_NAME,
        "sqlalchemy_uri": reader_uri(settings),
        "expose_in_sqllab": True,
        "allow_dml": False,
        "allow_ctas": False,
        "allow_cvas": False,
        "allow_run_async": False,
        "allow_file_upload": False,
        "extra": json.dumps({
            "allows_virtual_table_explore": True,
            "engine_params": {"connect_args": {"application_name": "superset-bi-console", "connect_timeout": 10}},
        }),
    }
    existing = find_database(client)
    if existing is None:
        payload["cache_timeout"] = DEFAULT_DATABASE_CACHE_TIMEOUT
        created = client.post("/api/v1/database/", payload)
        log(f"superset: created database connection {DATABASE_NAME!r} (id {created['id']}) as "
            f"{settings.pg_reader_user}@{':'.join(map(str, superset_pg_address(settings)))}/{settings.pg_database}")
        return int(created["id"])
    # The operator's cache timeout is kept; everything else is brought back to the settings.
    client.put(f"/api/v1/database/{existing['id']}", payload)
    log(f"superset: updated database connection {DATABASE_NAME!r} (id {existing['id']})")
    return int(existing["id"])


def find_dataset(client: SupersetClient, database_id: int, schema: str, table: str) -> dict[str, Any] | None:
    rows = [r for r in client.find("dataset", "table_name", table)
            if r.get("table_name") == table and r.get("schema") == schema
            and (r.get("database") or {}).get("id") == database_id]
    return min(rows, key=lambda r: r["id"]) if rows else None


def ensure_dataset(client: SupersetClient, database_id: int, schema: str, table: str, log: Log = _noop) -> int:
    existing = find_dataset(client, database_id, schema, table)
    if existing is None:
        created = client.post("/api/v1/dataset/", {"database": database_id, "schema": schema, "table_name": table})
        log(f"superset: created dataset {schema}.{table} (id {created['id']})")
        return int(created["id"])
    # Columns follow the dbt models: pick up added or removed columns.
    client.put(f"/api/v1/dataset/{existing['id']}/refresh")
    log(f"superset: refreshed dataset {schema}.{table} (id {existing['id']})")
    return int(existing["id"])


def dataset_columns(client: SupersetClient, dataset_id: int) -> set[str]:
    body = client.get(f"/api/v1/dataset/{dataset_id}")
    return {c["column_name"] for c in body["result"].get("columns", [])}


def find_dashboard(client: SupersetClient, title: str) -> dict[str, Any] | None:
    rows = [r for r in client.find("dashboard", "dashboard_title", title) if r.get("dashboard_title") == title]
    return min(rows, key=lambda r: r["id"]) if rows else None


def find_chart(client: SupersetClient, name: str, dataset_id: int | None = None) -> dict[str, Any] | None:
    rows = [r for r in client.find("chart", "slice_name", name) if r.get("slice_name") == name]
    if dataset_id is not None:
        same = [r for r in rows if r.get("datasource_id") == dataset_id]
        rows = same or rows
    return min(rows, key=lambda r: r["id"]) if rows else None


def dashboard_charts(client: SupersetClient, dashboard_id: int) -> list[dict[str, Any]]:
    charts: list[dict[str, Any]] = client.get(f"/api/v1/dashboard/{dashboard_id}/charts").get("result", [])
    return charts


def _position(title: str, charts: list[tuple[int, str]]) -> dict[str, Any]:
    position: dict[str, Any] = {
        "DASHBOARD_VERSION_KEY": "v2",
        "ROOT_ID": {"type": "ROOT", "id": "ROOT_ID", "children": ["GRID_ID"]},
        "GRID_ID": {"type": "GRID", "id": "GRID_ID", "children": [], "parents": ["ROOT_ID"]},
        "HEADER_ID": {"type": "HEADER", "id": "HEADER_ID", "meta": {"text": title}},
    }
    for row_index in range(0, len(charts), 2):
        row_id = f"ROW-bi-console-{row_index // 2}"
        position["GRID_ID"]["children"].append(row_id)
        row: dict[str, Any] = {"type": "ROW", "id": row_id, "children": [], "parents": ["ROOT_ID", "GRID_ID"],
               "meta": {"background": "BACKGROUND_TRANSPARENT"}}
        for chart_id, name in charts[row_index:row_index + 2]:
            key = f"CHART-bi-console-{chart_id}"
            row["children"].append(key)
            position[key] = {"type": "CHART", "id": key, "children": [],
                             "parents": ["ROOT_ID", "GRID_ID", row_id],
                             "meta": {"chartId": chart_id, "sliceName": name, "width": 6, "height": 50}}
        position[row_id] = row
    return position


def ensure_dashboard(client: SupersetClient, spec: DashboardSpec, dataset_id: int, log: Log = _noop) -> dict[str, Any]:
    """The dashboard and its charts, created or brought back to the spec. Charts that
    someone else added to the dashboard are kept, after the managed ones."""
    dashboard = find_dashboard(client, spec.title)
    if dashboard is None:
        created = client.post("/api/v1/dashboard/", {"dashboard_title": spec.title, "slug": spec.slug,
                                                     "published": True})
        dashboard_id = int(created["id"])
        log(f"superset: created dashboard {spec.title!r} (id {dashboard_id})")
    else:
        dashboard_id = int(dashboard["id"])
    columns = dataset_columns(client, dataset_id)
    managed: list[tuple[int, str]] = []
    skipped: list[str] = []
    for chart in spec.charts:
        missing = [c for c in chart.requires if c not in columns]
        if missing:
            skipped.append(chart.title)
            log(f"superset: chart {chart.title!r} skipped: dataset lacks {', '.join(missing)}")
            continue
        form_data, query_context = chart_definition(chart, dataset_id, columns)
        existing = find_chart(client, chart.title, dataset_id)
        payload = {
            "slice_name": chart.title,
            "viz_type": form_data["viz_type"],
            "datasource_id": dataset_id,
            "datasource_type": "table",
            "params": json.dumps(form_data),
            "query_context": json.dumps(query_context),
            "query_context_generation": True,
        }
        if existing is None:
            payload["dashboards"] = [dashboard_id]
            chart_id = int(client.post("/api/v1/chart/", payload)["id"])
            log(f"superset: created chart {chart.title!r} (id {chart_id})")
        else:
            chart_id = int(existing["id"])
            current = client.get(f"/api/v1/chart/{chart_id}")["result"]
            payload["dashboards"] = sorted({d["id"] for d in current.get("dashboards", [])} | {dashboard_id})
            client.put(f"/api/v1/chart/{chart_id}", payload)
            log(f"superset: updated chart {chart.title!r} (id {chart_id})")
        managed.append((chart_id, chart.title))
    managed_ids = {cid for cid, _ in managed}
    others = [(int(c["id"]), c.get("slice_name", "")) for c in dashboard_charts(client, dashboard_id)
              if int(c["id"]) not in managed_ids]
    position = _position(spec.title, managed + sorted(others))
    metadata = {"positions": position, "refresh_frequency": 0, "timed_refresh_immune_slices": [],
                "expanded_slices": {}, "color_scheme": "", "label_colors": {}, "cross_filters_enabled": False}
    client.put(f"/api/v1/dashboard/{dashboard_id}", {
        "dashboard_title": spec.title,
        "slug": spec.slug,
        "published": True,
        "position_json": json.dumps(position),
        "json_metadata": json.dumps(metadata),
    })
    return {"id": dashboard_id, "title": spec.title, "charts": [cid for cid, _ in managed],
            "other_charts": [cid for cid, _ in others], "skipped_charts": skipped,
            "url": f"{client.base_url}/superset/dashboard/{spec.slug}/"}


def provision(settings: Settings, log: Log = _noop) -> dict[str, Any]:
    """Database connection, datasets and dashboards, created or updated in place.

    Returns {"database_id", "datasets": {"schema.table": id}, "missing": [...],
    "dashboards": [{"id", "title", "charts", ...}]}. A dataset whose relation does not
    exist yet (table configured, dbt model not built) is reported in "missing"; a
    missing relation behind a managed dashboard is an error.
    """
    with SupersetClient.from_settings(settings) as client:
        database_id = ensure_database(client, settings, log)
        datasets: dict[str, int] = {}
        missing: list[str] = []
        tables = managed_tables(settings)
        dashboard_tables = {spec.table for spec in DASHBOARDS}
        for table in tables:
            for schema, relation in dataset_names(settings, [table]):
                name = f"{schema}.{relation}"
                try:
                    datasets[name] = ensure_dataset(client, database_id, schema, relation, log)
                except SupersetApiError as exc:
                    if table.name in dashboard_tables or exc.status not in (404, 422):
                        raise
                    missing.append(name)
                    log(f"superset: dataset {name} not created: {exc}")
        dashboards = []
        for spec in DASHBOARDS:
            dashboard_table = next((t for t in tables if t.name == spec.table), None)
            if dashboard_table is None:
                continue
            marts = f"{settings.file.marts_schema}.{dashboard_table.marts_relation}"
            dashboards.append(ensure_dashboard(client, spec, datasets[marts], log))
        return {"database_id": database_id, "datasets": datasets, "missing": missing, "dashboards": dashboards}


# --------------------------------------------------------------------------- cache

def _parse_dttm(value: Any) -> datetime | None:
    """Superset's cached_dttm is naive UTC ISO text."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _resolve_datasets(client: SupersetClient, settings: Settings, datasets: Iterable[str] | None,
                      database_id: int) -> dict[str, int]:
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


def invalidate_and_warm(settings: Settings, datasets: Iterable[str] | None = None, log: Log = _noop) -> dict[str, Any]:
    """Drop the cached chart data of `datasets` ("schema.table"; None = every managed
    dataset) and re-run every chart built on them with force=true.

    Returns {"datasets": [...], "invalidated": <datasets>, "charts_warmed": n,
    "charts_failed": [{"id", "name", "error"}], "seconds": s}.
    """
    started = time.monotonic()
    with SupersetClient.from_settings(settings) as client:
        database = find_database(client)
        if database is None:
            raise SupersetApiError(f"{client.base_url}: database connection {DATABASE_NAME!r} does not exist; "
                                   "provision Superset first")
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
        return {"datasets": list(found), "invalidated": len(uids), "charts_warmed": warmed,
                "charts_failed": failed, "seconds": round(time.monotonic() - started, 2)}


def chart_cache_entry(chart_id: int, name: str, result: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(timezone.utc)
    cached_at = _parse_dttm(result.get("cached_dttm")) if result.get("is_cached") else None
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
            "database": None if database is None else {
                "id": database["id"], "name": database.get("database_name"),
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
            raise SupersetApiError(f"{client.base_url}: database connection {DATABASE_NAME!r} does not exist; "
                                   "provision Superset first")
        client.put(f"/api/v1/database/{database['id']}", {"cache_timeout": seconds})
        return {"id": database["id"], "name": DATABASE_NAME, "cache_timeout": seconds}
