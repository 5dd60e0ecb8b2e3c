"""What ingest lets into the raw zone, event by event (pipeline/steps/envelope.py).

A good event takes the fast path (simdjson, a key parsed from its payload alone); anything
unusual takes the full path, which names what is wrong. These check that both decide the
same way, on contract-shaped events from the benchmark generator and on broken ones."""

from __future__ import annotations

import orjson
import pytest

from bench.producer import Generator
from pipeline.steps.envelope import PoisonMessage, check_event, unwrap

LIMIT = 4 * 1024 * 1024
TOPIC = "cord.ConcordDb.dbo.Product"


@pytest.fixture(scope="module")
def events() -> list[tuple[bytes, bytes | None]]:
    generated = list(Generator(TOPIC).events(62_000))  # past the snapshot: every op and tombstones
    return generated[:200] + generated[61_300:]


def _expected(key: bytes, value: bytes | None) -> tuple[bytes, bytes, bool]:
    """The raw-zone form built the slow way: the bare envelope, compact."""
    if value is None:
        return key, b"null", True
    return key, orjson.dumps(unwrap(orjson.loads(value))), False


def test_contract_events_keep_their_bare_envelope(events):
    ops = set()
    for key, value in events:
        key_json, value_json, tombstone = check_event(key, value, "ID", LIMIT)
        expected_key, expected_value, expected_tombstone = _expected(key, value)
        assert tombstone == expected_tombstone
        assert orjson.loads(key_json) == orjson.loads(expected_key)
        assert orjson.loads(value_json) == orjson.loads(expected_value)
        assert b"\n" not in value_json
        ops.add("tombstone" if tombstone else orjson.loads(value_json)["op"])
    assert ops == {"r", "c", "u", "d", "tombstone"}


def _first_update(events) -> tuple[bytes, bytes, dict]:
    key, value = next((k, v) for k, v in events if v is not None and orjson.loads(v)["payload"]["op"] == "u")
    return key, value, orjson.loads(value)


def test_invalid_utf8_inside_a_text_field_is_named(events):
    key, value, _ = _first_update(events)
    broken = value.replace(b'"Description":"', b'"Description":"\xc3\x28', 1)
    assert broken != value
    with pytest.raises(PoisonMessage, match="not valid UTF-8"):
        check_event(key, broken, "ID", LIMIT)


def test_a_key_with_the_cached_schema_but_another_row_is_caught(events):
    key, value, document = _first_update(events)
    check_event(key, value, "ID", LIMIT)  # caches this key's schema block
    row_id = document["payload"]["after"]["ID"]
    other = key.replace(f'"ID":{row_id}}}'.encode(), f'"ID":{row_id + 1}}}'.encode())
    with pytest.raises(PoisonMessage, match=f"key ID={row_id + 1} does not match"):
        check_event(other, value, "ID", LIMIT)
    no_id = key.replace(f'{{"ID":{row_id}}}'.encode(), b'{"Code":1}')
    with pytest.raises(PoisonMessage, match="key has no 'ID' field"):
        check_event(no_id, value, "ID", LIMIT)
    cut = key[:-3]
    with pytest.raises(PoisonMessage, match="key is not JSON"):
        check_event(cut, value, "ID", LIMIT)


@pytest.mark.parametrize("change, reason", [
    (lambda env: env.update(op="x"), "not a Debezium change event"),
    (lambda env: env.pop("op"), "not a Debezium change event"),
    (lambda env: env.update(after=None), "has op 'u' but no 'after' row"),
    (lambda env: env.update(after=[1, 2]), "has op 'u' but no 'after' row"),
])
def test_envelopes_that_are_not_change_events(events, change, reason):
    key, _, document = _first_update(events)
    change(document["payload"])
    with pytest.raises(PoisonMessage, match=reason):
        check_event(key, orjson.dumps(document), "ID", LIMIT)


def test_a_truncated_value_and_a_missing_key(events):
    key, value, _ = _first_update(events)
    with pytest.raises(PoisonMessage, match="value is not JSON"):
        check_event(key, value[: len(value) // 2], "ID", LIMIT)
    with pytest.raises(PoisonMessage, match="no key"):
        check_event(None, value, "ID", LIMIT)


def test_a_value_with_raw_newlines_is_made_one_line(events):
    key, value, document = _first_update(events)
    spaced = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    _, value_json, _ = check_event(key, spaced, "ID", LIMIT)
    assert b"\n" not in value_json and orjson.loads(value_json) == document["payload"]


def test_bare_events_without_the_schema_block(events):
    key, _, document = _first_update(events)
    bare_key = orjson.dumps(orjson.loads(key)["payload"])
    key_json, value_json, _ = check_event(bare_key, orjson.dumps(document["payload"]), "ID", LIMIT)
    assert (orjson.loads(key_json), orjson.loads(value_json)) == (orjson.loads(bare_key), document["payload"])


def test_documents_simdjson_refuses_take_the_full_path(events):
    key, _, document = _first_update(events)
    payload = orjson.dumps(document["payload"])
    big = payload[:-1] + b',"Checksum":123456789012345678901234567890}'  # beyond 64 bits: kept as written
    _, value_json, _ = check_event(key, big, "ID", LIMIT)
    assert value_json == big
    deep = b'{"op":"c","after":{"ID":1,"x":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    with pytest.raises(PoisonMessage, match="value is not JSON"):
        check_event(b'{"ID":1}', deep, "ID", LIMIT)
