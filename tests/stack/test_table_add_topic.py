"""`bi-console table add --from-topic`: the contract comes from the newest change event of a
real broker's topic (tansu, started alone), read by assignment without joining a group."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from confluent_kafka import Producer

from pipeline.config.contracts import load_contract
from pipeline.stores.kafka import client_config, ensure_topic, newest_message
from tests.support import REPO
from tests.support.dbt import read_events
from tests.support.settings import make_settings
from tests.support.stack import write_env

pytestmark = pytest.mark.timeout(300)
TOPIC = "cord.ConcordDb.dbo.Product"


@pytest.fixture(scope="module")
def broker():
    from pipeline.runtime.embedded import EmbeddedRuntime

    root = Path(tempfile.mkdtemp(prefix="bi-console-table-add-"))
    (root / "bi-console.toml").write_text("# the operator's own file\n")
    settings = make_settings(root / "data", own_ports=True, config_file=str(root / "bi-console.toml"))
    runtime = EmbeddedRuntime(settings)
    runtime.start("kafka", log=lambda line: None)
    try:
        yield settings, root
    finally:
        runtime.stop("kafka")
        shutil.rmtree(root, ignore_errors=True)


def produce(settings, topic: str, records: list[tuple[object, object]]) -> None:
    ensure_topic(settings, topic)
    producer = Producer(client_config(settings))
    for key, value in records:
        producer.produce(topic, key=json.dumps(key), value=None if value is None else json.dumps(value))
    assert producer.flush(30) == 0


def test_the_contract_of_a_topic_from_its_newest_event(broker):
    settings, root = broker
    wrapped = [r for r in read_events("product_sqlserver.jsonl") if r["value"] and "schema" in r["value"]]
    assert len(wrapped) >= 2
    # The schema-wrapped events of the fixture, then a tombstone: the newest event with a value is read.
    produce(settings, TOPIC, [(r["key"], r["value"]) for r in wrapped] + [(wrapped[-1]["key"], None)])
    message = newest_message(settings, TOPIC)
    assert message is not None and message.offset == len(wrapped) - 1
    assert json.loads(message.value) == wrapped[-1]["value"]

    shutil.copytree(REPO / "dbt", root / "dbt", ignore=shutil.ignore_patterns("target", "logs"))
    env_file = write_env(settings, root / ".env")
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "--env-file", str(env_file), "table", "add", "product_copy"]
        + ["--from-topic", TOPIC, "--dbt-dir", "dbt"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "product_copy: 49 columns, key ID, from ConcordDb.dbo.Product" in done.stderr
    contract = load_contract(root / "dbt", "product_copy")
    assert contract.source == "ConcordDb.dbo.Product" and contract.key_columns == ["ID"]
    assert len(contract.columns) == 49
    by_source = {c.source_column: c for c in contract.columns}
    # What the fixture's schema says of each column (see make_events.PRODUCT_FIELDS), by hand:
    expected = {
        "ID": ("bigint", False, False),  # int64
        "Updated": ("datetime2(7)", True, False),  # io.debezium.time.NanoTimestamp
        "Created": ("datetime", True, True),  # io.debezium.time.Timestamp: smalldatetime looks the same
        "Deleted": ("bit", True, False),  # boolean
        "Name": ("nvarchar(max)", True, True),  # string: no length in the schema
        "Weight": ("float", True, True),  # float64
        "SourceAmgID": ("varbinary(max)", True, True),  # bytes
        "MeasureUnitID": ("bigint", True, False),
    }
    got = {k: (by_source[k].source_type, by_source[k].nullable, by_source[k].note is not None) for k in expected}
    assert got == expected
    assert "guessed from the topic's schema" in by_source["Name"].note
    assert contract.note.startswith(f"read from the Debezium schema of topic {TOPIC}; ")
    config = (root / "bi-console.toml").read_text()
    assert config.startswith("# the operator's own file\n")
    assert f'topic = "{TOPIC}"' in config and 'name = "product_copy"' in config


def test_a_topic_without_events_or_without_schemas_is_refused(broker):
    settings, root = broker
    env_file = write_env(settings, root / ".env")

    def add(name: str, topic: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "cli.main",
                "--env-file",
                str(env_file),
                "table",
                "add",
                name,
                "--from-topic",
                topic,
            ],
            cwd=root,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(root)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    missing = add("nothing_here", "cord.ConcordDb.dbo.Nothing")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "bi-console: table add: topic cord.ConcordDb.dbo.Nothing does not exist or holds no change event; "
        "use --from-ddl"
    )
    bare = [r for r in read_events("measure_unit_sqlserver.jsonl") if r["value"]]
    produce(settings, "cord.ConcordDb.dbo.MeasureUnit", [(r["key"], r["value"]) for r in bare])
    schemaless = add("measure_unit_copy", "cord.ConcordDb.dbo.MeasureUnit")
    assert schemaless.returncode == 2 and "its messages carry no schema" in schemaless.stderr
