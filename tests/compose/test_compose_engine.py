"""Compose mode on a real Docker Engine: the stand-in profile (compose/docker-compose.standin.yml)
built by `images build`, started by `docker compose up --wait`, and bi-console driving its
containers: status, logs, service control, full and incremental refreshes (through the
containerized Superset too), --check, and faults (PostgreSQL killed mid-load, a container in a restart loop).

Skipped, with the reason, only when no Docker engine answers. Every container, network and
volume a test makes carries the test project's label and is removed by it at the end.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.config.security import compose_policy_problems
from pipeline.runtime.compose import PROJECT_LABEL, ComposeRuntime
from tests.support import REPO
from tests.support.net import free_port
from tests.support.settings import make_settings
from tests.support.stack import StackHandle, write_env

STANDIN_FILE = REPO / "compose" / "docker-compose.standin.yml"
SERVICES = ["kafka", "kafka-connect", "postgres", "s3", "superset", "superset-init"]
ONE_SHOTS = {"superset-init"}
# The project's own images, built here from their Dockerfiles: not stand-ins, and never
# tagged with an upstream name either.
LOCAL_TAGS = ["bi-console-superset:6.1.0-local"]
STANDIN_TAGS = [
    "bi-console-standin-kafka-tansu:0.1.0",
    "bi-console-standin-s3-moto:0.1.0",
    "bi-console-standin-postgres-debian:0.1.0",
    "bi-console-standin-connect-debezium-engine:0.1.0",
]
UPSTREAM_NAMES = (
    "apache/kafka",
    "minio/minio",
    "postgres:",
    "quay.io/debezium/connect",
    "mcr.microsoft.com/mssql",
    "apache/superset",
)
BI_STEPS = "ingest,load,transform,test,validate,bi"


def test_standin_file_is_valid_compose_and_keeps_the_policy():
    doc = yaml.safe_load(STANDIN_FILE.read_text())
    schema = json.loads((REPO / "compose" / "schema" / "compose-spec.json").read_text())
    assert [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)] == []
    assert compose_policy_problems(doc, base_dir=STANDIN_FILE.parent) == []
    for name, service in doc["services"].items():
        assert "standin" in service["image"] or service["image"] in LOCAL_TAGS, (
            f"{name} runs {service['image']}, not a stand-in image nor one of the project's own"
        )
        assert not service["image"].startswith(UPSTREAM_NAMES), service["image"]
        assert service["pull_policy"] == "never"
    assert {doc["services"][name]["image"] for name in ("superset", "superset-init")} == set(LOCAL_TAGS)


def test_a_container_running_briefly_between_crashes_is_in_a_restart_loop():
    from datetime import datetime, timedelta, timezone

    from pipeline.runtime.compose import status_from_inspect

    def attrs(restarts: int, up: float) -> dict:
        started = (datetime.now(timezone.utc) - timedelta(seconds=up)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "State": {"Status": "running", "Running": True, "Pid": 42, "ExitCode": 0, "StartedAt": started},
            "RestartCount": restarts,
            "Config": {"Labels": {}},
            "NetworkSettings": {"Ports": {}},
        }

    looping = status_from_inspect("crashloop", attrs(4, 2))
    assert (looping.state, looping.healthy) == ("restarting", False)
    assert looping.health_detail.startswith("restart loop: 4 restarts, running 2s")
    assert status_from_inspect("crashloop", attrs(4, 60)).state == "running"  # it stayed up: a success
    assert status_from_inspect("postgres", attrs(1, 2)).state == "running"  # one restart is not a loop


# --------------------------------------------------------------------------------------


def engine_or_skip():
    import docker

    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - whatever the SDK raised, the reason is shown
        reason = f"no Docker engine answers at {where}: {' '.join(str(exc).split())[:160]}"
        if os.environ.get("BI_REQUIRE_DOCKER") == "1":
            pytest.fail(f"{reason} (BI_REQUIRE_DOCKER=1: compose mode must be proven here)")
        pytest.skip(reason)
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    assert version.returncode == 0, (
        "the engine answers but `docker compose` does not work (install the Compose "
        f"v2 CLI plugin; .ci/run does): {version.stderr.strip()}"
    )
    return client


class ComposeHandle(StackHandle):
    project: str = ""
    root: Path = Path()

    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["docker", "compose", "-p", self.project, "-f", str(STANDIN_FILE), "--env-file", str(self.env_file), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode:
            # The fixture removes the containers, and with them the only evidence of why one failed.
            unhealthy = re.findall(rf"container {re.escape(self.project)}-(\S+)-1 is unhealthy", result.stderr)
            tails = "".join(
                f"\n--- last 40 lines of {service} ---\n"
                + subprocess.run(
                    [
                        "docker",
                        "compose",
                        "-p",
                        self.project,
                        "-f",
                        str(STANDIN_FILE),
                        "--env-file",
                        str(self.env_file),
                        "logs",
                        "--no-color",
                        "--tail",
                        "40",
                        service,
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                ).stdout
                for service in unhealthy
            )
            raise AssertionError(
                f"docker compose {' '.join(args)} exited {result.returncode}: {result.stderr[-3000:]}{tails}"
            )
        return result

    def container(self, service: str):
        return self.client.containers.get(f"{self.project}-{service}-1")

    def wait_healthy(self, service: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.container(service).attrs["State"]
            if (state.get("Health") or {}).get("Status") == "healthy":
                return
            time.sleep(1)
        raise AssertionError(f"{service} not healthy after {timeout}s: {state}")


def remove_by_label(client, project: str) -> list[str]:
    """Whatever carries the project's label: containers, then networks and volumes."""
    removed = []
    label = {"label": f"{PROJECT_LABEL}={project}"}
    for container in client.containers.list(all=True, filters=label):
        container.remove(force=True, v=True)
        removed.append(container.name)
    for network in client.networks.list(filters=label):
        network.remove()
        removed.append(network.name)
    for volume in client.volumes.list(filters=label):
        volume.remove(force=True)
        removed.append(volume.name)
    return removed


@pytest.fixture(scope="module")
def project():
    client = engine_or_skip()
    started = time.monotonic()
    build = subprocess.run(
        [sys.executable, "-m", "cli.images", "build"], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    print(f"images build: {time.monotonic() - started:.0f}s\n{build.stdout}", file=sys.stderr)

    name = f"bi-console-test-{secrets.token_hex(4)}"
    root = Path(tempfile.mkdtemp(prefix="bi-console-compose-"))
    pg, kafka, s3, connect, superset = free_port(), free_port(), free_port(), free_port(), free_port()
    settings = make_settings(
        root / "data",
        runtime="compose",
        compose_project_name=name,
        compose_files=str(STANDIN_FILE),
        pg_port=pg,
        source_host="127.0.0.1",
        source_port=pg,
        kafka_bootstrap=f"127.0.0.1:{kafka}",
        s3_endpoint=f"http://127.0.0.1:{s3}",
        kafka_connect_url=f"http://127.0.0.1:{connect}",
        superset_url=f"http://127.0.0.1:{superset}",
        superset_pg_host="postgres",
        superset_pg_port=5432,
    )
    env_file = write_env(settings, root / ".env")
    with env_file.open("a") as f:  # the compose file's own variables: the host ports of the stand-ins
        f.write(
            f"BI_STANDIN_KAFKA_PORT={kafka}\nBI_STANDIN_S3_PORT={s3}\nBI_STANDIN_CONNECT_PORT={connect}\n"
            f"BI_SUPERSET_PORT={superset}\n"
        )
    handle = ComposeHandle(settings=settings, runtime=ComposeRuntime(name, files=[STANDIN_FILE]), env_file=env_file)
    handle.project, handle.root, handle.client = name, root, client
    try:
        started = time.monotonic()
        handle.compose("up", "-d", "--wait", "--wait-timeout", "300")
        print(f"compose up --wait: {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield handle
    finally:
        handle.compose("down", "-v", "--remove-orphans", "--timeout", "20", check=False)
        left = remove_by_label(client, name)
        shutil.rmtree(root, ignore_errors=True)
        assert left == [], f"docker compose down left {left}"


def cli_json(project: ComposeHandle, *args: str, **kwargs):
    result = project.cli(*args, **kwargs)
    return result, json.loads(result.stdout) if result.stdout.strip() else None


def test_images_are_standins_by_name_and_rebuilds_are_skipped(project):
    for tag in STANDIN_TAGS:
        image = project.client.images.get(tag)
        assert image.labels.get("bi-console.standin-for"), tag
        assert not [t for t in image.tags if t.startswith(UPSTREAM_NAMES)], image.tags
    for tag in LOCAL_TAGS:
        image = project.client.images.get(tag)
        assert "bi-console.standin-for" not in image.labels, tag
        assert not [t for t in image.tags if t.startswith(UPSTREAM_NAMES)], image.tags
    started = time.monotonic()
    again = subprocess.run(
        [sys.executable, "-m", "cli.images", "build"], cwd=REPO, capture_output=True, text=True, timeout=600, check=True
    )
    assert again.stdout.count("up to date, not rebuilt") == 2 + len(LOCAL_TAGS) + len(STANDIN_TAGS), again.stdout
    assert "wheelhouse: up to date" in again.stdout
    assert "superset wheelhouse: up to date" in again.stdout
    assert time.monotonic() - started < 120
    print(f"images build, nothing changed: {time.monotonic() - started:.1f}s", file=sys.stderr)


def test_status_lists_every_container_with_state_health_and_uptime(project):
    result, statuses = cli_json(project, "stack", "status", "--json")
    assert result.returncode == 0, result.stderr
    by_name = {s["name"]: s for s in statuses}
    assert sorted(by_name) == SERVICES
    for name, status in by_name.items():
        attrs = project.container(name).attrs
        if name in ONE_SHOTS:
            assert (status["state"], status["healthy"], status["health_detail"]) == (
                "exited",
                True,
                "completed (exit code 0)",
            ), status
            continue
        assert (status["state"], status["healthy"]) == ("running", True), status
        assert status["pid"] == attrs["State"]["Pid"]
        assert status["uptime_seconds"] > 0
        published = {
            int(b["HostPort"]) for bindings in attrs["NetworkSettings"]["Ports"].values() for b in bindings or []
        }
        assert status["ports"] == sorted(published)
        assert all(
            b["HostIp"] == "127.0.0.1"
            for bindings in attrs["NetworkSettings"]["Ports"].values()
            for b in bindings or []
        )
    assert by_name["postgres"]["ports"] == [project.settings.pg_port]
    assert by_name["superset"]["ports"] == [int(project.settings.superset_url.rsplit(":", 1)[1])]


def test_logs_show_and_follow_a_container(project):
    result = project.cli("stack", "logs", "postgres", "-n", "500")
    assert result.returncode == 0, result.stderr
    assert "postgres stand-in: ready" in result.stdout
    follow = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "--env-file",
            str(project.env_file),
            "stack",
            "logs",
            "kafka-connect",
            "-f",
            "-n",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        time.sleep(3)  # the stream is open before the request it must show
        marker = f"no-such-connector-{secrets.token_hex(3)}"
        import httpx

        assert httpx.get(f"{project.settings.kafka_connect_url}/connectors/{marker}/status").status_code == 404
        deadline = time.monotonic() + 30
        for line in follow.stdout:
            if marker in line:
                break
            assert time.monotonic() < deadline, "the followed log never showed the request"
    finally:
        follow.terminate()
        follow.wait(10)


# The runbook's step 4 query, as tests/stack/test_pipeline.py runs it on the embedded stack.
STEP4_QUERY = """SELECT 'Staging' as layer, COUNT(*)::text as records
FROM staging_staging.stg_product WHERE deleted = false
UNION ALL
SELECT 'Marts', COUNT(*)::text
FROM marts.dim_product;"""


def test_full_and_incremental_refresh_through_containers_match_the_embedded_figures(project):
    seeded = project.seeded()
    assert seeded["topic_events"] == 31_970
    started = time.monotonic()
    result, run = cli_json(project, "refresh", "--full", "--steps", BI_STEPS, "--json")
    print(f"full refresh through containers: {time.monotonic() - started:.1f}s", file=sys.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    assert run["outcome"] == "ok"
    # The embedded stack's figures on the same seed (tests/stack/test_pipeline.py, README).
    assert project.psql("SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM bronze.product_cdc") == [
        (31_970, 31_970)
    ]
    assert project.psql(STEP4_QUERY) == [("Staging", "115"), ("Marts", "115")]
    assert project.psql("SELECT count(*) FROM bronze.measure_unit_cdc") == [(14,)]
    assert project.psql("SELECT count(*) FROM staging_staging.stg_measure_unit") == [(7,)]
    assert_superset_shows(project, run, 115)

    changes = json.loads(project.cli("demo", "changes", "500", check=True).stdout.strip().splitlines()[-1])
    started = time.monotonic()
    result, run = cli_json(project, "refresh", "--incremental", "--steps", BI_STEPS, "--json")
    print(f"incremental refresh through containers: {time.monotonic() - started:.1f}s", file=sys.stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    ingest = next(s for s in run["steps"] if s["step"] == "ingest" and s["table"] == "product")
    assert ingest["counts"]["events"] == 500
    assert project.psql("SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM bronze.product_cdc") == [
        (32_470, 32_470)
    ]
    active = 115 + changes["insert"] - changes["soft_delete"]
    assert project.psql(STEP4_QUERY) == [("Staging", str(active)), ("Marts", str(active))]
    assert_superset_shows(project, run, active)


def assert_superset_shows(project: ComposeHandle, run: dict, products: int) -> None:
    """The refresh's bi step warmed every chart in the Superset container, which reads the
    marts from the postgres container over the compose network, and the dashboard shows
    the marts' count."""
    from pipeline.superset import api

    bi = next(s for s in run["steps"] if s["step"] == "bi")
    assert bi["counts"]["charts_warmed"] == len(api.PRODUCT_CATALOG.charts), bi
    assert bi["counts"]["charts_failed"] == 0, bi
    with api.SupersetClient.from_settings(project.settings) as client:
        database = api.find_database(client)
        uri = client.get(f"/api/v1/database/{database['id']}/connection")["result"]["sqlalchemy_uri"]
        assert "@postgres:5432/" in uri, uri
        dashboard = api.find_dashboard(client, api.PRODUCT_CATALOG.title)
        charts = {c["slice_name"]: int(c["id"]) for c in api.dashboard_charts(client, int(dashboard["id"]))}
        shown = client.chart_data(charts["Product Catalog: Active products"])
    assert shown["is_cached"] is True  # warmed by the bi step
    assert shown["data"][0]["product_count"] == products


def test_check_passes_on_the_containers(project):
    result = project.cli("--check")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "service:postgres" in result.stdout and "PostgreSQL 15" in result.stdout
    # Judged with Superset in the project: the server healthy, its one-shot init completed.
    statuses = {s.name: s for s in project.runtime.status_all()}
    assert (statuses["superset"].state, statuses["superset"].healthy) == ("running", True)
    assert (statuses["superset-init"].state, statuses["superset-init"].healthy) == ("exited", True)


def test_superset_metadata_is_in_postgres_and_the_reader_cannot_connect_to_it(project):
    import psycopg2

    settings = project.settings
    assert project.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'superset'") == [
        (settings.pg_user,)
    ]
    conn = psycopg2.connect(**settings.pg_dsn("superset"))
    try:
        with conn.cursor() as cur:  # written by superset-init: the admin from .env
            cur.execute("SELECT username FROM ab_user")
            assert cur.fetchall() == [(settings.superset_user,)]
    finally:
        conn.close()
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        psycopg2.connect(
            **settings.pg_dsn("superset", user=settings.pg_reader_user, password=settings.pg_reader_password)
        ).close()


def test_stop_start_restart_one_container(project):
    def control(action: str, service: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "cli.services", "--env-file", str(project.env_file), action, service],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result

    control("stop", "kafka-connect")
    assert project.container("kafka-connect").status == "exited"
    assert project.container("postgres").status == "running"  # only the one service
    _, statuses = cli_json(project, "stack", "status", "--json")
    assert {s["name"]: s["healthy"] for s in statuses}["kafka-connect"] is False
    control("start", "kafka-connect")
    project.wait_healthy("kafka-connect")
    before = project.container("kafka-connect").attrs["State"]["StartedAt"]
    control("restart", "kafka-connect")
    assert project.container("kafka-connect").attrs["State"]["StartedAt"] != before
    project.wait_healthy("kafka-connect")
    result, connector = cli_json(project, "connector", "status")
    assert connector["state"] == "RUNNING", result.stderr


def test_a_stopped_superset_container_is_skipped_not_an_outage(project):
    stopped = project.cli("stack", "stop", "superset")
    assert stopped.returncode == 0, stopped.stderr
    try:
        assert project.container("superset").status == "exited"
        status = project.cli("stack", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "superset" in status.stdout + status.stderr
        refresh = project.cli("refresh", "--steps", "bi")
        assert refresh.returncode == 0, refresh.stdout[-2000:] + refresh.stderr[-2000:]
        assert "skipped: superset stopped" in refresh.stdout + refresh.stderr
    finally:
        started = project.cli("stack", "start", "superset")
        assert started.returncode == 0, started.stderr
        project.wait_healthy("superset", timeout=240)


def test_postgres_killed_mid_load_names_the_service_exits_3_and_a_rerun_completes(project):
    from pipeline.stores.kafka import topic_offsets

    project.seeded()
    on_topic = sum(p.high for p in topic_offsets(project.settings, project.settings.table("product").topic))
    env = {"BI_VERBOSE": "1", "BI_INGEST_BATCH_SIZE": "1000"}
    project.cli("refresh", "--full", "--steps", "ingest", "--table", "product", env=env, check=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "--env-file",
            str(project.env_file),
            "refresh",
            "--full",
            "--steps",
            "load",
            "--table",
            "product",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BI_")}, **env},
    )
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if re.search(r"load: 1\d/\d+ objects", line):
            project.container("postgres").kill()
            break
    seen.append(proc.stderr.read())
    proc.wait(120)
    output = "".join(seen)
    assert proc.returncode == 3, output[-3000:]
    assert re.search(r"refresh failed at product:load: postgres \(PostgreSQL at 127\.0\.0\.1:\d+\) was lost", output), (
        output[-3000:]
    )

    project.container("postgres").start()
    project.wait_healthy("postgres")
    result = project.cli("refresh", "--incremental", "--steps", "load,transform", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # Nothing lost, nothing doubled: every event of the topic exactly once.
    assert project.psql("SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM bronze.product_cdc") == [
        (on_topic, on_topic)
    ]


@pytest.fixture
def crashloop(project):
    """A service of the project whose container exits 3 as soon as it starts, restart: always."""
    override = project.root / "crashloop.yml"
    override.write_text(
        yaml.safe_dump(
            {
                "services": {
                    "crashloop": {
                        "image": "bi-console-base-debian:bookworm",
                        "pull_policy": "never",
                        "restart": "always",
                        "command": ["sh", "-c", "echo 'crashloop: exiting 3'; exit 3"],
                    }
                }
            }
        )
    )
    files = ["-f", str(STANDIN_FILE), "-f", str(override)]
    subprocess.run(
        [
            "docker",
            "compose",
            "-p",
            project.project,
            *files,
            "--env-file",
            str(project.env_file),
            "up",
            "-d",
            "crashloop",
        ],
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            status = project.runtime.status("crashloop")
            # Past five restarts the engine's back-off (doubling from 100 ms) keeps the
            # container in `restarting` for seconds between runs of a few milliseconds.
            if status.state == "restarting" and status.restart_count >= 5:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        yield "crashloop"
    finally:
        subprocess.run(
            [
                "docker",
                "compose",
                "-p",
                project.project,
                *files,
                "--env-file",
                str(project.env_file),
                "rm",
                "-sf",
                "crashloop",
            ],
            capture_output=True,
        )


def test_a_container_in_a_restart_loop_shows_in_status_and_check(project, crashloop):
    result, statuses = cli_json(project, "stack", "status", "--json")
    assert result.returncode == 3
    crash = {s["name"]: s for s in statuses}[crashloop]
    assert crash["state"] == "restarting" and re.match(r"restart loop: \d+ restarts", crash["health_detail"])
    check = project.cli("--check")
    assert check.returncode != 0
    assert re.search(r"✗ service:crashloop:restarts\s+fail\s+restart loop: \d+ restarts", check.stdout), check.stdout[
        -3000:
    ]


@pytest.mark.anyio
async def test_a_container_in_a_restart_loop_shows_in_the_tui(project, crashloop):
    from tests.support.tui import wait_for
    from tui.app import BiConsoleApp

    app = BiConsoleApp(project.settings, runtime=project.runtime)
    async with app.run_test(size=(160, 30)) as pilot:
        services = app.view("services")
        shown = await wait_for(pilot, lambda: services.status_of(crashloop), 30, what="crashloop in the view")
        assert shown.state == "restarting" and "restart loop" in shown.health_detail
        table = services.query_one("#services-table")
        await wait_for(pilot, lambda: "crashloop" in str(table.border_title), 10, what="crashloop listed as down")


def test_only_a_lost_server_is_reported_as_postgres_lost(project):
    import psycopg2

    from pipeline.orchestration.refresh import postgres_lost
    from pipeline.stores.db import connect

    conn = connect(project.settings)
    try:
        with pytest.raises(psycopg2.OperationalError) as timeout:
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = 10; SELECT pg_sleep(2)")
        assert timeout.value.pgcode == "57014"  # the server is up: not a lost server
        assert postgres_lost(project.settings, "load", timeout.value) is None
        conn.rollback()
        with pytest.raises(psycopg2.OperationalError) as terminated:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        message = postgres_lost(project.settings, "load", terminated.value)
        assert message.startswith(f"postgres (PostgreSQL at 127.0.0.1:{project.settings.pg_port}) was lost during load")
    finally:
        conn.close()


@pytest.mark.anyio
async def test_tui_services_view_restarts_stops_and_starts_a_real_container(project):
    from tests.support.tui import wait_for
    from tui.app import BiConsoleApp

    app = BiConsoleApp(project.settings, runtime=project.runtime)
    async with app.run_test(size=(120, 30)) as pilot:
        services = app.view("services")
        await wait_for(
            pilot,
            lambda: services.status_of("kafka-connect") and services.status_of("kafka-connect").healthy,
            30,
            what="kafka-connect healthy in the view",
        )
        table = services.query_one("#services-table")
        table.focus()
        table.move_cursor(row=[row.value for row in table.rows].index("kafka-connect"))
        await wait_for(pilot, lambda: services.selected == "kafka-connect", 10, what="kafka-connect selected")
        before = project.container("kafka-connect").attrs["State"]["StartedAt"]
        from tui.confirm import ConfirmScreen

        await pilot.press("r")  # restart asks first (default no): answer yes
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, what="the restart's question")
        await pilot.press("y")
        await wait_for(
            pilot,
            lambda: project.container("kafka-connect").attrs["State"]["StartedAt"] != before,
            60,
            interval=0.5,
            what="the container restarted by 'r'",
        )
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), 5, what="the stop's question")
        await pilot.press("y")
        await wait_for(
            pilot,
            lambda: project.container("kafka-connect").status == "exited",
            60,
            interval=0.5,
            what="the container stopped by 'x'",
        )
        # Stopped right after a restart, the stand-in may still be starting its JVM and end
        # killed at the grace period (137, shown as failed): either way it is down.
        await wait_for(
            pilot,
            lambda: (
                services.status_of("kafka-connect").state in ("exited", "failed")
                and not services.status_of("kafka-connect").healthy
            ),
            15,
            what="the view shows it down",
        )
        await pilot.press("s")
        await wait_for(
            pilot,
            lambda: services.status_of("kafka-connect").healthy,
            120,
            interval=0.5,
            what="the view shows it healthy after 's'",
        )
