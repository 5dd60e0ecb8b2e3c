"""Issue 3: the pipeline end to end on the embedded stack (ordered: later tests build on
the state earlier ones leave)."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support import REPO
from tests.support.shared import shared_file
from tests.support.stack import table_rows

RUNBOOK = "runbook/product-sync-to-bi.md"
STEP4_QUERY = """SELECT 'Staging' as layer, COUNT(*)::text as records
FROM staging_staging.stg_product WHERE deleted = false
UNION ALL
SELECT 'Marts', COUNT(*)::text
FROM marts.dim_product;"""
STATE_STEPS = "ingest,load,transform"


def refresh(stack, *args, env=None) -> dict:
    result = stack.cli("refresh", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def step(run: dict, table: str, name: str) -> dict:
    return next(s for s in run["steps"] if s["table"] == table and s["step"] == name)


def snapshot(stack, bronze_exclude: tuple[str, ...] = ()) -> dict:
    return {
        "bronze": table_rows(stack, "bronze.product_cdc", ("ingested_at", *bronze_exclude)),
        "staging": table_rows(stack, "staging_staging.stg_product", ("ingested_at",)),
        "marts": table_rows(stack, "marts.dim_product", ("ingested_timestamp",)),
    }


def runbook_sql_blocks(heading: str) -> list[str]:
    text = shared_file(RUNBOOK).read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def test_full_refresh_reaches_runbook_figures(stack):
    seeded = stack.seeded()
    run = refresh(stack, "--full")
    assert run["outcome"] == "ok"
    assert [s["step"] for s in run["steps"]] == [
        "ingest",
        "ingest",
        "load",
        "load",
        "transform",
        "test",
        "validate",
        "validate",
    ]
    assert step(run, "all", "test")["counts"].get("fail", 0) == 0
    assert step(run, "product", "validate")["counts"]["failed"] == 0
    assert stack.psql(STEP4_QUERY) == [("Staging", "115"), ("Marts", "115")]
    # Bronze holds every event exactly once.
    total, distinct = stack.psql(
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM bronze.product_cdc"
    )[0]
    assert total == distinct == seeded["topic_events"] == step(run, "product", "ingest")["counts"]["events"]
    first, last = stack.psql("SELECT min(kafka_offset), max(kafka_offset) FROM bronze.product_cdc")[0]
    assert (first, last) == (0, total - 1)


def test_runbook_validation_queries_run_verbatim(stack):
    queries = runbook_sql_blocks("## Validation Queries")
    assert len(queries) == 4
    results = [stack.psql(q) for q in queries]
    assert all(results), results
    counts = dict(results[0])
    assert counts["Staging (Active)"] == counts["Marts"] == 115
    suppliers = {row[0]: row[1] for row in results[1]}
    assert suppliers["SEM1"] == 50 and suppliers["SABO"] == 41
    # The demo's edge cases: two Partial and one Missing (pipeline/demo/shapes.py CASES).
    assert sorted(results[2]) == [("Complete", 112), ("Missing", 1), ("Partial", 2)]


def test_second_full_refresh_is_identical(stack):
    before = snapshot(stack)
    refresh(stack, "--full", "--steps", STATE_STEPS)
    assert snapshot(stack) == before


def _kill_when(stack, args: list[str], pattern: str, env: dict) -> subprocess.CompletedProcess:
    """Start a refresh, SIGKILL it once its log shows `pattern`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "--env-file", str(stack.env_file), *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BI_")}, **env},
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if re.search(pattern, line):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    return proc


def test_sigkill_of_ingest_and_load_loses_and_duplicates_nothing(stack):
    # Objects of another size get other names, so batch_file differs; every event must not.
    expected = snapshot(stack, ("batch_file",))
    env = {"BI_VERBOSE": "1", "BI_INGEST_BATCH_SIZE": "2000"}
    _kill_when(
        stack, ["refresh", "--full", "--steps", "ingest", "--table", "product"], r"ingest: .* [2-9] objects", env
    )
    rerun = stack.cli("refresh", "--incremental", "--steps", "ingest", "--table", "product", env=env, check=True)
    assert "offsets 0.." not in rerun.stderr  # it resumed, it did not start over
    _kill_when(stack, ["refresh", "--full", "--steps", "load", "--table", "product"], r"load: 1\d/\d+ objects", env)
    # The killed full load was filling its shadow table; bronze itself is still whole.
    assert stack.psql("SELECT count(*) FROM bronze.product_cdc")[0][0] == 31_970
    partial = stack.psql("SELECT count(*) FROM bronze.product_cdc__full")[0][0]
    assert 0 < partial < 31_970
    refresh(stack, "--full", "--steps", "load,transform", env=env)
    keys = [o["Key"] for o in _raw_objects(stack)]
    spans = sorted(tuple(int(x) for x in k.rsplit(".", 1)[0].split("+")[-2:]) for k in keys)
    assert spans[0][0] == 0 and all(a[1] + 1 == b[0] for a, b in itertools.pairwise(spans)), spans  # no gap, no overlap
    assert snapshot(stack, ("batch_file",)) == expected


def _raw_objects(stack) -> list[dict]:
    from pipeline.stores.storage import RawStore

    return list(RawStore(stack.settings).list(stack.settings.table("product").raw_objects_prefix))


def test_raw_zone_is_read_by_the_runbooks_loader(stack):
    """Format compatibility: the runbook's Step 3 script, run as written (only its endpoints,
    credentials and bucket pointed at this stack), loads our raw zone into a scratch database."""
    from psycopg2 import sql

    from pipeline.runtime.pgserver import EmbeddedPostgres
    from pipeline.stores.bronze import ensure_bronze
    from pipeline.stores.db import connect

    settings = stack.settings
    admin = EmbeddedPostgres(settings, Path(settings.data_dir) / "postgres").admin_connect()
    admin.autocommit = True
    admin.cursor().execute("DROP DATABASE IF EXISTS runbook_check")
    admin.cursor().execute(sql.SQL("CREATE DATABASE runbook_check OWNER {}").format(sql.Identifier(settings.pg_user)))
    admin.close()
    with connect(settings, dbname="runbook_check") as conn, conn.cursor() as cur:
        ensure_bronze(cur, settings.file, settings.table("product"))
        # The runbook's loader names the pre-epoch key in its ON CONFLICT; this scratch
        # database holds one epoch, so that key is unique here too.
        cur.execute(
            "ALTER TABLE bronze.product_cdc ADD CONSTRAINT runbook_kafka_position "
            "UNIQUE (kafka_topic, kafka_partition, kafka_offset)"
        )
    step3 = shared_file(RUNBOOK).read_text().split("### Step 3")[1]
    script = re.search(r'python -c "\n(.*?)\n"\n```', step3, flags=re.S).group(1)
    script = (
        script.replace("http://localhost:9000", settings.s3_endpoint)
        .replace("Bucket='cord-raw'", f"Bucket={settings.s3_bucket!r}")
        .replace("aws_access_key_id='minioadmin'", f"aws_access_key_id={settings.s3_access_key!r}")
        .replace("aws_secret_access_key='minioadmin'", f"aws_secret_access_key={settings.s3_secret_key!r}")
        .replace("host='localhost', port=5433", f"host='127.0.0.1', port={settings.pg_port}")
        .replace(
            "database='analytics', user='analytics', password='analytics'",
            f"database='runbook_check', user={settings.pg_user!r}, password={settings.pg_password!r}",
        )
        .replace("s3 = boto3.client('s3',", f"s3 = boto3.client('s3', region_name={settings.s3_region!r},")
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Inserted 31970 records" in result.stdout
    with connect(settings, dbname="runbook_check") as conn, conn.cursor() as cur:
        # Their loader keeps the schema-wrapped value; ours stores its payload. Same events.
        cur.execute(
            "SELECT kafka_offset, md5(coalesce(cdc_payload->'payload', cdc_payload)::text) "
            "FROM bronze.product_cdc WHERE cdc_payload <> 'null' ORDER BY 1"
        )
        theirs = cur.fetchall()
    ours = stack.psql(
        "SELECT kafka_offset, md5(cdc_payload::text) FROM bronze.product_cdc WHERE cdc_payload IS NOT NULL ORDER BY 1"
    )
    assert theirs == ours


def test_incremental_after_changes_equals_full_refresh(stack):
    before = stack.psql("SELECT count(*) FROM bronze.product_cdc")[0][0]
    stack.cli("demo", "changes", "500", check=True)
    run = refresh(stack, "--incremental", "--steps", STATE_STEPS)
    ingested = step(run, "product", "ingest")["counts"]
    assert ingested["events"] == 500  # only the new events were read
    assert step(run, "product", "load")["counts"]["inserted"] == 500
    assert stack.psql("SELECT count(*) FROM bronze.product_cdc")[0][0] == before + 500
    incremental = table_rows(stack, "marts.dim_product", ("ingested_timestamp",))
    staging = table_rows(stack, "staging_staging.stg_product", ("ingested_at",))
    refresh(stack, "--full", "--steps", STATE_STEPS)
    assert table_rows(stack, "marts.dim_product", ("ingested_timestamp",)) == incremental
    assert table_rows(stack, "staging_staging.stg_product", ("ingested_at",)) == staging


def test_second_table_flows_end_to_end(stack):
    """MeasureUnit goes through the same code with only its configuration."""
    assert stack.psql("SELECT count(*) FROM bronze.measure_unit_cdc")[0][0] == 14
    assert stack.psql("SELECT count(*) FROM staging_staging.stg_measure_unit")[0][0] == 7
    rows = stack.psql("SELECT name, name_pl, name_ua FROM marts.dim_measure_unit ORDER BY measure_unit_id")
    assert rows[0] == ("шт", "szt", "шт") and len(rows) == 7


def test_pipeline_code_has_no_table_specific_path():
    generic = [
        REPO / "pipeline" / name
        for name in (
            "orchestration/refresh.py",
            "stores/bronze.py",
            "steps/envelope.py",
            "stores/storage.py",
            "stores/kafka.py",
            "stores/db.py",
        )
    ]
    generic += list((REPO / "pipeline" / "steps").glob("*.py"))
    offenders = [
        f"{p.name}:{n}"
        for p in generic
        if p.name != "bi.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\bproducts?\b|measure.?unit", line, re.I)
    ]
    assert not offenders, offenders


def test_second_refresh_is_refused_while_one_runs(stack):
    from pipeline.orchestration.refresh import RefreshLock

    lock = RefreshLock(stack.settings)
    lock.acquire({"run_id": "held-by-test", "mode": "full", "pid": os.getpid(), "started_at": "now"})
    try:
        started = time.monotonic()
        result = stack.cli("refresh", "--incremental")
        assert result.returncode == 4
        assert "held-by-test" in result.stderr and time.monotonic() - started < 15
    finally:
        lock.release()
