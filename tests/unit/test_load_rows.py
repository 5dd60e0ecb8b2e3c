"""How load turns raw-zone lines into COPY rows for bronze (pipeline/steps/load.py).

An ordinary line takes the fast path (no JSON built in Python); anything unusual takes
parse_line, which names what is wrong. Both must give the same row, and a bad line must
become a reject with its reason and line number, never a failed COPY."""

from __future__ import annotations

import orjson
import pytest

from bench.producer import Generator
from pipeline.steps.envelope import check_event
from pipeline.steps.ingest import _line
from pipeline.steps.load import CopyRows, _copy_row, _fast_copy_row, parse_line

TOPIC = "cord.ConcordDb.dbo.Product"
OBJECT = "product/raw/batch=cord+0+00000000000000000000+00000000000000000099.jsonl"


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    """Raw-zone lines as ingest writes them: snapshot reads, updates, deletes and tombstones."""
    events = list(Generator(TOPIC).events(62_000))
    chosen = events[:100] + events[61_400:]
    out = []
    for offset, (key, value) in enumerate(chosen):
        key_json, value_json, _ = check_event(key, value, ("ID",), 4 * 1024 * 1024)
        out.append(_line(TOPIC, 0, offset, 1_700_000_000_000 + offset, key_json, value_json))
    return out


def _columns(row: bytes) -> list[bytes]:
    assert row.endswith(b"\n")
    return row[:-1].split(b"\t")


def test_fast_and_full_paths_build_the_same_rows(lines):
    batch_file = OBJECT.encode()
    tombstones = 0
    for line in lines:
        fast = _fast_copy_row(line, batch_file)
        assert fast is not None, line[:200]
        assert fast == _copy_row(parse_line(line), batch_file)
        columns = _columns(fast)
        assert columns[0] == TOPIC.encode() and columns[-1] == batch_file
        tombstones += columns[6] == b"\\N"
    assert tombstones > 0


def test_a_schema_wrapped_value_is_stored_as_its_envelope(lines):
    record = orjson.loads(lines[0])
    envelope = record["value"]
    for wrapped in (
        {"schema": {"type": "struct"}, "payload": envelope},
        {"payload": envelope, "schema": {"type": "struct"}},
        {"schema": {"type": "struct"}, "payload": envelope, "headers": []},
    ):
        line = orjson.dumps({**record, "value": wrapped})
        assert _fast_copy_row(line, b"f") is None  # the full path unwraps it
        value_column = _columns(_copy_row(parse_line(line), b"f"))[6]
        assert orjson.loads(value_column) == envelope
    # An envelope whose text merely mentions the words stays on the fast path.
    mentions = {**envelope, "after": {**envelope["after"], "Description": '"payload" and "schema"'}}
    assert _fast_copy_row(orjson.dumps({**record, "value": mentions}), b"f") is not None


def test_bad_lines_are_rejected_with_their_reason(lines):
    good = lines[:3]
    broken_utf8 = lines[3].replace(b'"Name":"', b'"Name":"\xc3\x28', 1)
    assert broken_utf8 != lines[3]
    bad_key = lines[4].replace(b'"key":{', b'"key":{"x":"\xff",', 1)
    raw_tab = lines[5].replace(b'"value":', b'"value":\t', 1)  # whitespace COPY would misread
    stream = [*good, broken_utf8, b"{not json", b'{"topic": "t"}', bad_key, raw_tab, b"", b"  "]
    rows = CopyRows("product_cdc", OBJECT, iter(stream))
    body = rows.read()
    assert rows.lines == 8  # blank lines are not counted
    reasons = {reject[2]: reject[3] for reject in rows.rejects}
    assert set(reasons) == {4, 5, 6, 7}, reasons
    assert reasons[5].startswith("not JSON") and "missing 'partition'" in reasons[6]
    assert "JSON" in reasons[4] or "UTF-8" in reasons[4]
    stored = [_columns(row + b"\n") for row in body.rstrip(b"\n").split(b"\n")]
    assert len(stored) == 4  # the three good lines and the tab one, made safe by the full path
    assert all(b"\t" not in column for row in stored for column in row[5:7])


def test_an_integer_beyond_64_bits_is_stored_as_written(lines):
    record = orjson.loads(lines[0])
    text = orjson.dumps(record["value"])[:-1] + b',"Checksum":123456789012345678901234567890}'
    line = b'{"topic":"%s","partition":0,"offset":7,"timestamp":null,"key":{"ID":1},"value":%s}' % (
        TOPIC.encode(),
        text,
    )
    row = _fast_copy_row(line, b"f")
    assert row is not None and _columns(row)[6] == text
