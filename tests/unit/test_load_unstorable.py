"""Issue 16, without the stack: the repair of valid JSON that jsonb refuses and the epoch
column of both row builders, on literal bytes. tests/stack/test_load_unstorable.py loads
such events through the stack's S3 server."""

from __future__ import annotations

import pytest

from pipeline.steps.load import _copy_row, _fast_copy_row, parse_line, repair_line


# -- the repair, on literal bytes ------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        (rb'{"a":"x\u0000y"}', rb'{"a":"xy"}'),
        (rb'{"a\u0000b":1}', rb'{"ab":1}'),
        (rb'{"a":"\u0000\u0000"}', rb'{"a":""}'),
        (rb'{"a":"x\ud800y"}', rb'{"a":"x\ufffdy"}'),
        (rb'{"a":"x\uDC00y"}', rb'{"a":"x\ufffdy"}'),
        (rb'{"a":"\ud800\u0041"}', rb'{"a":"\ufffd\u0041"}'),  # a high surrogate followed by no low one
        (rb'{"a":"\ude00\ud83d"}', rb'{"a":"\ufffd\ufffd"}'),  # the two halves in the wrong order
        (rb'{"a":"\ud83d\\ude00"}', rb'{"a":"\ufffd\\ude00"}'),  # the "low half" is an escaped backslash + text
    ],
)
def test_repair_removes_nul_and_replaces_lone_surrogates(raw, expected):
    assert repair_line(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        rb'{"a":"\ud83d\ude00"}',  # a valid pair (U+1F600): jsonb stores it
        rb'{"a":"\\u0000"}',  # an escaped backslash followed by the text u0000: not a NUL
        rb'{"a":"\\\\u0000"}',
        rb'{"a":"\u00e9 \\ud800"}',
        rb'{"a":"plain"}',
    ],
)
def test_repair_leaves_storable_json_alone(raw):
    assert repair_line(raw) is raw


def test_the_epoch_is_a_column_of_both_row_builders():
    head = b'{"topic":"t","partition":2,"offset":5,%s"timestamp":7,"key":{"ID":1},"value":{"op":"c","after":{"ID":1}}}'
    for epoch_field, epoch in ((b"", b"0"), (b'"epoch":3,', b"3")):
        line = head % epoch_field
        fast = _fast_copy_row(line, b"obj")
        assert fast == b"t\t2\t5\t" + epoch + b'\t7\t{"ID":1}\t{"op":"c","after":{"ID":1}}\tobj\n'
        assert _copy_row(parse_line(line), b"obj") == fast
    with pytest.raises(Exception, match="'epoch' is not an integer"):
        parse_line(head % b'"epoch":"1",')
