"""Issue 5: `bi-console --check`, alerts, the lock, the Prefect flow (ordered)."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

pytestmark = pytest.mark.stack


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
    for expected in ("refresh", "service:postgres", "service:kafka", "service:s3", "connector", "topic:product",
                     "reconciliation:product", "freshness:product", "coverage:product", "dbt_tests",
                     "gx:product_marts", "flag_share:product.is_for_sale"):
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
    stack.psql("DELETE FROM marts.dim_product WHERE product_id IN "
               "(SELECT product_id FROM marts.dim_product ORDER BY product_id LIMIT 3)")
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


def test_prefect_flow_runs_to_success(stack):
    prefect_testing = pytest.importorskip("prefect.testing.utilities")
    from pipeline.prefect_flow import sync_product_to_bi

    with prefect_testing.prefect_test_harness():
        result = sync_product_to_bi(full=True, settings=stack.settings)
    assert result["dbt_test"]["success"] is True
    assert result["bronze"]["product"]["inserted"] > 0
    assert stack.psql("SELECT count(*) FROM marts.dim_product")[0][0] > 0


def test_stopped_broker_exits_3_naming_it(stack):
    stack.runtime.stop("kafka")
    try:
        result = stack.cli("--check")
        assert result.returncode == 3, result.stderr[-2000:]
        assert "kafka unreachable" in result.stderr.strip().splitlines()[-1]
    finally:
        stack.runtime.start("kafka", log=lambda _: None)
