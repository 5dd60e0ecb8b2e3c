"""The "BI shows stale data" diagnosis (the runbook's "Superset Shows Stale Data"): is
Superset up, logged in, connected as the reader, are the datasets and the dashboard there,
does the cache show what the marts hold, and does the cache expire in time. Each answer is
a `Check`; one that could not run because an earlier one failed is skipped."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg2
from psycopg2 import sql

from pipeline.checks.model import Check
from pipeline.checks.probes import superset_health
from pipeline.config import Settings, TableConfig
from pipeline.stores.db import connect_reader, one_row
from pipeline.superset import api
from pipeline.superset.cache import parse_dttm

FRESHNESS_CHART = "freshness"
# Superset's default when neither chart, dataset nor database sets a timeout
# (DATA_CACHE_CONFIG's CACHE_DEFAULT_TIMEOUT written by install.py).
DEFAULT_TIMEOUT = api.DEFAULT_DATABASE_CACHE_TIMEOUT


def _to_datetime(value: Any) -> datetime | None:
    """A timestamp as Superset's JSON gives it (epoch ms, or ISO text) or as psycopg2 does."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value / 1000, tz=timezone.utc)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _fmt(moment: datetime | None) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "never"


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _marts_state(settings: Settings, table: TableConfig) -> tuple[datetime | None, int]:
    """max(ingested_timestamp) and count(*) of the marts relation, read as the BI reader."""
    if table.marts_relation is None:
        raise RuntimeError(f"table {table.name!r} has no marts layer (tables.marts_relation is not set)")
    conn = connect_reader(settings)  # ServiceUnreachable naming BI_PG_READER_PASSWORD / _USER
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT max(ingested_timestamp), count(*) FROM {}.{}").format(
                    sql.Identifier(settings.file.marts_schema), sql.Identifier(table.marts_relation)
                )
            )
            latest, count = one_row(cur)
        return _to_datetime(latest), int(count)
    finally:
        conn.close()


def _check(name: str, ok: bool | None, evidence: str, fix: str = "") -> Check:
    """ok None: could not run, because an earlier check failed."""
    return Check(name, "pass" if ok is True else "fail" if ok is False else "skip", evidence, fix, "bi")


def diagnose_stale(settings: Settings) -> list[Check]:
    """Why would the BI show stale data?"""
    checks: list[Check] = []
    spec = api.PRODUCT_CATALOG
    table = next((t for t in settings.tables if t.name == spec.table), None)
    names = [f"{s}.{r}" for s, r in api.dataset_names(settings)]
    later = [
        "Superset login",
        "Database connection",
        *[f"Dataset {n}" for n in names],
        f"Dashboard {spec.title}",
        "Cache vs marts data",
        "Cache timeout",
    ]

    def skip_rest(reason: str) -> list[Check]:
        done = {c.name for c in checks}
        return checks + [_check(n, None, f"not checked: {reason}") for n in later if n not in done]

    ok, evidence = superset_health(settings)
    checks.append(
        _check(
            "Superset reachable", ok, evidence, "start the superset service (Services panel) or check BI_SUPERSET_URL"
        )
    )
    if not ok:
        return skip_rest("Superset is not reachable")

    try:
        client = api.SupersetClient.from_settings(settings)
        client.login()
    except api.SupersetApiError as exc:
        checks.append(
            _check(
                "Superset login",
                False,
                str(exc),
                "BI_SUPERSET_USER / BI_SUPERSET_PASSWORD must match the Superset admin "
                "(re-run the Superset install step to reset it)",
            )
        )
        return skip_rest("cannot log in to Superset")
    checks.append(_check("Superset login", True, f"logged in as {settings.superset_user}"))

    with client:
        # -- database connection
        database = api.find_database(client)
        database_timeout: int | None = None
        if database is None:
            checks.append(
                _check(
                    "Database connection",
                    False,
                    f"no connection named {api.DATABASE_NAME!r}",
                    "provision Superset (creates the connection, datasets and dashboard)",
                )
            )
            return skip_rest(f"no {api.DATABASE_NAME!r} connection")
        database_timeout = database.get("cache_timeout")
        try:
            uri = client.get(f"/api/v1/database/{database['id']}/connection")["result"]["sqlalchemy_uri"]
            user = unquote(urlsplit(uri).username or "?")
            schemas = client.get(
                f"/api/v1/database/{database['id']}/schemas/", params={"q": api.rison({"force": True})}
            )["result"]
        except api.SupersetApiError as exc:
            checks.append(
                _check(
                    "Database connection",
                    False,
                    f"{api.DATABASE_NAME!r} (id {database['id']}) cannot connect: {exc}",
                    "check PostgreSQL is up and BI_PG_READER_PASSWORD; re-provision Superset",
                )
            )
            return skip_rest("the database connection does not work")
        as_reader = user == settings.pg_reader_user
        wanted = {settings.file.marts_schema, settings.file.staging_schema}
        checks.append(
            _check(
                "Database connection",
                as_reader and wanted <= set(schemas),
                f"{api.DATABASE_NAME!r} (id {database['id']}) connects as {user}; sees schemas "
                f"{', '.join(sorted(set(schemas) & (wanted | {settings.file.bronze_schema}))) or 'none of ours'}",
                "re-provision Superset so that it uses the read-only role BI_PG_READER_USER"
                if not as_reader
                else "grant the reader USAGE and SELECT on the staging and marts schemas",
            )
        )

        # -- datasets
        dataset_ids: dict[str, int] = {}
        for name in names:
            schema, _, relation = name.rpartition(".")
            row = api.find_dataset(client, int(database["id"]), schema, relation)
            if row is None:
                checks.append(_check(f"Dataset {name}", False, "no such dataset in Superset", "provision Superset"))
            else:
                dataset_ids[name] = int(row["id"])
                timeout = client.get(f"/api/v1/dataset/{row['id']}")["result"].get("cache_timeout")
                extra = f"; own cache_timeout {timeout} s overrides the connection's" if timeout is not None else ""
                checks.append(_check(f"Dataset {name}", True, f"dataset id {row['id']}{extra}"))

        # -- dashboard
        dashboard = api.find_dashboard(client, spec.title)
        charts: list[dict[str, Any]] = []
        if dashboard is None:
            checks.append(_check(f"Dashboard {spec.title}", False, "no such dashboard", "provision Superset"))
        else:
            charts = api.dashboard_charts(client, int(dashboard["id"]))
            checks.append(
                _check(
                    f"Dashboard {spec.title}",
                    bool(charts),
                    f"id {dashboard['id']}, {len(charts)} chart(s)",
                    "provision Superset",
                )
            )

        # -- cache vs data
        checks.append(_cache_vs_data(client, settings, spec, table, charts))

        # -- cache timeout
        effective = database_timeout if database_timeout is not None else DEFAULT_TIMEOUT
        limit = settings.file.thresholds.freshness_max_age_minutes * 60
        source = "connection" if database_timeout is not None else "Superset default"
        if effective == 0:
            ok, note = False, "0: cached entries never expire"
        elif effective < 0:
            ok, note = True, "caching disabled"
        else:
            ok, note = effective <= limit, f"{effective} s ({source})"
        checks.append(
            _check(
                "Cache timeout",
                ok,
                f"{api.DATABASE_NAME!r} cache timeout {note}; freshness threshold {limit:.0f} s",
                f"lower the connection's cache timeout to at most {limit:.0f} s "
                "(Superset settings, or bi-console's cache timeout action)",
            )
        )
    return checks


def _cache_vs_data(
    client: api.SupersetClient,
    settings: Settings,
    spec: api.DashboardSpec,
    table: TableConfig | None,
    charts: list[dict[str, Any]],
) -> Check:
    name = "Cache vs marts data"
    chart_spec = next(c for c in spec.charts if c.key == FRESHNESS_CHART)
    chart = next((c for c in charts if c.get("slice_name") == chart_spec.title), None)
    if table is None or chart is None:
        return _check(name, None, f"not checked: no {chart_spec.title!r} chart or no {spec.table!r} table configured")
    try:
        live_latest, live_count = _marts_state(settings, table)
    except (RuntimeError, psycopg2.Error) as exc:
        return _check(
            name,
            None,
            f"not checked: cannot read the marts: {str(exc).strip().splitlines()[0]}",
            "check PostgreSQL and the reader's grants",
        )
    try:
        result = client.chart_data(int(chart["id"]))
    except api.SupersetApiError as exc:
        return _check(
            name,
            False,
            f"the dashboard's freshness chart fails: {exc}",
            "fix the dataset (Superset shows the SQL error), then run the bi step",
        )
    row = (result.get("data") or [{}])[0]
    shown_latest = _to_datetime(row.get("latest_ingest"))
    shown_count = row.get("product_count")
    now = datetime.now(timezone.utc)
    cached_at = parse_dttm(result.get("cached_dttm")) if result.get("is_cached") else None
    if cached_at is None:
        cache_note = "computed just now (not from the cache)"
    else:
        remaining = ""
        timeout = result.get("cache_timeout")
        if isinstance(timeout, (int, float)) and timeout > 0:
            remaining = f", expires in {_ago(max(0.0, timeout - (now - cached_at).total_seconds()))}"
        cache_note = f"cached {_fmt(cached_at)} ({_ago((now - cached_at).total_seconds())} ago{remaining})"
    same_time = (shown_latest is None and live_latest is None) or (
        shown_latest is not None and live_latest is not None and abs((shown_latest - live_latest).total_seconds()) < 1.0
    )
    same_count = shown_count is None or int(shown_count) == live_count
    evidence = (
        f"dashboard shows {shown_count} rows, latest ingest {_fmt(shown_latest)}, {cache_note}; "
        f"{settings.file.marts_schema}.{table.marts_relation} has {live_count} rows, "
        f"latest ingest {_fmt(live_latest)}"
    )
    if same_time and same_count:
        return _check(name, True, evidence)
    if cached_at is not None and live_latest is not None and cached_at < live_latest:
        evidence += f"; the cache predates the data by {_ago((live_latest - cached_at).total_seconds())}"
    return _check(name, False, evidence, "run the bi step (invalidate + warm), or Force Refresh the dashboard")
