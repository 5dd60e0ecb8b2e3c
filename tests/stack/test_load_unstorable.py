"""Issue 16: no single event blocks a load.

Valid JSON that PostgreSQL's jsonb refuses (U+0000 in a string, a lone UTF-16 surrogate, a
number beyond `numeric`) never fails its object: the known cases are stored repaired and
counted, anything else PostgreSQL refuses goes to the rejects table with its Kafka position
and PostgreSQL's words, and every other row of the object loads in the same run. Raw lines
of a later epoch (the broker lost its topics, offsets began again at 0) load next to the
first epoch's, and staging ranks them epoch before offset.

These tests put raw objects into the stack's S3 server and call load() as a refresh does;
the repair and the row builders on literal bytes are in tests/unit/test_load_unstorable.py.
"""

from __future__ import annotations

import orjson
import pytest

from tests.support.dbt import event_factory

# -- on the stack: each case in an object with good rows around it -----------------------------
TABLE = dict(
    name="unstorable",
    source_table="Unstorable",
    topic="test.unstorable",
    raw_prefix="unstorable/raw",
    bronze_table="unstorable_cdc",
    dbt_selector="",
    staging_relation="stg_unstorable",
    marts_relation="dim_unstorable",
    suites=[],
)
TOPIC = TABLE["topic"]
# (case, the `after` row's JSON text, the Kafka key's JSON text, stored `after` ->> 'Name' or None when refused)
CASES = [
    ("nul_in_value", rb'{"ID":%d,"Name":"A\u0000B"}', rb'{"ID":%d}', "AB"),
    ("nul_in_key", rb'{"ID":%d,"Name":"k"}', rb'{"ID":%d,"Code":"K\u00001"}', "k"),
    ("nul_in_member_name", rb'{"ID":%d,"Na\u0000me":"m"}', rb'{"ID":%d}', "m"),
    ("lone_high_surrogate", rb'{"ID":%d,"Name":"x\ud800y"}', rb'{"ID":%d}', "x\ufffdy"),
    ("lone_low_surrogate", rb'{"ID":%d,"Name":"x\udc00y"}', rb'{"ID":%d}', "x\ufffdy"),
    ("surrogate_pair", rb'{"ID":%d,"Name":"smile \ud83d\ude00"}', rb'{"ID":%d}', "smile \U0001f600"),
    ("escaped_backslash_u0000", rb'{"ID":%d,"Name":"\\u0000"}', rb'{"ID":%d}', "\\u0000"),
    ("number_beyond_double", rb'{"ID":%d,"Name":"big","Weight":1e400}', rb'{"ID":%d}', "big"),
    ("number_beyond_numeric", rb'{"ID":%d,"Name":"huge","Weight":1e1000000}', rb'{"ID":%d}', None),
]
REPAIRED = {"nul_in_value", "nul_in_key", "nul_in_member_name", "lone_high_surrogate", "lone_low_surrogate"}
GOOD_AROUND = 3  # good rows before and after the case's row


def _line(offset: int, after: bytes, key: bytes) -> bytes:
    value = (
        b'{"before":null,"after":' + after + b',"source":{"connector":"sqlserver","commit_lsn":"00000001:'
        b'%08d:0001"},"op":"c","ts_ms":1700000000000}' % offset
    )
    return b'{"topic":"%s","partition":0,"offset":%d,"timestamp":1700000000000,"key":%s,"value":%s}' % (
        TOPIC.encode(),
        offset,
        key,
        value,
    )


def _objects() -> list[tuple[str, str, list[bytes], int]]:
    """(case, object key, lines, offset of the case's row): the case's row between good ones."""
    out = []
    for number, (case, after, key, _) in enumerate(CASES):
        first = number * 100
        lines = [
            _line(first + i, b'{"ID":%d,"Name":"good %d"}' % (first + i, first + i), b'{"ID":%d}' % (first + i))
            for i in range(2 * GOOD_AROUND + 1)
        ]
        at = first + GOOD_AROUND
        lines[GOOD_AROUND] = _line(at, after % at, key % at)
        out.append(
            (case, f"unstorable/raw/batch={TOPIC}+0+{first:020d}+{first + 2 * GOOD_AROUND:020d}.jsonl", lines, at)
        )
    return out


@pytest.mark.faults
def test_each_unstorable_event_is_repaired_or_rejected_and_its_object_loads(stack):
    from pipeline.config import TableConfig
    from pipeline.steps.load import load
    from pipeline.stores.storage import RawStore

    settings = stack.settings
    table = TableConfig(**TABLE)
    store = RawStore(settings)
    objects = _objects()
    for _, key, lines, _ in objects:
        store.put(key, b"\n".join(lines) + b"\n")
    log: list[str] = []
    result = load(settings, table, full=False, log=log.append)
    refused = [o for o in objects if dict((c[0], c[3]) for c in CASES)[o[0]] is None]
    lines_total = sum(len(lines) for _, _, lines, _ in objects)
    assert (result.objects, result.lines, result.rejected, result.sanitized) == (
        len(objects),
        lines_total,
        len(refused),
        len(REPAIRED),
    ), "\n".join(log)
    assert result.inserted == lines_total - len(refused)

    stored = dict(stack.psql("SELECT kafka_offset, cdc_payload -> 'after' ->> 'Name' FROM bronze.unstorable_cdc"))
    for case, key, _lines, at in objects:
        expected_name = dict((c[0], c[3]) for c in CASES)[case]
        good = [at - GOOD_AROUND + i for i in range(2 * GOOD_AROUND + 1) if i != GOOD_AROUND]
        assert all(stored.get(offset) == f"good {offset}" for offset in good), case
        if expected_name is None:
            assert at not in stored, case
        else:
            assert stored.get(at) == expected_name, (case, stored.get(at))
        ((sanitized,),) = stack.psql(
            "SELECT sanitized FROM bi_console.load_manifest WHERE bronze_table = %s AND object_key = %s",
            (table.bronze_table, key),
        )
        assert sanitized == (1 if case in REPAIRED else 0), case
        if case in REPAIRED:
            assert any(f"{key}: 1 event(s) stored repaired" in line for line in log), log
    # The repaired key and member name, exactly.
    assert stack.psql("SELECT kafka_key::text FROM bronze.unstorable_cdc WHERE kafka_offset = 103") == [
        ('{"ID": 103, "Code": "K1"}',)
    ]
    assert stack.psql("SELECT (cdc_payload -> 'after')::text FROM bronze.unstorable_cdc WHERE kafka_offset = 203") == [
        ('{"ID": 203, "Name": "m"}',)
    ]
    assert stack.psql(
        "SELECT (cdc_payload -> 'after' ->> 'Weight')::numeric = 1e400 "
        "FROM bronze.unstorable_cdc WHERE kafka_offset = 703"
    ) == [(True,)]
    # The refused row: where it was in Kafka, PostgreSQL's words, the whole line.
    rejects = stack.psql(
        "SELECT object_key, line_number, kafka_topic, kafka_partition, kafka_offset, kafka_epoch, "
        "reason, line FROM bi_console.load_rejects WHERE bronze_table = %s",
        (table.bronze_table,),
    )
    ((case, key, lines, at),) = refused
    assert len(rejects) == 1
    assert rejects[0][:6] == (key, GOOD_AROUND + 1, TOPIC, 0, at, 0)
    assert "value overflows numeric format" in rejects[0][6]
    assert rejects[0][7] == lines[GOOD_AROUND].decode()
    assert any("PostgreSQL refused the row: value overflows numeric format" in line for line in log)
    # The raw zone keeps the original bytes.
    for _, key, lines, _ in objects:
        assert store.get(key) == b"\n".join(lines) + b"\n"

    def state():
        return (
            stack.psql("SELECT kafka_offset, kafka_key::text, cdc_payload::text FROM bronze.unstorable_cdc ORDER BY 1"),
            stack.psql(
                "SELECT object_key, line_number, kafka_offset, reason, line FROM bi_console.load_rejects "
                "WHERE bronze_table = %s ORDER BY 1, 2",
                (table.bronze_table,),
            ),
            stack.psql(
                "SELECT object_key, lines, inserted, rejected, sanitized FROM bi_console.load_manifest "
                "WHERE bronze_table = %s ORDER BY 1",
                (table.bronze_table,),
            ),
        )

    before = state()
    again = load(settings, table, full=False, log=log.append)
    assert (again.objects, again.skipped, again.inserted) == (0, len(objects), 0)
    assert state() == before
    rebuilt = load(settings, table, full=True, log=log.append)
    assert (rebuilt.objects, rebuilt.inserted, rebuilt.rejected, rebuilt.sanitized) == (
        len(objects),
        result.inserted,
        1,
        len(REPAIRED),
    )
    assert state() == before


# -- epochs ------------------------------------------------------------------------------------
def _record(ev, offset: int, epoch: int, key: dict, value) -> bytes:
    record = ev.record(offset, key, value)
    head = {"topic": record["topic"], "partition": record["partition"], "offset": offset}
    if epoch:
        head["epoch"] = epoch
    return orjson.dumps({**head, "timestamp": record["timestamp"], "key": record["key"], "value": record["value"]})


@pytest.mark.faults
def test_two_epochs_with_the_same_offsets_both_load_and_staging_keeps_a_delete(stack):
    """Epoch 0: 901 created and deleted, 902 created. The broker then lost the topic and
    Debezium re-snapshotted: epoch 1 holds 902 and 903 at offsets 0 and 1 again, and no 901.
    Both epochs load in full; staging has one row per product, 901 the delete."""
    from pipeline.steps.load import load
    from pipeline.steps.transform import DbtProject
    from pipeline.stores.storage import RawStore

    ev = event_factory()
    settings = stack.settings
    table = settings.table("product")
    src = ev.sqlserver_source
    p901, p902, p903 = ev.product_row(901), ev.product_row(902), ev.product_row(903)
    epoch0 = [
        _record(
            ev,
            0,
            0,
            {"ID": 901},
            ev.env("c", None, p901, src("00000010:00000001:0003", "00000010:00000001:0002", 1, 1700000001000)),
        ),
        _record(
            ev,
            1,
            0,
            {"ID": 901},
            ev.env("d", p901, None, src("00000011:00000001:0003", "00000011:00000001:0002", 1, 1700000002000)),
        ),
        _record(ev, 2, 0, {"ID": 901}, None),
        _record(
            ev,
            3,
            0,
            {"ID": 902},
            ev.env("c", None, p902, src("00000012:00000001:0003", "00000012:00000001:0002", 1, 1700000003000)),
        ),
    ]
    snap = lambda: src("00000020:00000001:0001", None, None, 1700000009000, snapshot="true")  # noqa: E731
    epoch1 = [
        _record(ev, 0, 1, {"ID": 902}, ev.env("r", None, dict(p902, Name="902 after the reset"), snap())),
        _record(ev, 1, 1, {"ID": 903}, ev.env("r", None, dict(p903, Name="903 after the reset"), snap())),
    ]
    assert b'"offset":0,"epoch":1,"timestamp"' in epoch1[0]
    store = RawStore(settings)
    prefix = table.raw_objects_prefix
    store.put(f"{prefix}{table.topic}+0+{0:020d}+{3:020d}.jsonl", b"\n".join(epoch0) + b"\n")
    store.put(f"{prefix}epoch=1/{table.topic}+0+{0:020d}+{1:020d}.jsonl", b"\n".join(epoch1) + b"\n")
    result = load(settings, table, full=True, log=print)
    assert (result.objects, result.inserted, result.rejected) == (2, 6, 0)
    assert stack.psql("SELECT kafka_epoch, kafka_offset, record_key FROM bronze.product_cdc ORDER BY 1, 2") == [
        (0, 0, "901"),
        (0, 1, "901"),
        (0, 2, "901"),
        (0, 3, "902"),
        (1, 0, "902"),
        (1, 1, "903"),
    ]
    again = load(settings, table, full=False, log=print)
    assert (again.objects, again.inserted) == (0, 0)

    project = DbtProject(settings, log=print)
    for full_refresh in (True, False):  # a full build and an incremental one agree
        run = project.run("base_product stg_product", full_refresh=full_refresh)
        assert run.success, run.error or run.output[-3000:]
        rows = stack.psql(
            "SELECT product_id, deleted, cdc_operation, kafka_offset, name "
            "FROM staging_staging.stg_product ORDER BY product_id"
        )
        assert rows == [
            (901, True, "d", 1, p901["Name"]),
            (902, False, "r", 0, "902 after the reset"),
            (903, False, "r", 1, "903 after the reset"),
        ], (full_refresh, rows)
