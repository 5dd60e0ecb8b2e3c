"""The `bi` step: make Superset show what the marts hold now. `run_bi_refresh`
invalidates the cached chart data of the managed datasets and re-runs (warms) every chart
built on them, then reports the dashboard's cache age. Why the BI would show stale data
is diagnosed by pipeline/checks/stale_bi.py."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit

from pipeline.config import Settings, TableConfig
from pipeline.process.log_sink import Log, no_log
from pipeline.steps import StepSkipped
from pipeline.stores.db import ServiceUnreachable
from pipeline.superset import api
from pipeline.superset.install import health


class SupersetStopped(StepSkipped, ServiceUnreachable):
    """Nothing listens at BI_SUPERSET_URL, or Superset is not enabled: Superset is optional, so a
    refresh skips its BI step with a warning, while `bi refresh` (which asks for it) still fails."""


def superset_stopped(settings: Settings) -> bool:
    """Superset's port refuses connections: nothing runs there. A timeout or an unknown host
    is an outage, not a stop, and stays a failure."""
    parts = urlsplit(settings.superset_url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=2.0).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _stopped(settings: Settings) -> SupersetStopped:
    start = "`bi-console stack start superset` starts it"
    # The command's line starts with the setting, as every unreachable service's does.
    return SupersetStopped(
        f"BI_SUPERSET_URL={settings.superset_url}: superset stopped (nothing listens there; {start})",
        notice=f"superset stopped (nothing listens at BI_SUPERSET_URL={settings.superset_url}; {start})",
    )


def run_bi_refresh(
    settings: Settings, log: Log = no_log, *, tables: list[str] | None = None, provision_missing: bool = True
) -> dict[str, Any]:
    """Invalidate + warm, for every managed dataset (or those of `tables`).

    Returns counts: datasets_invalidated, charts_warmed, charts_failed,
    cache_max_age_seconds, cache_timeout. Raises SupersetStopped (a ServiceUnreachable that a
    refresh skips) when nothing listens there, ServiceUnreachable when Superset does not
    answer, RuntimeError when a chart of a managed dashboard cannot be computed.
    """
    ok, evidence = health(settings)
    if not ok:
        if superset_stopped(settings):
            raise _stopped(settings)
        raise ServiceUnreachable(f"BI_SUPERSET_URL={settings.superset_url}: Superset is not reachable ({evidence})")
    with api.SupersetClient.from_settings(settings) as client:
        missing = api.find_database(client) is None or any(
            api.find_dashboard(client, spec.title) is None for spec in api.DASHBOARDS
        )
    if missing:
        if not provision_missing:
            raise RuntimeError(
                f"Superset at {settings.superset_url} is not provisioned "
                f"(no {api.DATABASE_NAME!r} connection or dashboard)"
            )
        log("bi: Superset is not provisioned yet; provisioning")
        api.provision(settings, log)
    datasets = None
    if tables is not None:
        selected: list[TableConfig] = [settings.table(name) for name in tables]
        datasets = [f"{schema}.{relation}" for schema, relation in api.dataset_names(settings, selected)]
    result = api.invalidate_and_warm(settings, datasets, log)
    status = api.cache_status(settings)
    managed = {c["id"] for c in status["charts"]}
    broken = [f for f in result["charts_failed"] if f["id"] in managed]
    if broken:
        first = broken[0]
        raise RuntimeError(
            f"bi: {len(broken)} dashboard chart(s) could not be refreshed; {first['name']}: {first['error']}"
        )
    database = status.get("database") or {}
    counts = {
        "datasets_invalidated": result["invalidated"],
        "charts_warmed": result["charts_warmed"],
        "charts_failed": len(result["charts_failed"]),
        "cache_max_age_seconds": status["max_age_seconds"],
        "cache_timeout": database.get("cache_timeout"),
    }
    log(f"bi: {counts['datasets_invalidated']} dataset(s) invalidated, {counts['charts_warmed']} chart(s) warmed")
    return counts
