"""ComposeRuntime through the real docker SDK against Docker Engine API exchanges (API 1.47),
replayed over a real HTTP socket on 127.0.0.1. The exchanges are hand-written scenarios
(tests/support/recordings/docker/), not captures of a running engine."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from pipeline.runtime.compose import (
    ComposeRuntime,
    UnknownService,
    detect_runtime,
    parse_docker_time,
    resolve_project_name,
)
from pipeline.runtime.model import RuntimeUnavailable
from tests.support import REPO
from tests.support.net import free_port
from tests.support.recordings.replay import ReplayServer, load


def replay(*names: str) -> ReplayServer:
    return ReplayServer(load("engine.json", *names))


@pytest.fixture
def project_server():
    with replay("project_list.json") as server:
        yield server
    assert server.unmatched == []


def test_compose_lists_services_by_project_label(project_server):
    runtime = ComposeRuntime("bi-console", base_url=project_server.docker_url)
    assert runtime.service_names() == [
        "connect-register",
        "kafka",
        "kafka-connect",
        "minio",
        "minio-init",
        "postgres",
        "superset",
    ]
    listing = project_server.calls("GET", "/containers/json")[0]
    assert listing["query"]["all"] == "1"
    assert '"com.docker.compose.project=bi-console"' in listing["query"]["filters"]
    assert project_server.calls("GET", "/_ping"), "the runtime pings the engine first"


def test_compose_status_maps_state_health_ports_and_uptime(project_server):
    runtime = ComposeRuntime("bi-console", base_url=project_server.docker_url)
    by_name = {s.name: s for s in runtime.status_all()}

    kafka = by_name["kafka"]
    assert (kafka.state, kafka.healthy, kafka.ports, kafka.pid) == ("running", True, [9092], 2101)
    assert kafka.started_at == datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=timezone.utc)
    assert kafka.uptime_seconds > 0

    minio = by_name["minio"]
    assert (minio.state, minio.healthy) == ("running", False)
    assert "unhealthy (4 failed checks)" in minio.health_detail
    assert "connection refused" in minio.health_detail
    assert minio.ports == [9000, 9001]

    assert (by_name["superset"].state, by_name["superset"].healthy) == ("starting", False)
    assert (by_name["minio-init"].state, by_name["minio-init"].healthy) == ("exited", True)
    assert by_name["minio-init"].uptime_seconds is None
    register = by_name["connect-register"]
    assert (register.state, register.healthy, register.health_detail) == ("failed", False, "exited with code 1")
    assert by_name["postgres"].ports == [5433]


def test_compose_status_of_one_service_and_unknown_service(project_server):
    runtime = ComposeRuntime("bi-console", base_url=project_server.docker_url)
    assert runtime.status("kafka-connect").as_dict()["ports"] == [8083]
    with pytest.raises(UnknownService, match="'bi-console' has no container for|service 'dbt' has no container"):
        runtime.status("dbt")


def test_compose_one_off_run_containers_are_not_services(project_server):
    runtime = ComposeRuntime("bi-console", base_url=project_server.docker_url)
    assert "bi-console" not in runtime.service_names()


def test_compose_log_stream_demultiplexes_frames_into_lines():
    with replay("logs_kafka_connect.json") as server:
        runtime = ComposeRuntime("bi-console", base_url=server.docker_url)
        lines = list(runtime.logs("kafka-connect", tail=4))
    assert server.unmatched == []
    assert len(lines) == 4
    assert lines[0].endswith("Kafka Connect started   [org.apache.kafka.connect.runtime.Connect]")
    assert lines[1].endswith("[io.debezium.relational.RelationalSnapshotChangeEventSource]"), (
        "a line split across frames is joined"
    )
    assert "SQL Server Agent is running" in lines[2], "stderr frames are kept"
    assert lines[3].endswith("snapshot completed: 115 records (Пневмоподушка)")
    assert all("\x00" not in line and "\x01" not in line for line in lines), "no frame header leaks into text"


def test_compose_log_follow_since_passes_engine_parameters():
    with replay("logs_kafka_connect.json") as server:
        runtime = ComposeRuntime("bi-console", base_url=server.docker_url)
        since = datetime(2025, 3, 14, 11, 40, tzinfo=timezone.utc)
        lines = list(runtime.logs("kafka-connect", follow=True, tail=None, since=since))
    assert server.unmatched == []
    assert lines == ["2025-03-14 11:40:07,004 INFO   ||  snapshot completed: 115 records (Пневмоподушка)"]
    query = server.calls("GET", "/logs")[0]["query"]
    assert (query["follow"], query["tail"], query["since"]) == ("1", "all", "1741952400")


def test_compose_restart_stop_start_post_to_the_engine():
    with replay("restart_kafka_connect.json") as server:
        runtime = ComposeRuntime("bi-console", base_url=server.docker_url)
        runtime.restart("kafka-connect")
        runtime.stop("kafka-connect")
        runtime.start("kafka-connect")
    assert server.unmatched == []
    restarts = server.calls("POST", "/restart")
    assert len(restarts) == 1 and restarts[0]["query"] == {"t": "10"}
    assert restarts[0]["path"].startswith("/v1.47/containers/")
    assert len(server.calls("POST", "/stop")) == 1 and len(server.calls("POST", "/start")) == 1


def test_compose_restart_loop_is_restarting_and_unhealthy():
    with replay("restart_loop.json") as server:
        status = ComposeRuntime("bi-console", base_url=server.docker_url).status("kafka-connect")
    assert server.unmatched == []
    assert status.state == "restarting"
    assert status.healthy is False
    assert status.restart_count == 37
    assert "37 restarts" in status.health_detail and "exit code 1" in status.health_detail
    assert status.uptime_seconds is None


def test_compose_engine_down_is_a_clear_runtime_unavailable():
    url = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    runtime = ComposeRuntime("bi-console", base_url=url, timeout=2)
    with pytest.raises(RuntimeUnavailable) as info:
        runtime.status_all()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"Docker engine not reachable at {url}")
    assert "connection refused" in message


def test_compose_project_without_containers_is_a_clear_runtime_unavailable():
    with replay("empty_project.json") as server:
        runtime = ComposeRuntime("bi-console", files=["compose/docker-compose.yml"], base_url=server.docker_url)
        with pytest.raises(RuntimeUnavailable) as info:
            runtime.service_names()
    assert server.unmatched == []
    message = str(info.value)
    assert "\n" not in message
    assert "compose project 'bi-console' has no containers" in message
    assert "-f compose/docker-compose.yml" in message


def _two_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "Compose Stack"
    folder.mkdir()
    base = folder / "docker-compose.yml"
    base.write_text("services:\n  postgres:\n    image: postgres:16.8-bookworm\n")
    dev = folder / "docker-compose.dev.yml"
    dev.write_text("name: ${BI_STACK:-bi-dev}\nservices:\n  kafka:\n    image: apache/kafka:3.9.0\n")
    return [base, dev]


def test_compose_two_files_resolve_the_project_name(tmp_path):
    base, dev = _two_files(tmp_path)
    with replay("two_files_project.json") as server:
        runtime = ComposeRuntime(files=[base, dev], base_url=server.docker_url, env={})
        assert runtime.project == "bi-dev"
        assert runtime.service_names() == ["kafka", "postgres"]
        assert runtime.status("postgres").ports == [5434]
    assert server.unmatched == []


def test_compose_project_name_precedence(tmp_path):
    base, dev = _two_files(tmp_path)
    # explicit -p beats everything, COMPOSE_PROJECT_NAME beats the files
    assert resolve_project_name("My_Project", [base, dev], env={"COMPOSE_PROJECT_NAME": "x"}) == "my_project"
    assert resolve_project_name(None, [base, dev], env={"COMPOSE_PROJECT_NAME": "Env.Name"}) == "envname"
    # the last file's name: wins, with interpolation
    assert resolve_project_name(None, [base, dev], env={"BI_STACK": "Staging"}) == "staging"
    # no name: anywhere: the directory of the FIRST file, normalised like docker compose
    assert resolve_project_name(None, [base], env={}) == "composestack"
    other = tmp_path / "ops" / "override.yml"
    other.parent.mkdir()
    other.write_text("services: {}\n")
    assert resolve_project_name(None, [other, base], env={}) == "ops"
    # the shipped compose file names its project
    shipped = REPO / "compose" / "docker-compose.yml"
    assert resolve_project_name(None, [shipped], env={}) == "bi-console"


def test_compose_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeUnavailable, match="cannot be read"):
        resolve_project_name(None, [tmp_path / "missing.yml"], env={})


def test_compose_detect_runtime_honours_forcing_and_probes(project_server):
    class S:
        runtime = "auto"
        compose_project_name = "bi-console"
        compose_files = None

    forced = S()
    forced.runtime = "embedded"
    assert detect_runtime(forced) == "embedded"
    forced.runtime = "compose"
    assert detect_runtime(forced, compose_factory=lambda s: pytest.fail("forced: no probe")) == "compose"

    assert (
        detect_runtime(
            S(), compose_factory=lambda s: ComposeRuntime(s.compose_project_name, base_url=project_server.docker_url)
        )
        == "compose"
    )
    down = f"tcp://127.0.0.1:{free_port()}"
    assert (
        detect_runtime(S(), compose_factory=lambda s: ComposeRuntime(s.compose_project_name, base_url=down, timeout=2))
        == "embedded"
    )


def test_compose_detect_runtime_empty_project_is_embedded():
    with replay("empty_project.json") as server:
        assert (
            detect_runtime(
                type("S", (), {"runtime": "auto"})(),
                compose_factory=lambda s: ComposeRuntime("bi-console", base_url=server.docker_url),
            )
            == "embedded"
        )


def test_compose_docker_timestamps():
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("2025-03-14T09:26:53.589793846Z") == datetime(
        2025, 3, 14, 9, 26, 53, 589793, tzinfo=timezone.utc
    )
    assert parse_docker_time("2025-03-14T10:26:53+01:00") == datetime(2025, 3, 14, 9, 26, 53, tzinfo=timezone.utc)
