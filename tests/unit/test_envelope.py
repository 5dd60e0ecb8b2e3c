"""What ingest lets into the raw zone, event by event (pipeline/steps/envelope.py).

A good event takes the fast path (simdjson, a key parsed from its payload alone); anything
unusual takes the full path, which names what is wrong. These check that both decide the
same way, on contract-shaped events from the benchmark generator and on broken ones."""

from __future__ import annotations

import orjson
import pytest

from bench.producer import Generator
from pipeline.steps.envelope import PoisonMessage, check_event

LIMIT = 4 * 1024 * 1024
TOPIC = "cord.ConcordDb.dbo.Product"


@pytest.fixture(scope="module")
def events() -> list[tuple[bytes, bytes | None]]:
    generated = list(Generator(TOPIC).events(62_000))  # past the snapshot: every op and tombstones
    return generated[:200] + generated[61_300:]


def _expected(key: bytes, value: bytes | None) -> tuple[dict, dict | None, bool]:
    """The raw-zone form by the format's definition: a Connect JSON message with schemas
    enabled is exactly {"schema", "payload"}, and the raw zone keeps the payload."""
    key_document = orjson.loads(key)
    assert set(key_document) == {"schema", "payload"}
    if value is None:
        return key_document, None, True
    value_document = orjson.loads(value)
    assert set(value_document) == {"schema", "payload"}
    return key_document, value_document["payload"], False


def test_contract_events_keep_their_bare_envelope(events):
    ops = set()
    for key, value in events:
        key_json, value_json, tombstone = check_event(key, value, ("ID",), LIMIT)
        expected_key, expected_value, expected_tombstone = _expected(key, value)
        assert tombstone == expected_tombstone
        assert orjson.loads(key_json) == expected_key
        assert orjson.loads(value_json) == expected_value
        assert b"\n" not in value_json
        ops.add("tombstone" if tombstone else orjson.loads(value_json)["op"])
    assert ops == {"r", "c", "u", "d", "tombstone"}


# Hand-written Debezium SQL Server events (JSON converter, schemas enabled: schema block first,
# payload last) and the raw-zone form each must become, written out from the envelope format
# rather than derived by the module: the key is kept as written, the value loses its schema
# block and keeps its payload byte for byte, a tombstone's value is JSON null.
_KEY_SCHEMA = (
    b'{"type":"struct","fields":[{"type":"int64","optional":false,"field":"ID"}],'
    b'"optional":false,"name":"cord.ConcordDb.dbo.Product.Key"}'
)
_VALUE_SCHEMA = (
    b'{"type":"struct","fields":[{"type":"struct","fields":[{"type":"int64","optional":false,'
    b'"field":"ID"},{"type":"string","optional":true,"field":"Name"}],"optional":true,'
    b'"name":"cord.ConcordDb.dbo.Product.Value","field":"before"},{"type":"struct","fields":'
    b'[{"type":"int64","optional":false,"field":"ID"},{"type":"string","optional":true,'
    b'"field":"Name"}],"optional":true,"name":"cord.ConcordDb.dbo.Product.Value","field":'
    b'"after"},{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":'
    b'true,"field":"ts_ms"}],"optional":false,"name":"cord.ConcordDb.dbo.Product.Envelope"}'
)


def _wrapped(payload: bytes) -> bytes:
    return (
        b'{"schema":'
        + (_KEY_SCHEMA if payload.startswith(b'{"ID"') else _VALUE_SCHEMA)
        + b',"payload":'
        + payload
        + b"}"
    )


GOLDEN = [
    pytest.param(
        _wrapped(b'{"ID":7800001}'),
        _wrapped(b'{"before":null,"after":{"ID":7800001,"Name":"Filter"},"op":"r","ts_ms":1700000000000}'),
        b'{"before":null,"after":{"ID":7800001,"Name":"Filter"},"op":"r","ts_ms":1700000000000}',
        False,
        id="snapshot",
    ),
    pytest.param(
        _wrapped(b'{"ID":7800002}'),
        _wrapped(b'{"before":null,"after":{"ID":7800002,"Name":"Pump"},"op":"c","ts_ms":1700000001000}'),
        b'{"before":null,"after":{"ID":7800002,"Name":"Pump"},"op":"c","ts_ms":1700000001000}',
        False,
        id="insert",
    ),
    pytest.param(
        _wrapped(b'{"ID":7800001}'),
        _wrapped(
            b'{"before":{"ID":7800001,"Name":"Filter"},"after":{"ID":7800001,"Name":"Oil filter"},'
            b'"op":"u","ts_ms":1700000002000}'
        ),
        b'{"before":{"ID":7800001,"Name":"Filter"},"after":{"ID":7800001,"Name":"Oil filter"},'
        b'"op":"u","ts_ms":1700000002000}',
        False,
        id="update",
    ),
    pytest.param(
        _wrapped(b'{"ID":7800002}'),
        _wrapped(b'{"before":{"ID":7800002,"Name":"Pump"},"after":null,"op":"d","ts_ms":1700000003000}'),
        b'{"before":{"ID":7800002,"Name":"Pump"},"after":null,"op":"d","ts_ms":1700000003000}',
        False,
        id="delete",
    ),
    pytest.param(_wrapped(b'{"ID":7800002}'), None, b"null", True, id="tombstone"),
    pytest.param(
        b'{"ID":7800003}',
        b'{"before":null,"after":{"ID":7800003,"Name":"Belt"},"op":"c","ts_ms":1700000004000}',
        b'{"before":null,"after":{"ID":7800003,"Name":"Belt"},"op":"c","ts_ms":1700000004000}',
        False,
        id="bare-no-schema",
    ),
    # Pretty-printed by some producer: not Connect's compact layout, so the full path unwraps it
    # and writes the payload compact.
    pytest.param(
        _wrapped(b'{"ID":7800004}'),
        b'{\n  "schema": ' + _VALUE_SCHEMA + b',\n  "payload": {"before": null, "after": '
        b'{"ID": 7800004, "Name": "Hose"}, "op": "c", "ts_ms": 1700000005000}\n}',
        b'{"before":null,"after":{"ID":7800004,"Name":"Hose"},"op":"c","ts_ms":1700000005000}',
        False,
        id="indented-wrapped",
    ),
]


@pytest.mark.parametrize("key, value, expected_value, expected_tombstone", GOLDEN)
def test_golden_events_become_their_bare_envelope(key, value, expected_value, expected_tombstone):
    key_json, value_json, tombstone = check_event(key, value, ("ID",), LIMIT)
    assert key_json == key
    assert value_json == expected_value
    assert tombstone is expected_tombstone


def _first_update(events) -> tuple[bytes, bytes, dict]:
    key, value = next((k, v) for k, v in events if v is not None and orjson.loads(v)["payload"]["op"] == "u")
    return key, value, orjson.loads(value)


def test_invalid_utf8_inside_a_text_field_is_named(events):
    key, value, _ = _first_update(events)
    broken = value.replace(b'"Description":"', b'"Description":"\xc3\x28', 1)
    assert broken != value
    with pytest.raises(PoisonMessage, match="not valid UTF-8"):
        check_event(key, broken, ("ID",), LIMIT)


def test_a_key_with_the_cached_schema_but_another_row_is_caught(events):
    key, value, document = _first_update(events)
    check_event(key, value, ("ID",), LIMIT)  # caches this key's schema block
    row_id = document["payload"]["after"]["ID"]
    other = key.replace(f'"ID":{row_id}}}'.encode(), f'"ID":{row_id + 1}}}'.encode())
    with pytest.raises(PoisonMessage, match=f"key ID={row_id + 1} does not match"):
        check_event(other, value, ("ID",), LIMIT)
    no_id = key.replace(f'{{"ID":{row_id}}}'.encode(), b'{"Code":1}')
    with pytest.raises(PoisonMessage, match="key has no 'ID' field"):
        check_event(no_id, value, ("ID",), LIMIT)
    cut = key[:-3]
    with pytest.raises(PoisonMessage, match="key is not JSON"):
        check_event(cut, value, ("ID",), LIMIT)


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda env: env.update(op="x"), "not a Debezium change event"),
        (lambda env: env.pop("op"), "not a Debezium change event"),
        (lambda env: env.update(after=None), "has op 'u' but no 'after' row"),
        (lambda env: env.update(after=[1, 2]), "has op 'u' but no 'after' row"),
    ],
)
def test_envelopes_that_are_not_change_events(events, change, reason):
    key, _, document = _first_update(events)
    change(document["payload"])
    with pytest.raises(PoisonMessage, match=reason):
        check_event(key, orjson.dumps(document), ("ID",), LIMIT)


def test_a_truncated_value_and_a_missing_key(events):
    key, value, _ = _first_update(events)
    with pytest.raises(PoisonMessage, match="value is not JSON"):
        check_event(key, value[: len(value) // 2], ("ID",), LIMIT)
    with pytest.raises(PoisonMessage, match="no key"):
        check_event(None, value, ("ID",), LIMIT)


def test_a_value_with_raw_newlines_is_made_one_line(events):
    key, value, document = _first_update(events)
    spaced = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    _, value_json, _ = check_event(key, spaced, ("ID",), LIMIT)
    assert b"\n" not in value_json and orjson.loads(value_json) == document["payload"]


def test_bare_events_without_the_schema_block(events):
    key, _, document = _first_update(events)
    bare_key = orjson.dumps(orjson.loads(key)["payload"])
    key_json, value_json, _ = check_event(bare_key, orjson.dumps(document["payload"]), ("ID",), LIMIT)
    assert (orjson.loads(key_json), orjson.loads(value_json)) == (orjson.loads(bare_key), document["payload"])


def test_documents_simdjson_refuses_take_the_full_path(events):
    key, _, document = _first_update(events)
    payload = orjson.dumps(document["payload"])
    big = payload[:-1] + b',"Checksum":123456789012345678901234567890}'  # beyond 64 bits: kept as written
    _, value_json, _ = check_event(key, big, ("ID",), LIMIT)
    assert value_json == big
    deep = b'{"op":"c","after":{"ID":1,"x":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    with pytest.raises(PoisonMessage, match="value is not JSON"):
        check_event(b'{"ID":1}', deep, ("ID",), LIMIT)


# -- a link table's composite key ----------------------------------------------------------
LINK_KEY = ("ProductID", "ImageID")


def _link_event(after: dict, key: dict, schemas: bool) -> tuple[bytes, bytes]:
    envelope = {"before": None, "after": after, "source": {"connector": "sqlserver"}, "op": "c", "ts_ms": 1}
    if schemas:
        return orjson.dumps({"schema": {"type": "struct"}, "payload": key}), orjson.dumps(
            {"schema": {"type": "struct"}, "payload": envelope}
        )
    return orjson.dumps(key), orjson.dumps(envelope)


@pytest.mark.parametrize("schemas", [True, False])
def test_a_composite_key_passes_when_every_column_matches_its_row(schemas):
    row = {"ProductID": 7807552, "ImageID": 3, "SortOrder": 1}
    key, value = _link_event(row, {"ProductID": 7807552, "ImageID": 3}, schemas)
    key_json, value_json, tombstone = check_event(key, value, LINK_KEY, LIMIT)
    assert not tombstone
    assert orjson.loads(value_json)["after"] == row


@pytest.mark.parametrize("schemas", [True, False])
def test_a_composite_key_names_the_column_that_disagrees_with_the_row(schemas):
    row = {"ProductID": 7807552, "ImageID": 3}
    key, value = _link_event(row, {"ProductID": 7807552, "ImageID": 4}, schemas)
    with pytest.raises(PoisonMessage, match=r"key ImageID=4 does not match the value's ImageID=3"):
        check_event(key, value, LINK_KEY, LIMIT)


def test_a_composite_key_missing_one_column_names_it():
    key, value = _link_event({"ProductID": 1, "ImageID": 3}, {"ProductID": 1}, schemas=False)
    with pytest.raises(PoisonMessage, match=r"key has no 'ImageID' field"):
        check_event(key, value, LINK_KEY, LIMIT)
    with pytest.raises(PoisonMessage, match=r"key has no 'ImageID' field"):
        check_event(key, None, LINK_KEY, LIMIT)  # a tombstone of the link table too
