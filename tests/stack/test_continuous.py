"""Issue 20: the continuous runner (`bi-console run`) on the embedded stack, with real
Debezium on the demo source. The tests run in order on one runner: it carries source commits
to the marts, `--check` reads its heartbeat, a manual refresh pauses it, and a `kill -9`
mid-flow is a failed check until a restart resumes it without losing or doubling an event."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from pipeline.stores.kafka import topic_offsets
from tests.support import REPO

# Short cadences, so that the quality checks and a dead heartbeat show within a test.
RUNNER_SECTION = """[runner]
object_max_age_seconds = 0.5
validate_every_seconds = 5
bi_debounce_seconds = 0
heartbeat_every_seconds = 1
heartbeat_timeout_seconds = 6
freshness_objective_seconds = 20
pause_wait_seconds = 60
"""
_STATE: dict = {}


def runner_config(stack) -> Path:
    shipped = Path(stack.settings.config_file).read_text()
    text = re.sub(r"(?ms)^\[runner\]\n.*?(?=^\[)", RUNNER_SECTION + "\n", shipped)
    assert "heartbeat_timeout_seconds = 6" in text
    path = Path(stack.settings.data_dir).parent / "bi-console.continuous.toml"
    path.write_text(text)
    return path


def start_runner(stack) -> subprocess.Popen:
    log = open(Path(stack.settings.data_dir).parent / "runner.log", "a")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BI_")}
    env["BI_CONFIG_FILE"] = str(_STATE["config"])
    runner = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "--env-file", str(stack.env_file), "run"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    _STATE["runner"] = runner
    return runner


def runner_log(stack) -> str:
    return (Path(stack.settings.data_dir).parent / "runner.log").read_text()


def cli(stack, *args: str, timeout: float = 300):
    return stack.cli(*args, env={"BI_CONFIG_FILE": str(_STATE["config"])}, timeout=timeout)


def heartbeat(stack) -> dict:
    rows = stack.psql(
        "SELECT state, extract(epoch FROM now() - beat_at)::float8, detail FROM bi_console.runner_heartbeat"
    )
    return {"state": rows[0][0], "age": rows[0][1], **rows[0][2]} if rows else {}


def wait_for(predicate, timeout: float, what: str, stack=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    tail = runner_log(stack)[-3000:] if stack is not None else ""
    raise AssertionError(f"{what}: not within {timeout:.0f}s\n{tail}")


def source_update(stack, product_ids: list[int]) -> float:
    """One source transaction; the clock reading just before its COMMIT (epoch seconds)."""
    conn = psycopg2.connect(**stack.settings.source_dsn())
    try:
        with conn.cursor() as cur:
            cur.execute(
                'UPDATE dbo."Product" SET "Weight" = round((random() * 20)::numeric, 3), '
                '"Updated" = now()::timestamp WHERE "ID" = ANY(%s)',
                (product_ids,),
            )
            assert cur.rowcount == len(product_ids)
            cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
            committed = float(cur.fetchone()[0])
        conn.commit()
        return committed
    finally:
        conn.close()


def in_marts(stack, committed: float) -> bool:
    newest = stack.psql("SELECT extract(epoch FROM max(source_timestamp))::float8 FROM marts.dim_product")[0][0]
    return newest is not None and round(newest * 1000) >= math.floor(committed * 1000)


def source_products(stack) -> list[tuple]:
    """The source's live products (a hard-deleted one stays in staging, marked deleted)."""
    conn = psycopg2.connect(**stack.settings.source_dsn())
    try:
        with conn.cursor() as cur:
            cur.execute(
                'SELECT "ID", round("Weight"::numeric, 3)::text, "Deleted" FROM dbo."Product" WHERE NOT "Deleted" ORDER BY 1'
            )
            return cur.fetchall()
    finally:
        conn.close()


def staging_products(stack) -> list[tuple]:
    return stack.psql(
        "SELECT product_id, round(weight::numeric, 3)::text, deleted FROM staging_staging.stg_product "
        "WHERE NOT deleted ORDER BY 1"
    )


def check_json(stack) -> tuple[int, dict[str, dict]]:
    result = cli(stack, "--check", "--json")
    report = json.loads(result.stdout)
    return result.returncode, {c["name"]: c for c in report["checks"]}


def bronze_is_the_topic(stack) -> None:
    """Every event of the topic in bronze exactly once."""
    topic = stack.settings.table("product").topic
    (end,) = [p.high for p in topic_offsets(stack.settings, topic)]
    total, distinct = stack.psql(
        "SELECT count(*), count(DISTINCT (kafka_epoch, kafka_partition, kafka_offset)) FROM bronze.product_cdc"
    )[0]
    assert total == distinct == end


@pytest.fixture(scope="module", autouse=True)
def _stop_runner():
    yield
    runner = _STATE.get("runner")
    if runner is not None and runner.poll() is None:
        runner.terminate()
        try:
            runner.wait(60)
        except subprocess.TimeoutExpired:
            runner.kill()


def test_runner_carries_a_source_commit_to_the_marts(stack):
    stack.seeded()
    _STATE["config"] = runner_config(stack)
    start_runner(stack)
    wait_for(
        lambda: (
            stack.psql("SELECT to_regclass('marts.dim_product') IS NOT NULL")[0][0]
            and stack.psql("SELECT count(*) FROM marts.dim_product")[0][0] == 115
        ),
        240,
        "the runner's catch-up to the seeded 115 active products",
        stack,
    )
    active = [row[0] for row in source_products(stack) if not row[2]]
    committed = source_update(stack, active[:3])
    wait_for(lambda: in_marts(stack, committed), 60, "the update in the marts", stack)
    assert staging_products(stack) == source_products(stack)
    beat = wait_for(lambda: heartbeat(stack).get("state") == "running" and heartbeat(stack), 10, "a heartbeat", stack)
    assert set(beat["tables"]) == {"product", "measure_unit"}
    assert set(beat["tables"]["product"]) == {
        "source_to_topic",
        "topic_to_raw",
        "raw_to_bronze",
        "bronze_to_marts",
        "source_to_marts",
    }
    assert beat["latency"]["changes"] >= 1


def test_check_reads_the_heartbeat_and_the_slow_cadence_quality_run(stack):
    wait_for(
        lambda: (heartbeat(stack).get("stages", {}).get("validate", {}).get("result") or {}).get("run_id"),
        120,
        "the runner's first quality run",
        stack,
    )
    code, checks = check_json(stack)
    assert checks["runner"]["status"] == "pass", checks["runner"]
    assert checks["runner_freshness:product"]["status"] == "pass", checks["runner_freshness:product"]
    assert checks["runner_quality"]["status"] == "pass", checks["runner_quality"]
    assert "topic→raw" in checks["runner_freshness:product"]["evidence"]


def test_a_manual_refresh_pauses_the_runner_which_then_resumes(stack):
    result = cli(stack, "refresh", "--steps", "ingest,load,transform")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "asking it to pause" in result.stderr and "the continuous runner paused" in result.stderr
    wait_for(lambda: "run: resumed after the manual refresh" in runner_log(stack), 30, "the resume", stack)
    assert "run: paused; the refresh lock is run" in runner_log(stack)
    committed = source_update(stack, [row[0] for row in source_products(stack) if not row[2]][3:5])
    wait_for(lambda: in_marts(stack, committed), 60, "a change after the resume", stack)


def test_kill_9_is_a_failed_check_and_a_restart_loses_and_doubles_nothing(stack):
    active = [row[0] for row in source_products(stack) if not row[2]]
    committed = 0.0
    for n in range(10):  # changes keep flowing while the runner dies
        committed = source_update(stack, active[n * 5 : n * 5 + 5])
        if n == 4:
            os.kill(_STATE["runner"].pid, signal.SIGKILL)
            _STATE["runner"].wait()
        time.sleep(0.2)
    time.sleep(7)  # past heartbeat_timeout_seconds
    code, checks = check_json(stack)
    assert code == 1
    assert checks["runner"]["status"] == "fail" and "died or hangs" in checks["runner"]["evidence"]
    start_runner(stack)
    wait_for(lambda: in_marts(stack, committed), 90, "the changes after the restart", stack)
    assert staging_products(stack) == source_products(stack)
    bronze_is_the_topic(stack)
    _, checks = check_json(stack)
    assert checks["runner"]["status"] == "pass"
    assert checks["runner_freshness:product"]["status"] == "pass"


@pytest.mark.anyio
async def test_the_pipeline_view_shows_the_runner_and_c_stops_and_starts_it(stack):
    from tests.support.tui import wait_for as wait_in_app
    from tui.app import BiConsoleApp

    app = BiConsoleApp(stack.settings, runtime=stack.runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("3")
        status = app.view("pipeline").query_one("#runner-status")

        def shown() -> str:
            return str(status.render())

        await wait_in_app(pilot, lambda: "continuous running pid" in shown(), 20, 0.2, "the runner's line")
        assert "product" in shown() and "behind the source" in shown()
        await pilot.press("c")  # stops it: the runner finishes the work in hand and writes "stopped"
        await wait_in_app(pilot, lambda: _STATE["runner"].poll() is not None, 90, 0.5, "the runner to exit")
        assert _STATE["runner"].returncode == 0
        await wait_in_app(pilot, lambda: "continuous off" in shown(), 20, 0.2, "the line to say off")
        await pilot.press("c")  # starts one in the background
        await wait_in_app(pilot, lambda: "continuous running pid" in shown(), 60, 0.5, "the new runner")
    beat = heartbeat(stack)
    os.kill(stack.psql("SELECT pid FROM bi_console.runner_heartbeat")[0][0], signal.SIGTERM)
    assert beat["state"] == "running"
    wait_for(lambda: heartbeat(stack).get("state") == "stopped", 90, "the background runner to stop")
