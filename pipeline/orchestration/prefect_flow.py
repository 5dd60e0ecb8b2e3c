"""The runbook's "Prefect integration (future)": the refresh steps as Prefect tasks.

Needs the optional extra `prefect` (`pip install -e .[prefect]`). The flow runs the same
library functions as `bi-console refresh`, one task per step and table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from prefect import flow, get_run_logger, task

from pipeline.config import Settings, load_settings
from pipeline.orchestration.plan import STEP_BY_NAME, StepContext, plan
from pipeline.steps.transform import DbtProject


def _log() -> Callable[[str], None]:
    logger = get_run_logger()
    return lambda line: logger.info(line)


@task(retries=2, retry_delay_seconds=10)
def table_step_task(settings: Settings, step_name: str, table_name: str, full: bool) -> dict[str, Any]:
    """One per-table step of the refresh's plan, run by the refresh's own Step."""
    table = settings.table(table_name)
    resets: list[str] = []

    def reset(line: str) -> None:  # a topic reset starts a new epoch; nothing is re-read or deleted
        resets.append(line)
        get_run_logger().warning(line)

    context = StepContext(settings, [table], table, {table_name} if full else set(), _log(), notice=reset)
    counts = STEP_BY_NAME[step_name].run(context)
    return {**counts, "topic_resets": resets} if resets else counts


TASK_NAMES = {"ingest": "ingest_kafka_to_s3", "load": "load_bronze_from_s3"}


@task(name="run_dbt_transformations")
def dbt_run_task(settings: Settings, selector: str, full: bool) -> dict[str, Any]:
    result = DbtProject(settings, _log()).run(selector, full_refresh=full)
    if not result.success:
        raise RuntimeError(f"dbt run failed: {[n.name for n in result.failed] or result.error}")
    return result.counts


@task(name="run_dbt_tests")
def dbt_test_task(settings: Settings, selector: str) -> dict[str, Any]:
    result = DbtProject(settings, _log()).test(selector, within_selection=True)
    return {"success": result.success, **result.counts, "failed": [n.name for n in result.failed]}


@task(name="send_alert")
def alert_task(settings: Settings, message: str) -> None:
    if settings.alert_webhook_url:
        httpx.post(settings.alert_webhook_url, json={"text": message}, timeout=10)
    get_run_logger().error(message)


@flow(name="sync_product_to_bi")
def sync_product_to_bi(full: bool = False, settings: Settings | None = None) -> dict[str, Any]:
    """Kafka -> S3 -> bronze -> dbt run -> dbt test for every configured table."""
    settings = settings or load_settings()
    bronze = {}
    # The refresh's own plan, so the flow runs the tables and steps in the order a refresh does.
    for entry in plan(settings, list(TASK_NAMES)):
        counts = table_step_task.with_options(name=TASK_NAMES[entry.step.name])(
            settings, entry.step.name, entry.table, full
        )
        if entry.step.name == "load":
            bronze[entry.table] = counts
    selector = " ".join(t.dbt_selector for t in settings.tables)
    dbt_run = dbt_run_task(settings, selector, full)
    dbt_test = dbt_test_task(settings, selector)
    if not dbt_test["success"]:
        alert_task(settings, f"dbt tests failed: {', '.join(dbt_test['failed'])}")
    return {"bronze": bronze, "dbt_run": dbt_run, "dbt_test": dbt_test}
