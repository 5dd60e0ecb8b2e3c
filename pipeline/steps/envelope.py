"""What a Kafka message must be to enter the raw zone: a Debezium change event (schema
-wrapped or bare) or a tombstone, with a JSON key that names the same row as its value.

Anything else is a poison message; its reason is kept with it in the quarantine.

The raw zone keeps the bare envelope, as Confluent's S3 sink does with its JSON format:
the converter's schema block is the same for every event and two thirds of its size.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import orjson
import simdjson

OPERATIONS = {"c", "u", "d", "r", "t"}


class PoisonMessage(Exception):
    """A message that cannot be a change event. The text is the reason."""


def _parse(raw: bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as utf:
            raise PoisonMessage(f"{what} is not valid UTF-8 (byte {utf.start})") from None
        raise PoisonMessage(f"{what} is not JSON: {exc}") from None


def unwrap(document: Any) -> Any:
    """The payload of a JSON-converter message with schemas enabled, else the document itself."""
    if isinstance(document, dict) and "payload" in document and "schema" in document:
        return document["payload"]
    return document


def _compact(raw: bytes, parsed: Any) -> bytes:
    # Debezium's JSON is compact; anything with a raw newline would break the JSONL line.
    if b"\n" not in raw and b"\r" not in raw:
        return raw
    return orjson.dumps(parsed if parsed is not None else orjson.loads(raw))


def check_event(
    key: bytes | None, value: bytes | None, key_columns: Sequence[str], max_value_bytes: int
) -> tuple[bytes, bytes, bool]:
    """(key JSON, value JSON, is_tombstone) for a good message; raises PoisonMessage otherwise.
    `key_columns` are the table's key, one column or several (a link table's)."""
    if key is None:
        raise PoisonMessage("message has no key")
    key_fields, key_json = _key(key)
    if not isinstance(key_fields, dict):
        raise PoisonMessage(f"key is not an object with the key field(s) {', '.join(map(repr, key_columns))}")
    for column in key_columns:
        if column not in key_fields:
            raise PoisonMessage(f"key has no {column!r} field")
    if value is None:
        return key_json, b"null", True
    if len(value) > max_value_bytes:
        raise PoisonMessage(f"value is {len(value):,} bytes, above the {max_value_bytes:,}-byte limit")
    checked = _well_formed_envelope(value, key_columns, tuple(key_fields[c] for c in key_columns))
    if checked is not None:
        return key_json, checked, False
    envelope, envelope_json = _envelope(value)
    if not isinstance(envelope, dict) or envelope.get("op") not in OPERATIONS:
        raise PoisonMessage("value is not a Debezium change event (no 'op' in c/u/d/r/t)")
    row = envelope.get("before") if envelope["op"] == "d" else envelope.get("after")
    if envelope["op"] != "t":
        if not isinstance(row, dict):
            side = "before" if envelope["op"] == "d" else "after"
            raise PoisonMessage(f"value has op {envelope['op']!r} but no '{side}' row")
        for column in key_columns:
            if column in row and row[column] != key_fields[column]:
                raise PoisonMessage(
                    f"key {column}={key_fields[column]!r} does not match the value's {column}={row[column]!r}"
                )
    return key_json, envelope_json, False


_PAYLOAD_MARK = b',"payload":'


def _schema_block_end(raw: bytes) -> int | None:
    """Where the payload starts in `{"schema":...,"payload":...}` as Kafka Connect's JSON
    converter writes it (payload last), or None for another layout."""
    mark = raw.rfind(_PAYLOAD_MARK)
    if raw.startswith(b'{"schema":') and raw.endswith(b"}") and mark > 0:
        return mark + len(_PAYLOAD_MARK)
    return None


def _envelope(value: bytes) -> tuple[Any, bytes]:
    """(envelope, its JSON text). Kafka Connect's JSON converter writes `{"schema":...,"payload":...}`
    with the payload last: parse only that slice (a 10 kB schema costs ten times its payload to
    parse), and fall back to the whole document when the message has another layout."""
    start = _schema_block_end(value)
    if start is not None:
        payload = value[start:-1]
        try:
            return orjson.loads(payload), _compact(payload, None)
        except orjson.JSONDecodeError:
            pass
    document = _parse(value, "value")
    envelope = unwrap(document)
    if envelope is document:
        return envelope, _compact(value, document)
    return envelope, orjson.dumps(envelope)


class _SchemaBlock:
    """`{"schema":<the schema block>,"payload":` of the last schema-wrapped message seen: a
    topic's keys (or values) share it until the table's schema changes, so the next one's
    payload is found without a search. Rebinding it is atomic under the GIL."""

    def __init__(self) -> None:
        self.prefix = b'{"schema":<none yet>'

    def payload(self, raw: bytes) -> bytes | None:
        """raw's payload text if raw starts with the cached schema block, else None."""
        if raw.startswith(self.prefix) and raw.endswith(b"}"):
            return raw[len(self.prefix) : -1]
        return None

    def learn(self, raw: bytes) -> bytes | None:
        """raw's payload text, caching raw's schema block; None when raw has another layout."""
        start = _schema_block_end(raw)
        if start is None:
            return None
        self.prefix = raw[:start]
        return raw[start:-1]


_value_schema = _SchemaBlock()
_key_schema = _SchemaBlock()


def _key(key: bytes) -> tuple[Any, bytes]:
    """(the key's fields, its JSON text). A key with the previous key's schema block is
    parsed from its payload alone: the schema is most of a key's bytes."""
    cached = _key_schema.payload(key)
    if cached is not None:
        try:
            return orjson.loads(cached), _compact(key, None)
        except orjson.JSONDecodeError:
            pass  # the full parse below decides, and names what is wrong
    document = _parse(key, "key")
    fields = unwrap(document)
    start = _schema_block_end(key) if fields is not document else None
    if start is not None:
        try:
            if orjson.loads(key[start:-1]) == fields:  # the payload is the last field
                _key_schema.prefix = key[:start]
        except orjson.JSONDecodeError:
            pass
    return fields, _compact(key, document)


_thread_state = threading.local()
_ABSENT = object()
# What pysimdjson raises for a document it will not take: ValueError for bad JSON and
# UnicodeDecodeError (a ValueError) for bad UTF-8, but RuntimeError for an integer beyond 64
# bits or nesting beyond its depth limit.
_NOT_PARSED = (ValueError, RuntimeError)


def _parser() -> simdjson.Parser:
    """This thread's simdjson parser: a parser holds one document at a time."""
    parser = getattr(_thread_state, "parser", None)
    if parser is None:
        parser = _thread_state.parser = simdjson.Parser()
    return parser


def is_bare_json_object(text: bytes) -> bool:
    """Whether text is a JSON object, UTF-8 included, that unwrap() keeps as it is (not a
    Kafka Connect `{"schema", "payload"}` wrapper), checked without building it in Python."""
    try:
        document = _parser().parse(text)
    except ValueError:
        return False
    except RuntimeError:
        # An integer beyond 64 bits, or deep nesting: orjson reads the first (as a float,
        # which is enough to decide; the caller keeps the text) and refuses the second.
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            return False
        return isinstance(document, dict) and unwrap(document) is document
    try:
        if not isinstance(document, simdjson.Object):
            return False
        # unwrap()'s test on the list of its keys: looking up an absent key raises inside
        # pysimdjson and costs more than the whole parse.
        keys = dict.fromkeys(document.keys())
        return unwrap(keys) is keys
    finally:
        del document


def _op_and_row_key(payload: bytes, key_columns: Sequence[str]) -> tuple[str, tuple[Any, ...] | None] | None:
    """(op, the key columns' values in the row the op names, or None without that row, each
    _ABSENT without its column) of an envelope; None when it is not one. simdjson checks
    the whole document, UTF-8 included, without building it in Python."""
    try:
        envelope = _parser().parse(payload)
    except _NOT_PARSED:
        return None  # the full path decides
    try:
        if not isinstance(envelope, simdjson.Object):
            return None
        op = envelope.get("op")
        if not isinstance(op, str):
            return None
        row = envelope.get("before" if op == "d" else "after")
        if row is None:
            return op, None
        if not isinstance(row, simdjson.Object):
            return None
        return op, tuple(row.get(column, _ABSENT) for column in key_columns)
    finally:
        del envelope  # the parser refuses a new document while a proxy of this one is alive


def _well_formed_envelope(value: bytes, key_columns: Sequence[str], key_values: tuple[Any, ...]) -> bytes | None:
    """The envelope JSON of a good change event, found without building the event in Python
    (most of ingest's own CPU went there); None when anything is unusual. The caller then
    takes the full path, which decides the same way and names what is wrong."""
    payload = _value_schema.payload(value)  # the previous message's schema block: no search
    if payload is None:
        if value.startswith(b'{"schema":'):
            payload = _value_schema.learn(value)
        elif value.startswith(b"{"):
            payload = value
    if payload is None:
        return None
    found = _op_and_row_key(payload, key_columns)
    if found is None:
        return None
    op, row_key = found
    if op == "t":
        return _compact(payload, None)
    if op not in ("c", "u", "d", "r"):
        return None
    if row_key is None or any(
        value is not _ABSENT and value != expected for value, expected in zip(row_key, key_values, strict=True)
    ):
        return None
    return _compact(payload, None)
