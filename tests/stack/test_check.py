"""Issue 5: `bi-console --check`, alerts, the lock, the Prefect flow (ordered)."""

# Own stack, isolation needed because test_stopped_broker_exits_3_naming_it stops the broker:
# the shared tansu keeps its topics in memory, so every other module's events would go with it.

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

pytestmark = pytest.mark.own_stack


class _Webhook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Webhook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), _Webhook)
    _Webhook.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", _Webhook.received
    server.shutdown()


def test_check_passes_after_a_refresh(stack, tmp_path):
    stack.seeded()
    junit = tmp_path / "out.xml"
    result = stack.cli("--check", "--json", "--junit", str(junit), "--refresh", "full")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    names = {c["name"]: c for c in report["checks"]}
    for expected in (
        "refresh",
        "service:postgres",
        "service:kafka",
        "service:s3",
        "connector",
        "topic:product",
        "reconciliation:product",
        "freshness:product",
        "coverage:product",
        "dbt_tests",
        "gx:product_marts",
        "flag_share:product.is_for_sale",
    ):
        assert names[expected]["status"] == "pass", names[expected]
    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite" and int(suite.get("tests")) == len(report["checks"])
    assert int(suite.get("failures")) == 0
    assert {case.get("name") for case in suite.iter("testcase")} == set(names)
    # Secrets never reach the output.
    for secret in stack.settings.secret_values():
        assert secret not in result.stdout and secret not in result.stderr


def test_human_table_goes_to_stdout_and_diagnostics_to_stderr(stack):
    result = stack.cli("check")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "reconciliation:product" in result.stdout and "✓" in result.stdout
    assert "PASS" in result.stderr  # progress lines


def test_deleted_marts_rows_fail_reconciliation_and_alert(stack, webhook, tmp_path):
    url, received = webhook
    stack.psql(
        "DELETE FROM marts.dim_product WHERE product_id IN "
        "(SELECT product_id FROM marts.dim_product ORDER BY product_id LIMIT 3)"
    )
    junit = tmp_path / "fail.xml"
    result = stack.cli("--check", "--json", "--junit", str(junit), env={"BI_ALERT_WEBHOOK_URL": url})
    assert result.returncode == 1, result.stderr[-2000:]
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["reconciliation:product"]["status"] == "fail"
    assert "Marts 112" in checks["reconciliation:product"]["evidence"]
    failures = [c for c in ET.parse(junit).getroot().iter("testcase") if c.find("failure") is not None]
    assert "reconciliation:product" in {c.get("name") for c in failures}
    assert received, "the webhook received nothing"
    alerted = {c["name"] for c in received[-1]["checks"]}
    assert "reconciliation:product" in alerted and "reconciliation" in received[-1]["text"]
    stack.cli("refresh", "--full", "--steps", "ingest,load,transform", check=True)


def _source(settings, query: str, params=None) -> None:
    from pipeline.stores.db import connect_source

    conn = connect_source(settings)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
        conn.commit()
    finally:
        conn.close()


def test_freshness_fails_after_a_full_refresh_of_stale_data(stack, tmp_path):
    """Issue 22: freshness is the source's. A change the connector never captured leaves the
    marts behind the source, and a full refresh (which reloads only what the topic holds)
    does not hide it."""
    import time

    stack.seeded()
    tight = tmp_path / "bi-console.toml"
    tight.write_text("[thresholds]\nfreshness_max_age_minutes = 0.02\n")  # 1.2 s
    env = {"BI_CONFIG_FILE": str(tight)}
    stack.cli("refresh", "--full", "--steps", "ingest,load,transform", check=True)
    fresh = _checks(stack.cli("--check", "--json", env=env))["freshness:product"]
    assert fresh["status"] == "pass" and "0.0 min behind" in fresh["evidence"], fresh

    stack.runtime.stop("cdc")
    try:
        time.sleep(3)  # the change comes later than anything the marts hold, by more than 1.2 s
        _source(
            stack.settings,
            'UPDATE dbo."Product" SET "Updated" = now() AT TIME ZONE \'UTC\', "Description" = %s '
            'WHERE "ID" = (SELECT min("ID") FROM dbo."Product" WHERE NOT "Deleted")',
            ("changed while the connector was stopped",),
        )
        stack.cli("refresh", "--full", "--steps", "ingest,load,transform", check=True)
        result = stack.cli("--check", "--json", env=env)
        assert result.returncode == 1, result.stderr[-2000:]
        stale = _checks(result)["freshness:product"]
        assert stale["status"] == "fail" and "min behind (max 0.02)" in stale["evidence"], stale
        # Within the default hour the same lag passes: the threshold is the config's.
        assert _checks(stack.cli("--check", "--json"))["freshness:product"]["status"] == "pass"
    finally:
        stack.runtime.start("cdc", log=lambda _: None)
    stack.wait_connector(lambda s: s.effective_state == "RUNNING", 120, "RUNNING again")
    deadline = time.monotonic() + 120
    while True:  # the engine resumes from its slot: the change arrives, and the marts catch up
        stack.cli("refresh", "--incremental", "--steps", "ingest,load,transform", check=True)
        caught_up = _checks(stack.cli("--check", "--json", env=env))["freshness:product"]
        if caught_up["status"] == "pass" or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert caught_up["status"] == "pass", caught_up


def test_reconciliation_with_the_source_and_the_topic_fails_when_a_row_goes(stack):
    """Issue 22: active rows at the source = rows in the marts; topic end offsets = bronze
    rows + quarantined + rejected (+ not ingested yet). Deleting a marts row, then a bronze
    row, breaks each."""
    stack.seeded()
    stack.cli("refresh", "--full", "--steps", "ingest,load,transform", check=True)
    checks = _checks(stack.cli("--check", "--json"))
    for name in (
        "reconciliation:product:source",
        "reconciliation:product:topic",
        "reconciliation:measure_unit:source",
        "reconciliation:measure_unit:topic",
    ):
        assert checks[name]["status"] == "pass", checks[name]
    active = stack.psql("SELECT count(*) FROM marts.dim_product")[0][0]
    assert f"source {active} active row(s), marts {active}" in checks["reconciliation:product:source"]["evidence"]

    stack.psql("DELETE FROM marts.dim_product WHERE product_id = (SELECT max(product_id) FROM marts.dim_product)")
    result = stack.cli("--check", "--json")
    assert result.returncode == 1
    source = _checks(result)["reconciliation:product:source"]
    assert source["status"] == "fail" and f"marts {active - 1} (differ by -1)" in source["evidence"], source
    assert _checks(result)["reconciliation:product:topic"]["status"] == "pass"

    stack.psql("DELETE FROM bronze.product_cdc WHERE kafka_offset = (SELECT max(kafka_offset) FROM bronze.product_cdc)")
    topic = _checks(stack.cli("--check", "--json"))["reconciliation:product:topic"]
    assert topic["status"] == "fail" and "+1 event(s) unaccounted for" in topic["evidence"], topic

    stack.cli("refresh", "--full", "--steps", "ingest,load,transform", check=True)
    checks = _checks(stack.cli("--check", "--json"))
    assert (
        checks["reconciliation:product:source"]["status"] == checks["reconciliation:product:topic"]["status"] == "pass"
    ), checks


def test_a_table_without_a_suite_is_not_covered(stack):
    """Issue 22: a table configured without a Great Expectations suite is "not covered", a
    warning, never a success; MeasureUnit's own suite passes on the demo. Issue 21: a table
    with a source contract and no suites of its own is validated by its contract's suite, so
    "not covered" is a table with neither."""
    from pathlib import Path

    from pipeline.steps.validate import run_validation

    stack.seeded()
    shipped = stack.cli("--check", "--json")
    assert shipped.returncode == 0, shipped.stderr[-2000:]
    assert _checks(shipped)["gx:measure_unit_marts"]["status"] == "pass", _checks(shipped)["gx:measure_unit_marts"]

    suites = 'suites = ["measure_unit_marts"]'
    config_text = Path(stack.settings.config_file).read_text()
    assert config_text.count(suites) == 1 and config_text.count('name = "measure_unit"') == 1
    unsuited = _write(stack, "unsuited.toml", config_text.replace(suites, "suites = []"))
    result = stack.cli("--check", "--json", env={"BI_CONFIG_FILE": str(unsuited)})
    assert result.returncode == 0, result.stderr[-2000:]
    contract_suite = _checks(result)["gx:measure_unit_staging_contract"]
    assert contract_suite["status"] == "pass", contract_suite

    # The same table under a name the dbt project has no contract for: nothing validates it.
    uncontracted = config_text.replace(suites, "suites = []").replace(
        'name = "measure_unit"', 'name = "measure_unit_uncontracted"'
    )
    result = stack.cli("--check", "--json", env={"BI_CONFIG_FILE": str(_write(stack, "uncovered.toml", uncontracted))})
    assert result.returncode == 0, result.stderr[-2000:]
    gx = _checks(result)["gx:measure_unit_uncontracted"]
    assert gx["status"] == "warn" and gx["evidence"].startswith("not covered"), gx
    assert "gx:product_marts" in _checks(result)
    table = stack.settings.table("measure_unit").model_copy(update={"suites": [], "name": "measure_unit_uncontracted"})
    validation = run_validation(stack.settings, table, build_docs=False)
    assert not validation.covered and validation.verdict == "not covered"
    assert validation.as_dict()["covered"] is False


def test_profile_against_production_warns_on_drift(stack):
    """Issue 22: the marts against the contract's production profile; drift warns with numbers."""
    stack.seeded()
    stack.cli("refresh", "--full", "--steps", "ingest,load,transform", check=True)
    wide = stack.cli(
        "--check",
        "--json",
        env={
            "BI_CONFIG_FILE": str(
                _write(
                    stack,
                    "wide.toml",
                    "[thresholds]\nprofile_share_tolerance = 1.0\nprofile_range_tolerance = 1000.0\n",
                )
            )
        },
    )
    assert _checks(wide)["profile:product"]["status"] == "pass", _checks(wide)["profile:product"]

    stack.psql("UPDATE marts.dim_product SET has_analogue = false, source_amg_code = NULL")
    result = stack.cli("--check", "--json")
    profile = _checks(result)["profile:product"]
    assert profile["status"] == "warn", profile
    assert "has_analogue true 0.0% vs production 67.0%" in profile["evidence"], profile
    assert "source_amg_code filled 0.0% vs production 100.0%" in profile["evidence"], profile
    stack.cli("refresh", "--full", "--steps", "ingest,load,transform", check=True)


def _write(stack, name: str, text: str):
    from pathlib import Path

    path = Path(stack.settings.data_dir) / name
    path.write_text(text)
    return path


def test_prefect_flow_runs_to_success(stack):
    # prefect is part of the test command's install (".[test,prefect]"): missing, this fails by name.
    from prefect.testing import utilities as prefect_testing

    from pipeline.orchestration.prefect_flow import sync_product_to_bi

    with prefect_testing.prefect_test_harness():
        result = sync_product_to_bi(full=True, settings=stack.settings)
    assert result["dbt_test"]["success"] is True
    assert result["bronze"]["product"]["inserted"] > 0
    assert stack.psql("SELECT count(*) FROM marts.dim_product")[0][0] > 0


# -- what did not reach bronze (issue 16) --------------------------------------------------
PRODUCT_TOPIC = "cord.ConcordDb.dbo.Product"
NOT_JSON = b'{"schema": {"type": "struct"}, "payload": {"op": "u", "after": {"ID": 7'  # cut mid-document


def _produce(settings, key: bytes, value: bytes) -> int:
    """Produce one message and return the offset the broker gave it."""
    from confluent_kafka import Producer

    offsets: list[int] = []
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    producer.produce(PRODUCT_TOPIC, key=key, value=value, on_delivery=lambda e, m: offsets.append(m.offset()))
    assert producer.flush(30) == 0 and len(offsets) == 1
    return offsets[0]


def _checks(result) -> dict:
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


@pytest.mark.faults
def test_a_quarantined_message_is_reported_listed_and_shown_whole(stack, tmp_path):
    stack.seeded()
    offset = _produce(stack.settings, b'{"ID": 7}', NOT_JSON)
    stack.cli("refresh", "--incremental", "--steps", "ingest,load,transform", check=True)

    result = stack.cli("--check", "--json")
    assert result.returncode == 0, result.stderr[-3000:]  # a warning, not a failure
    quarantined = _checks(result)["quarantine:product"]
    assert quarantined["status"] == "warn", quarantined
    assert quarantined["evidence"].startswith("1 quarantined and not replayed"), quarantined
    assert "1 new since the last check" in quarantined["evidence"]
    assert "value is not JSON" in quarantined["evidence"], quarantined
    assert _checks(stack.cli("--check", "--json"))["quarantine:product"]["evidence"].count("0 new since") == 1
    assert stack.cli("--check", "--strict").returncode == 1

    strict_config = tmp_path / "bi-console.toml"
    strict_config.write_text("[thresholds]\nquarantined_max = 0\n")
    failing = stack.cli("--check", "--json", env={"BI_CONFIG_FILE": str(strict_config)})
    assert failing.returncode == 1, failing.stderr[-2000:]
    assert _checks(failing)["quarantine:product"]["status"] == "fail"

    listed = json.loads(stack.cli("quarantine", "list", "--json", check=True).stdout)["quarantined"]
    assert [(q["topic"], q["offset"]) for q in listed] == [(PRODUCT_TOPIC, offset)], listed
    assert "value is not JSON" in listed[0]["reason"] and listed[0]["value_bytes"] == len(NOT_JSON)
    shown = stack.cli("quarantine", "show", "--table", "product", "--offset", str(offset), check=True)
    assert shown.stdout == NOT_JSON.decode()
    assert "value is not JSON" in shown.stderr

    # Replay re-checks it: still not JSON, so it stays quarantined (exit 1), and says why.
    replay = stack.cli("quarantine", "replay", "--table", "product")
    assert replay.returncode == 1, replay.stderr[-2000:]
    assert json.loads(replay.stdout)["still_failing"] == 1 and json.loads(replay.stdout)["replayed"] == 0
    assert f"still quarantined: {PRODUCT_TOPIC}[0]@{offset}: value is not JSON" in replay.stderr

    from pipeline.checks.diagnose import diagnose_bronze_load

    panel = {c.name: c for c in diagnose_bronze_load(stack.settings)}
    assert not panel["Quarantine product"].ok and "1 quarantined" in panel["Quarantine product"].evidence


@pytest.mark.anyio
async def test_quality_view_lists_the_quarantined_message(stack):
    from tests.support.tui import wait_for
    from tui.app import BiConsoleApp

    app = BiConsoleApp(stack.settings, runtime=stack.runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        await pilot.press("4")
        quality = app.view("quality")
        await wait_for(
            pilot,
            lambda: quality.snapshot and quality.snapshot.quarantined,
            60,
            what="the quarantined message in the Quality view",
        )
        table = quality.query_one("#intake-table")
        cells = [str(cell) for cell in table.get_row_at(0)]
        assert cells[1] == "product" and cells[2].startswith(f"{PRODUCT_TOPIC}[0]@"), cells
        assert "value is not JSON" in cells[3], cells
        assert not app.errors, app.errors


@pytest.mark.faults
def test_raw_objects_lost_from_s3_fail_the_check_and_the_fix_rewrites_them(stack):
    from pipeline.checks.diagnose import diagnose_bronze_load
    from pipeline.stores.storage import RawStore

    stack.seeded()
    stack.cli("refresh", "--full", "--steps", "ingest,load", check=True, env={"BI_INGEST_BATCH_SIZE": "5000"})
    store = RawStore(stack.settings)
    prefix = stack.settings.table("product").raw_objects_prefix
    objects = sorted(o["Key"] for o in store.list(prefix))
    assert len(objects) >= 3, objects
    lost = objects[1:3]
    original = {key: store.get(key) for key in lost}
    for key in lost:
        store.client.delete_object(Bucket=store.bucket, Key=key)

    result = stack.cli("--check", "--json")
    assert result.returncode == 1, result.stderr[-2000:]
    raw_zone = _checks(result)["raw_zone:product"]
    assert raw_zone["status"] == "fail" and f"2 of {len(objects)} loaded object(s) missing" in raw_zone["evidence"]
    panel = {c.name: c for c in diagnose_bronze_load(stack.settings)}
    assert not panel["Raw zone product matches the manifest"].ok
    assert stack.cli("raw-zone", "audit").returncode == 1

    recovered = stack.cli("raw-zone", "recover")
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    assert sorted(json.loads(recovered.stdout)["recovered"]["product"]) == lost
    for key in lost:
        assert store.get(key) == original[key], key  # the same lines, byte for byte
    assert _checks(stack.cli("--check", "--json"))["raw_zone:product"]["status"] == "pass"
    panel = {c.name: c for c in diagnose_bronze_load(stack.settings)}
    assert panel["Raw zone product matches the manifest"].ok


def test_stopped_broker_exits_3_naming_it(stack):
    stack.runtime.stop("kafka")
    try:
        result = stack.cli("--check")
        assert result.returncode == 3, result.stderr[-2000:]
        assert "kafka unreachable" in result.stderr.strip().splitlines()[-1]
    finally:
        stack.runtime.start("kafka", log=lambda _: None)
