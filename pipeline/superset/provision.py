"""Idempotent provisioning: the database connection, the datasets and the dashboards.

Everything is looked up by name before it is created, so running `provision` again
updates the database connection, the datasets and the dashboard instead of adding
copies. Superset reaches PostgreSQL with the read-only role (BI_PG_READER_*), never
with the pipeline's owner role.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.config import Settings, TableConfig
from pipeline.config.contracts import contract_path
from pipeline.process.log_sink import Log, no_log
from pipeline.superset.client import SupersetApiError, SupersetClient
from pipeline.superset.dashboards import DASHBOARDS, DashboardSpec, chart_definition

DATABASE_NAME = "BI Platform Analytics"
DEFAULT_DATABASE_CACHE_TIMEOUT = 300


# --------------------------------------------------------------------------- provisioning


def managed_tables(settings: Settings, dbt_dir: Path | None = None) -> list[TableConfig]:
    """Tables that get Superset datasets: the validated ones (those with suites, or with a
    source contract, whose suite validates them), so that no chart reads a table no quality
    check covers, and those a managed dashboard reads."""
    dashboard_tables = {spec.table for spec in DASHBOARDS}
    contracts = dbt_dir or settings.dbt_project_dir
    return [
        t
        for t in settings.tables
        if t.suites or t.name in dashboard_tables or contract_path(contracts, t.name).is_file()
    ]


def dataset_names(settings: Settings, tables: Iterable[TableConfig] | None = None) -> list[tuple[str, str]]:
    """(schema, relation) of every managed dataset: marts first, then staging, per table."""
    names: list[tuple[str, str]] = []
    for table in tables if tables is not None else managed_tables(settings):
        if table.marts_relation is not None:
            names.append((settings.file.marts_schema, table.marts_relation))
        names.append((settings.file.staging_schema, table.staging_relation))
    return names


def superset_pg_address(settings: Settings) -> tuple[str, int]:
    """Where the Superset server reaches PostgreSQL (a container: the compose service)."""
    return settings.superset_pg_host or settings.pg_host, settings.superset_pg_port or settings.pg_port


def reader_uri(settings: Settings) -> str:
    host, port = superset_pg_address(settings)
    return (
        f"postgresql+psycopg2://{quote(settings.pg_reader_user, safe='')}:"
        f"{quote(settings.pg_reader_password, safe='')}@{host}:{port}/"
        f"{quote(settings.pg_database, safe='')}"
    )


def find_database(client: SupersetClient) -> dict[str, Any] | None:
    rows = [
        r for r in client.find("database", "database_name", DATABASE_NAME) if r.get("database_name") == DATABASE_NAME
    ]
    if not rows:
        return None
    database: dict[str, Any] = client.get(f"/api/v1/database/{min(r['id'] for r in rows)}")["result"]
    return database


def ensure_database(client: SupersetClient, settings: Settings, log: Log = no_log) -> int:
    payload = {
        "database_name": DATABASE_NAME,
        "sqlalchemy_uri": reader_uri(settings),
        "expose_in_sqllab": True,
        "allow_dml": False,
        "allow_ctas": False,
        "allow_cvas": False,
        "allow_run_async": False,
        "allow_file_upload": False,
        "extra": json.dumps(
            {
                "allows_virtual_table_explore": True,
                "engine_params": {"connect_args": {"application_name": "superset-bi-console", "connect_timeout": 10}},
            }
        ),
    }
    existing = find_database(client)
    if existing is None:
        payload["cache_timeout"] = DEFAULT_DATABASE_CACHE_TIMEOUT
        created = client.post("/api/v1/database/", payload)
        log(
            f"superset: created database connection {DATABASE_NAME!r} (id {created['id']}) as "
            f"{settings.pg_reader_user}@{':'.join(map(str, superset_pg_address(settings)))}/{settings.pg_database}"
        )
        return int(created["id"])
    # The operator's cache timeout is kept; everything else is brought back to the settings.
    client.put(f"/api/v1/database/{existing['id']}", payload)
    log(f"superset: updated database connection {DATABASE_NAME!r} (id {existing['id']})")
    return int(existing["id"])


def find_dataset(client: SupersetClient, database_id: int, schema: str, table: str) -> dict[str, Any] | None:
    rows = [
        r
        for r in client.find("dataset", "table_name", table)
        if r.get("table_name") == table
        and r.get("schema") == schema
        and (r.get("database") or {}).get("id") == database_id
    ]
    return min(rows, key=lambda r: r["id"]) if rows else None


def ensure_dataset(client: SupersetClient, database_id: int, schema: str, table: str, log: Log = no_log) -> int:
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
        row: dict[str, Any] = {
            "type": "ROW",
            "id": row_id,
            "children": [],
            "parents": ["ROOT_ID", "GRID_ID"],
            "meta": {"background": "BACKGROUND_TRANSPARENT"},
        }
        for chart_id, name in charts[row_index : row_index + 2]:
            key = f"CHART-bi-console-{chart_id}"
            row["children"].append(key)
            position[key] = {
                "type": "CHART",
                "id": key,
                "children": [],
                "parents": ["ROOT_ID", "GRID_ID", row_id],
                "meta": {"chartId": chart_id, "sliceName": name, "width": 6, "height": 50},
            }
        position[row_id] = row
    return position


def ensure_dashboard(client: SupersetClient, spec: DashboardSpec, dataset_id: int, log: Log = no_log) -> dict[str, Any]:
    """The dashboard and its charts, created or brought back to the spec. Charts that
    someone else added to the dashboard are kept, after the managed ones."""
    dashboard = find_dashboard(client, spec.title)
    if dashboard is None:
        created = client.post(
            "/api/v1/dashboard/", {"dashboard_title": spec.title, "slug": spec.slug, "published": True}
        )
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
    others = [
        (int(c["id"]), c.get("slice_name", ""))
        for c in dashboard_charts(client, dashboard_id)
        if int(c["id"]) not in managed_ids
    ]
    position = _position(spec.title, managed + sorted(others))
    metadata = {
        "positions": position,
        "refresh_frequency": 0,
        "timed_refresh_immune_slices": [],
        "expanded_slices": {},
        "color_scheme": "",
        "label_colors": {},
        "cross_filters_enabled": False,
    }
    client.put(
        f"/api/v1/dashboard/{dashboard_id}",
        {
            "dashboard_title": spec.title,
            "slug": spec.slug,
            "published": True,
            "position_json": json.dumps(position),
            "json_metadata": json.dumps(metadata),
        },
    )
    return {
        "id": dashboard_id,
        "title": spec.title,
        "charts": [cid for cid, _ in managed],
        "other_charts": [cid for cid, _ in others],
        "skipped_charts": skipped,
        "url": f"{client.base_url}/superset/dashboard/{spec.slug}/",
    }


def provision(settings: Settings, log: Log = no_log) -> dict[str, Any]:
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
            if dashboard_table is None or dashboard_table.marts_relation is None:
                continue
            marts = f"{settings.file.marts_schema}.{dashboard_table.marts_relation}"
            dashboards.append(ensure_dashboard(client, spec, datasets[marts], log))
        return {"database_id": database_id, "datasets": datasets, "missing": missing, "dashboards": dashboards}
