"""Both runtimes (embedded processes, compose containers) are one interface: the `Runtime`
and `ConnectorControl` protocols, method by method, and settings that serialise themselves."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.runtime.compose import ComposeRuntime
from pipeline.runtime.connect_client import KafkaConnectClient
from pipeline.runtime.embedded import EmbeddedConnector, EmbeddedRuntime
from pipeline.runtime.model import ConnectorControl, Runtime
from pipeline.runtime.select import connector_for, select_runtime
from tests.support import REPO
from tests.support.settings import make_settings


def protocol_members(protocol: type) -> list[str]:
    return sorted(name for name in vars(protocol) if not name.startswith("_") and name not in ("__protocol_attrs__",))


def assert_implements(implementation: type, protocol: type) -> None:
    """Every member of the protocol exists, and every method accepts each of the protocol's
    parameters by the same name and kind, with a default where the protocol has one."""
    for member in protocol_members(protocol):
        assert hasattr(implementation, member), f"{implementation.__name__} has no {member}"
        expected = vars(protocol)[member]
        if not inspect.isfunction(expected):
            continue
        got = inspect.signature(getattr(implementation, member)).parameters
        for name, param in inspect.signature(expected).parameters.items():
            assert name in got, f"{implementation.__name__}.{member} takes no {name!r}"
            assert got[name].kind == param.kind, f"{implementation.__name__}.{member}({name}) is {got[name].kind}"
            if param.default is not inspect.Parameter.empty:
                assert got[name].default is not inspect.Parameter.empty, (
                    f"{implementation.__name__}.{member}({name}) has no default"
                )
        extra = [
            p
            for n, p in got.items()
            if n not in inspect.signature(expected).parameters
            and p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        assert not extra, f"{implementation.__name__}.{member} requires more than the protocol: {extra}"


@pytest.mark.parametrize("implementation", [EmbeddedRuntime, ComposeRuntime])
def test_each_runtime_implements_the_runtime_protocol(implementation):
    assert {"name", "connector", "logs", "status_all"} <= set(protocol_members(Runtime))
    assert_implements(implementation, Runtime)


@pytest.mark.parametrize("implementation", [EmbeddedConnector, KafkaConnectClient])
def test_each_connector_implements_the_connector_protocol(implementation):
    assert_implements(implementation, ConnectorControl)


def test_both_runtimes_and_their_connectors_are_instances_of_the_protocols(tmp_path):
    settings = make_settings(tmp_path / "data", kafka_connect_url="http://127.0.0.1:18083", connector_name="orders-cdc")
    embedded = EmbeddedRuntime(settings)
    compose = ComposeRuntime.from_settings(settings)
    for runtime in (embedded, compose):
        assert isinstance(runtime, Runtime)
        assert isinstance(runtime.connector(), ConnectorControl)
    assert isinstance(embedded.connector(), EmbeddedConnector)
    # compose: the connector runs in Kafka Connect, at the configured URL and name
    client = compose.connector()
    assert isinstance(client, KafkaConnectClient)
    assert (client.base_url, client.connector) == ("http://127.0.0.1:18083", "orders-cdc")


def test_connector_for_asks_the_selected_runtime(tmp_path):
    embedded = make_settings(tmp_path / "data", runtime="embedded")
    assert isinstance(select_runtime(embedded), EmbeddedRuntime)
    assert isinstance(connector_for(embedded), EmbeddedConnector)
    compose = make_settings(tmp_path / "data", runtime="compose", kafka_connect_url="http://127.0.0.1:18084")
    control = connector_for(compose)
    assert isinstance(control, KafkaConnectClient) and control.base_url == "http://127.0.0.1:18084"


def test_the_runtime_selection_is_typed_with_the_protocol():
    from pipeline.runtime import select

    hints = inspect.get_annotations(select.select_runtime, eval_str=True)
    assert hints["return"] is Runtime
    assert inspect.get_annotations(select.connector_for, eval_str=True)["return"] is ConnectorControl
    source = Path(select.__file__).read_text()
    assert ".name ==" not in source, "the selection asks the runtime, it does not branch on its name"


def test_no_step_imports_the_runtime():
    steps = REPO / "pipeline" / "steps"
    offenders = [p.name for p in steps.glob("*.py") if "pipeline.runtime" in p.read_text()]
    assert offenders == []


def test_settings_to_env_reads_back_as_the_same_settings(tmp_path):
    settings = make_settings(tmp_path / "data", cdc_schemas_enable=False, alert_webhook_url=None)
    env = settings.to_env()
    assert env["BI_CDC_SCHEMAS_ENABLE"] == "false"
    assert env["BI_DATA_DIR"] == str(tmp_path / "data")
    assert "BI_ALERT_WEBHOOK_URL" not in env, "an unset setting is left to the reader's default"
    assert all(key.startswith("BI_") for key in env) and all(isinstance(v, str) for v in env.values())
    # A child process that sees only these variables builds the same settings.
    code = (
        "import json; from pipeline.config import load_settings; "
        "print(json.dumps(load_settings(env_file=None).model_dump(mode='json')))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BI_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert json.loads(out) == settings.model_dump(mode="json")
    assert load_settings(env_file=None, **{k.removeprefix("BI_").lower(): v for k, v in env.items()}) == settings
