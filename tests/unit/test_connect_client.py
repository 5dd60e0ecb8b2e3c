"""KafkaConnectClient (httpx) against Kafka Connect REST responses replayed over a real
HTTP socket on 127.0.0.1. The responses are hand-written scenarios (tests/support/recordings/connect/),
not captures of a running worker."""

from __future__ import annotations

import json

import pytest

from pipeline.runtime.connect_client import KafkaConnectClient, KafkaConnectError, KafkaConnectUnavailable, main
from pipeline.runtime.model import ConnectorControl
from tests.support import REPO
from tests.support.net import free_port
from tests.support.recordings.replay import ReplayServer, load

CONNECTOR_FILE = REPO / "compose" / "connectors" / "sqlserver-product-v2.json"


def serve(*names: str) -> ReplayServer:
    return ReplayServer(load(*names, folder="connect"))


def test_connect_client_running_status_config_offsets_list():
    with serve("running.json") as server, KafkaConnectClient(server.url) as client:
        assert client.list() == ["sqlserver-measure-unit-v1", "sqlserver-product-v2"]
        status = client.status()
        assert (status.name, status.state, status.effective_state, status.kind) == (
            "sqlserver-product-v2",
            "RUNNING",
            "RUNNING",
            "source",
        )
        assert [(t.id, t.state, t.worker_id) for t in status.tasks] == [(0, "RUNNING", "172.18.0.6:8083")]
        assert status.error_trace is None
        config = client.config()
        assert config["topic.prefix"] == "cord" and config["table.include.list"] == "dbo.Product"
        offsets = client.offsets()
        assert offsets[0]["partition"] == {"server": "cord", "database": "ConcordDb"}
        assert offsets[0]["offset"]["commit_lsn"] == "0000002b:00000a58:0003"
    assert server.unmatched == []


def test_connect_client_failed_task_is_failed_with_its_trace():
    with serve("failed_task.json") as server, KafkaConnectClient(server.url) as client:
        status = client.status()
    assert status.state == "RUNNING", "the connector itself still says RUNNING"
    assert status.effective_state == "FAILED", "a failed task is never shown as RUNNING"
    assert status.tasks[0].state == "FAILED"
    assert status.error_trace.startswith("org.apache.kafka.connect.errors.ConnectException")
    assert "Login failed for user 'concord'" in status.error_trace


def test_connect_client_control_calls():
    with serve("control.json") as server, KafkaConnectClient(server.url) as client:
        client.restart(include_tasks=True, only_failed=True)
        client.restart(include_tasks=False, only_failed=False)
        client.pause()
        client.resume()
        client.stop()
        client.restart_task(0)
    assert server.unmatched == []
    restarts = server.calls("POST", "/sqlserver-product-v2/restart")
    assert [r["query"] for r in restarts] == [
        {"includeTasks": "true", "onlyFailed": "true"},
        {"includeTasks": "false", "onlyFailed": "false"},
    ]
    assert [r["path"] for r in server.requests if r["method"] == "PUT"] == [
        "/connectors/sqlserver-product-v2/pause",
        "/connectors/sqlserver-product-v2/resume",
        "/connectors/sqlserver-product-v2/stop",
    ]


def test_connect_client_errors_name_url_and_status():
    with serve("errors.json") as server, KafkaConnectClient(server.url, "sqlserver-product-v3") as client:
        with pytest.raises(KafkaConnectError) as info:
            client.status()
        assert str(info.value) == (
            f"Kafka Connect GET {server.url}/connectors/sqlserver-product-v3/status -> "
            "HTTP 404: No status found for connector sqlserver-product-v3"
        )
        assert info.value.status_code == 404
        assert client.exists() is False
        with pytest.raises(
            KafkaConnectError,
            match=r"POST .*/restart\?includeTasks=true&onlyFailed=false -> HTTP 409: "
            r"Cannot complete request momentarily",
        ):
            client.restart(name="sqlserver-product-v2")
        with pytest.raises(KafkaConnectError) as info:
            client.pause(name="sqlserver-product-v2")
        assert "-> HTTP 502: Bad Gateway" in str(info.value) and "\n" not in str(info.value)


def test_connect_client_unreachable_names_the_url():
    port = free_port()
    with KafkaConnectClient(f"http://127.0.0.1:{port}", timeout=2) as client:
        with pytest.raises(KafkaConnectUnavailable) as info:
            client.status()
    message = str(info.value)
    assert message.startswith(
        f"Kafka Connect GET http://127.0.0.1:{port}/connectors/sqlserver-product-v2/status: unreachable"
    )
    assert "\n" not in message


def test_connect_client_register_puts_the_connector_file(capsys):
    with serve("register.json") as server:
        code = main(["register", str(CONNECTOR_FILE), "--url", server.url, "--wait", "5"])
    assert server.unmatched == []
    assert code == 0
    assert "connector sqlserver-product-v2 registered" in capsys.readouterr().out
    put = server.calls("PUT", "/config")[0]
    assert put["body"] == json.loads(CONNECTOR_FILE.read_text())["config"]


def test_connect_client_implements_connector_control():
    client: ConnectorControl = KafkaConnectClient("http://127.0.0.1:1")
    for method in ("status", "restart", "pause", "resume"):
        assert callable(getattr(client, method))


def test_connect_client_from_settings():
    class S:
        kafka_connect_url = "http://127.0.0.1:8083/"
        connector_name = "sqlserver-product-v2"

    client = KafkaConnectClient.from_settings(S())
    assert (client.base_url, client.connector) == ("http://127.0.0.1:8083", "sqlserver-product-v2")
