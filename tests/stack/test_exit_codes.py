"""Issue 16, item 5: the exit codes of README.md ("Exit codes"), each with one stderr line
naming the setting to fix. Every case runs the real CLI against the real stack with one
setting changed: a refused password, or an S3 / Kafka address where nothing listens."""

# Own stack, isolation needed because test_s3_not_answering_check_exits_3_naming_bi_s3_endpoint_in_seconds
# freezes moto (SIGSTOP): every other module's S3 requests would hang with it.

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.net import free_port

pytestmark = [pytest.mark.faults, pytest.mark.own_stack]

EXIT_UNREACHABLE = 3
LIBRDKAFKA_TEXT = ("%3|", "%4|", "%7|", "KafkaError{", "|FAIL|")


def env_with(stack, tmp_path: Path, name: str, value: str) -> Path:
    """The stack's own settings file with exactly one line changed."""
    text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", stack.env_file.read_text(), flags=re.M)
    assert count == 1, f"{name} is not in the stack's settings file"
    path = tmp_path / f"{name.lower()}.env"
    path.write_text(text)
    return path


def assert_names(result, setting: str) -> str:
    """Exit 3, no traceback, and stderr's last line names the setting. Returns that line."""
    stderr = result.stderr
    assert result.returncode == EXIT_UNREACHABLE, f"exit {result.returncode}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert setting in last, stderr[-3000:]
    return last


def assert_service_line(result, service: str, setting: str) -> str:
    """`stack status`: exit 3 and one stderr line per service that is down. Only the changed
    setting's service is asserted: on a loaded machine the cdc engine's heartbeat may be
    late, and its own line may come after."""
    assert result.returncode == EXIT_UNREACHABLE, f"exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"bi-console: {service} unreachable: ")]
    assert len(lines) == 1 and setting in lines[0], result.stderr[-3000:]
    return lines[0]


def assert_no_librdkafka_lines(result) -> None:
    leaked = [line for line in result.stderr.splitlines() if any(text in line for text in LIBRDKAFKA_TEXT)]
    assert not leaked, "\n".join(leaked[:10])


@pytest.fixture(scope="module")
def wrong_password_env(stack, tmp_path_factory) -> Path:
    return env_with(stack, tmp_path_factory.mktemp("password"), "BI_PG_PASSWORD", "not-the-password")


@pytest.fixture(scope="module")
def dead_s3_env(stack, tmp_path_factory) -> Path:
    return env_with(stack, tmp_path_factory.mktemp("s3"), "BI_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")


@pytest.fixture(scope="module")
def dead_kafka_env(stack, tmp_path_factory) -> Path:
    return env_with(stack, tmp_path_factory.mktemp("kafka"), "BI_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")


# -- a refused password ------------------------------------------------------------


@pytest.mark.parametrize("steps", ["load", "transform", "test", "validate"])
def test_wrong_password_refresh_exits_3_naming_bi_pg_password(stack, wrong_password_env, steps):
    result = stack.cli("refresh", "--steps", steps, env_file=wrong_password_env)
    last = assert_names(result, "BI_PG_PASSWORD")
    assert "refused the password" in last
    assert "not-the-password" not in result.stderr


def test_wrong_password_check_exits_3_naming_bi_pg_password(stack, wrong_password_env):
    result = stack.cli("--check", "--json", env_file=wrong_password_env)
    last = assert_names(result, "BI_PG_PASSWORD")
    assert last.startswith("bi-console: postgres unreachable: BI_PG_PASSWORD"), last
    report = json.loads(result.stdout)  # stdout stays data: the JSON report, nothing else
    assert report["exit_code"] == EXIT_UNREACHABLE
    postgres = next(c for c in report["checks"] if c["name"] == "service:postgres")
    assert postgres["status"] == "fail" and postgres["evidence"].startswith("BI_PG_PASSWORD:"), postgres
    assert "not-the-password" not in result.stdout + result.stderr


def test_wrong_password_stack_status_exits_3_naming_bi_pg_password(stack, wrong_password_env):
    result = stack.cli("stack", "status", env_file=wrong_password_env)
    assert_service_line(result, "postgres", "BI_PG_PASSWORD")
    assert re.search(r"^postgres\s+running\s+DOWN\b", result.stdout, re.M), result.stdout  # the table on stdout
    assert "not-the-password" not in result.stdout + result.stderr


def test_wrong_reader_password_names_bi_pg_reader_password(stack):
    from pipeline.stores.db import ServiceUnreachable, connect_reader

    wrong = stack.settings.model_copy(update={"pg_reader_password": "not-the-password"})
    with pytest.raises(ServiceUnreachable, match=r"^BI_PG_READER_PASSWORD: PostgreSQL at .* user 'bi_reader'$"):
        connect_reader(wrong)
    connect_reader(stack.settings).close()  # the right one connects


# -- S3 unreachable ----------------------------------------------------------------


def test_s3_unreachable_load_exits_3_naming_bi_s3_endpoint(stack, dead_s3_env):
    result = stack.cli("refresh", "--steps", "load", env_file=dead_s3_env)
    last = assert_names(result, "BI_S3_ENDPOINT")
    assert last.startswith("refresh failed at product:load: BI_S3_ENDPOINT=http://127.0.0.1:"), last


def test_s3_unreachable_check_exits_3_naming_bi_s3_endpoint(stack, dead_s3_env):
    result = stack.cli("--check", "--json", env_file=dead_s3_env)
    last = assert_names(result, "BI_S3_ENDPOINT")
    assert last.startswith("bi-console: s3 unreachable: BI_S3_ENDPOINT="), last
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["service:s3"]["status"] == "fail"
    assert checks["service:postgres"]["status"] == checks["service:kafka"]["status"] == "pass"


def test_s3_unreachable_stack_status_exits_3_naming_bi_s3_endpoint(stack, dead_s3_env):
    result = stack.cli("stack", "status", "--json", env_file=dead_s3_env)
    assert_service_line(result, "s3", "BI_S3_ENDPOINT")
    assert {s["name"]: s["healthy"] for s in json.loads(result.stdout)}["s3"] is False  # stdout stays JSON


def test_s3_not_answering_check_exits_3_naming_bi_s3_endpoint_in_seconds(stack):
    """moto frozen (SIGSTOP): it accepts connections and never answers. The probe's own
    timeout ends the wait, not the 30 s a step allows for a large object."""
    import time

    moto = stack.runtime.process("s3").process()
    assert moto is not None
    moto.suspend()
    try:
        started = time.monotonic()
        result = stack.cli("--check", timeout=120)
        elapsed = time.monotonic() - started
    finally:
        moto.resume()
    last = assert_names(result, "BI_S3_ENDPOINT")
    assert "timed out" in last, last
    assert elapsed < 25, f"--check took {elapsed:.1f}s with S3 frozen"


def test_store_calls_raise_one_line_naming_the_setting(stack):
    """Each RawStore call, in process: nothing listening -> ServiceUnreachable naming
    BI_S3_ENDPOINT (a retry may succeed later); a missing bucket -> S3Refused naming
    BI_S3_BUCKET (a setting is wrong, retrying cannot help); a missing object stays
    botocore's own NoSuchKey (no setting is at fault)."""
    from botocore.exceptions import ClientError

    from pipeline.stores.db import ServiceUnreachable
    from pipeline.stores.storage import RawStore, S3Refused

    dead = RawStore(stack.settings.model_copy(update={"s3_endpoint": f"http://127.0.0.1:{free_port()}"}), retries=1)
    no_bucket = RawStore(stack.settings.model_copy(update={"s3_bucket": "no-such-bucket"}), retries=1)
    calls = {
        "list": lambda s: list(s.list("x/")),
        "get": lambda s: s.get("x"),
        "lines": lambda s: list(s.lines("x")),
        "put": lambda s: s.put("x/y", b"{}"),
        "delete_prefix": lambda s: s.delete_prefix("x/"),
    }
    for name, call in calls.items():
        with pytest.raises(ServiceUnreachable, match=r"^BI_S3_ENDPOINT=http://127\.0\.0\.1:\d+: cannot") as down:
            call(dead)
        assert not isinstance(down.value, S3Refused), name
        with pytest.raises(S3Refused, match=r"^BI_S3_BUCKET=no-such-bucket: no such bucket"):
            call(no_bucket)
    assert dead.probe()[0] is False and dead.probe()[1].startswith("BI_S3_ENDPOINT=")
    with pytest.raises(ClientError, match="NoSuchKey"):
        RawStore(stack.settings).get("no/such/object.jsonl")


def test_missing_bucket_load_exits_3_naming_bi_s3_bucket(stack, tmp_path):
    env = env_with(stack, tmp_path, "BI_S3_BUCKET", "no-such-bucket")
    result = stack.cli("refresh", "--steps", "load", env_file=env)
    last = assert_names(result, "BI_S3_BUCKET=no-such-bucket")
    assert "no such bucket" in last


# -- Kafka unreachable -------------------------------------------------------------


def test_kafka_unreachable_ingest_exits_3_naming_bi_kafka_bootstrap(stack, dead_kafka_env):
    result = stack.cli("refresh", "--steps", "ingest", env_file=dead_kafka_env)
    last = assert_names(result, "BI_KAFKA_BOOTSTRAP")
    assert last.startswith("refresh failed at product:ingest: BI_KAFKA_BOOTSTRAP=127.0.0.1:"), last
    assert_no_librdkafka_lines(result)


def test_kafka_unreachable_check_exits_3_naming_bi_kafka_bootstrap(stack, dead_kafka_env):
    result = stack.cli("--check", env_file=dead_kafka_env)
    last = assert_names(result, "BI_KAFKA_BOOTSTRAP")
    assert last.startswith("bi-console: kafka unreachable: BI_KAFKA_BOOTSTRAP="), last
    assert_no_librdkafka_lines(result)
    assert "✗ service:kafka" in result.stdout  # the table stays on stdout


def test_kafka_unreachable_check_with_refresh_exits_3_naming_bi_kafka_bootstrap(stack, dead_kafka_env):
    """`--check --refresh`: the refresh's own failure is unreachable too, and said on stderr."""
    result = stack.cli("--check", "--json", "--refresh", "incremental", env_file=dead_kafka_env)
    assert_names(result, "BI_KAFKA_BOOTSTRAP")
    assert_no_librdkafka_lines(result)
    assert re.search(r"^bi-console: refresh failed at product:ingest: BI_KAFKA_BOOTSTRAP=", result.stderr, re.M)
    report = json.loads(result.stdout)
    assert report["exit_code"] == EXIT_UNREACHABLE
    assert report["checks"][0]["name"] == "refresh" and report["checks"][0]["status"] == "fail"


def test_kafka_unreachable_stack_status_exits_3_naming_bi_kafka_bootstrap(stack, dead_kafka_env):
    result = stack.cli("stack", "status", env_file=dead_kafka_env)
    assert_service_line(result, "kafka", "BI_KAFKA_BOOTSTRAP")
    assert_no_librdkafka_lines(result)


def test_kafka_unreachable_demo_changes_exits_3_naming_bi_kafka_bootstrap(stack, dead_kafka_env):
    """demo waits for its events on the topic: an unreachable broker ends the wait at once."""
    result = stack.cli("demo", "changes", "1", env_file=dead_kafka_env, timeout=120)
    assert_names(result, "BI_KAFKA_BOOTSTRAP")
    assert_no_librdkafka_lines(result)


# -- S3 refuses the credentials ------------------------------------------------------
# moto checks signatures against its IAM users once /moto-api/reset-auth switches that on;
# until then it accepts any key. Each test switches it on for itself and off again.


@pytest.fixture
def s3_checks_credentials(stack):
    """An IAM user's key id and secret (created while moto still accepts anything; the user
    has no policy), then moto checking every request's access key, signature and policy."""
    import boto3
    import httpx

    endpoint = stack.settings.s3_endpoint
    iam = boto3.client(
        "iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup"
    )
    iam.create_user(UserName="exit-codes")
    key = iam.create_access_key(UserName="exit-codes")["AccessKey"]
    key_id = key["AccessKeyId"]
    httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()
    try:
        yield key_id, key["SecretAccessKey"]
    finally:
        httpx.post(f"{endpoint}/moto-api/reset-auth", content=b"inf").raise_for_status()
        iam.delete_access_key(UserName="exit-codes", AccessKeyId=key_id)
        iam.delete_user(UserName="exit-codes")


def test_unknown_s3_access_key_exits_3_naming_bi_s3_access_key(stack, s3_checks_credentials):
    load = stack.cli("refresh", "--steps", "load")  # the stack's key is no IAM user's
    assert "InvalidAccessKeyId" in assert_names(load, "BI_S3_ACCESS_KEY")
    check = assert_names(stack.cli("--check"), "BI_S3_ACCESS_KEY")
    assert check.startswith("bi-console: s3 unreachable: BI_S3_ACCESS_KEY:"), check


def test_wrong_s3_secret_exits_3_naming_bi_s3_secret_key(stack, tmp_path, s3_checks_credentials):
    env = env_with(stack, tmp_path, "BI_S3_ACCESS_KEY", s3_checks_credentials[0])  # a real key id, not its secret
    load = stack.cli("refresh", "--steps", "load", env_file=env)
    assert "SignatureDoesNotMatch" in assert_names(load, "BI_S3_SECRET_KEY")
    assert_names(stack.cli("--check", env_file=env), "BI_S3_SECRET_KEY")
    for secret in stack.settings.secret_values():
        assert secret not in load.stderr


def test_s3_denying_the_bucket_exits_3_naming_both_keys(stack, tmp_path, s3_checks_credentials):
    key_id, secret = s3_checks_credentials
    env = env_with(stack, tmp_path, "BI_S3_ACCESS_KEY", key_id)
    env.write_text(re.sub(r"^BI_S3_SECRET_KEY=.*$", f"BI_S3_SECRET_KEY={secret}", env.read_text(), flags=re.M))
    load = stack.cli("refresh", "--steps", "load", env_file=env)
    assert "denied access to bucket" in assert_names(load, "BI_S3_ACCESS_KEY/BI_S3_SECRET_KEY")
    assert secret not in load.stderr


# -- Superset unreachable (the stack runs without it: nothing listens on BI_SUPERSET_URL) --


@pytest.mark.parametrize("command", [("bi", "status"), ("bi", "refresh")])
def test_superset_unreachable_bi_exits_3_naming_bi_superset_url(stack, command):
    last = assert_names(stack.cli(*command, timeout=120), "BI_SUPERSET_URL")
    assert last.startswith("bi-console: BI_SUPERSET_URL="), last
