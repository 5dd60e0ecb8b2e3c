"""Issue 16: the quarantine keeps every poison message whole, indexes it, and can be acted on
(list, show, replay once the cause is fixed); raw objects the raw zone lost are re-read from
the topic. Poison messages are produced to a topic of their own on the embedded stack;
every expected value below is written from the bytes this test produces."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import orjson
import pytest

from pipeline.config import TableConfig

TOPIC = "test.quarantine"
TABLE = TableConfig(
    name="quarantined",
    source_table="Quarantined",
    topic=TOPIC,
    raw_prefix="quarantined/raw",
    bronze_table="quarantined_cdc",
    dbt_selector="",
    staging_relation="stg_quarantined",
    marts_relation="dim_quarantined",
    suites=[],
)
LIMIT_RAISED = 8 * 1024 * 1024
HUGE_BYTES = 5_500_000


def _event(row_id: int, name: str) -> bytes:
    return orjson.dumps(
        {
            "before": None,
            "after": {"ID": row_id, "Name": name},
            "op": "c",
            "ts_ms": 1_700_000_000_000,
            "source": {"connector": "postgresql", "lsn": 1000 + row_id},
        }
    )


def _huge_event() -> bytes:
    """A good change event of exactly HUGE_BYTES bytes: oversized only by the default limit."""
    head = b'{"before":null,"after":{"ID":8,"Name":"big","Description":"'
    tail = b'"},"op":"c","ts_ms":1700000000000,"source":{"connector":"postgresql","lsn":1008}}'
    return head + b"y" * (HUGE_BYTES - len(head) - len(tail)) + tail


GOOD = {
    0: (b'{"ID":1}', _event(1, "one")),
    2: (b'{"ID":2}', _event(2, "two")),
    5: (b'{"ID":3}', _event(3, "three")),
    8: (b'{"ID":4}', _event(4, "four")),
    10: (b'{"ID":5}', _event(5, "five")),
}
POISON = {
    1: (b'{"ID":7}', b'{"before":null,"after":{"ID":7'),
    3: (b'{"ID":7}', b'\xff\xfe{"op": "c"}'),
    4: (b'{"ID":8}', _huge_event()),
    6: (b'{"ID":9}', b'{"hello": "world", "op": "x"}'),
    7: (b'{"ID":10}', _event(11, "eleven")),
    9: (None, b'{"op":"c","after":{"ID":12}}'),
}
REASONS = {
    1: "value is not JSON",
    3: "value is not valid UTF-8 (byte 0)",
    4: "value is 5,500,000 bytes, above the 4,194,304-byte limit (BI_INGEST_MAX_VALUE_BYTES; raise it, "
    "then `bi-console quarantine replay`)",
    6: "value is not a Debezium change event (no 'op' in c/u/d/r/t)",
    7: "key ID=10 does not match the value's ID=11",
    9: "message has no key",
}


@pytest.fixture(scope="module")
def produced(stack):
    """The test topic: good events and poison messages at the offsets of GOOD and POISON."""
    from confluent_kafka import Producer

    from pipeline.stores.kafka import ensure_topic

    ensure_topic(stack.settings, TOPIC)
    producer = Producer(
        {
            "bootstrap.servers": stack.settings.kafka_bootstrap,
            "acks": "all",
            "message.max.bytes": 16 * 1024 * 1024,
            "linger.ms": 0,
        }
    )
    for offset in range(11):
        key, value = GOOD.get(offset) or POISON[offset]
        producer.produce(TOPIC, key=key, value=value)
        producer.flush(30)  # one at a time: the offsets are the ones this test names
    before = datetime.now(timezone.utc)
    time.sleep(0.01)
    return before


@pytest.mark.faults
def test_poison_messages_are_indexed_and_kept_whole(stack, produced):
    from pipeline.steps import quarantine
    from pipeline.steps.ingest import ingest

    settings = stack.settings
    result = ingest(settings, TABLE, full=False, log=lambda line: None)
    assert (result.events, result.quarantined) == (5, 6)
    entries = quarantine.list_entries(settings, TABLE)
    assert [(e.offset, e.epoch, e.partition, e.value_bytes) for e in entries] == [
        (1, 0, 0, 30),
        (3, 0, 0, 13),
        (4, 0, 0, 5_500_000),
        (6, 0, 0, 29),
        (7, 0, 0, 127),
        (9, 0, 0, 28),
    ]
    for entry in entries:
        assert entry.reason.startswith(REASONS[entry.offset]), (entry.offset, entry.reason)
        assert entry.replayed_at is None
    assert entries[2].reason == REASONS[4]
    assert entries[0].preview == '{"before":null,"after":{"ID":7'
    assert entries[2].preview.startswith('{"before":null,"after":{"ID":8,"Name":"big","Description":"yyy')
    assert entries[2].preview.endswith("…") and len(entries[2].preview) == 161
    # Every message comes back byte for byte, the 5.5 MB one and the invalid UTF-8 one included.
    for offset, (key, value) in POISON.items():
        message = quarantine.show(settings, TABLE, TOPIC, 0, offset)
        assert (message.key, message.value) == (key, value), offset
    with pytest.raises(quarantine.QuarantineNotFound, match="offset 2"):
        quarantine.show(settings, TABLE, TOPIC, 0, 2)

    summary = quarantine.summary(settings, TABLE)
    assert (summary.total, summary.new_since, summary.replayed, summary.pending) == (6, 6, 0, 6)
    assert summary.newest_reason == REASONS[9]  # one batch, one time: the last offset is the newest
    assert quarantine.summary(settings, TABLE, since=produced).new_since == 6
    assert quarantine.summary(settings, TABLE, since=summary.newest_at).new_since == 0

    # A rerun over the same offsets (a crash before the position moved) indexes the same rows.
    index_before = stack.psql("SELECT * FROM bi_console.quarantine WHERE table_name = 'quarantined' ORDER BY 5")
    rerun = ingest(settings, TABLE, full=True, log=lambda line: None)
    assert (rerun.events, rerun.quarantined) == (5, 6)
    assert stack.psql("SELECT * FROM bi_console.quarantine WHERE table_name = 'quarantined' ORDER BY 5") == index_before


@pytest.mark.faults
def test_replay_after_the_limit_is_raised_moves_the_oversized_message_to_bronze(stack, produced):
    from pipeline.steps import quarantine
    from pipeline.steps.load import load
    from pipeline.stores.storage import RawStore

    settings = stack.settings
    loaded = load(settings, TABLE, full=False, log=lambda line: None)
    assert loaded.inserted == 5
    assert stack.psql("SELECT array_agg(kafka_offset ORDER BY kafka_offset) FROM bronze.quarantined_cdc")[0][0] == [
        0,
        2,
        5,
        8,
        10,
    ]

    # With the same rules nothing passes, and nothing is written.
    same = quarantine.replay(settings, TABLE, log=lambda line: None)
    assert (same.checked, same.replayed, same.still_failing, same.objects) == (6, 0, 6, [])

    raised = settings.model_copy(update={"ingest_max_value_bytes": LIMIT_RAISED})
    replayed = quarantine.replay(raised, TABLE, log=lambda line: None)
    replay_object = (
        "quarantined/raw/batch=replay/batch=test.quarantine+0+00000000000000000000+00000000000000000010.jsonl"
    )
    assert (replayed.checked, replayed.replayed, replayed.still_failing, replayed.objects) == (6, 1, 5, [replay_object])
    store = RawStore(settings)
    # The line ingest would have written for it: position, timestamp, key and the value as produced.
    line = store.get(replay_object)
    assert line.startswith(b'{"topic":"test.quarantine","partition":0,"offset":4,"timestamp":')
    assert line.endswith(b',"key":{"ID":8},"value":' + POISON[4][1] + b"}\n")
    etag = next(store.list(replay_object))["ETag"]

    loaded = load(settings, TABLE, full=False, log=lambda line: None)
    assert (loaded.objects, loaded.inserted) == (1, 1)
    assert stack.psql(
        "SELECT kafka_offset, kafka_key::text, octet_length(cdc_payload->'after'->>'Description') "
        "FROM bronze.quarantined_cdc WHERE kafka_offset = 4"
    ) == [
        (
            4,
            '{"ID": 8}',
            HUGE_BYTES
            - len(b'{"before":null,"after":{"ID":8,"Name":"big","Description":"')
            - len(b'"},"op":"c","ts_ms":1700000000000,"source":{"connector":"postgresql","lsn":1008}}'),
        )
    ]
    summary = quarantine.summary(settings, TABLE)
    assert (summary.total, summary.replayed, summary.pending) == (6, 1, 5)
    assert [e.offset for e in quarantine.list_entries(settings, TABLE) if e.replayed_at is not None] == [4]

    # Twice: a no-op (the object is not rewritten, load has nothing new).
    again = quarantine.replay(raised, TABLE, log=lambda line: None)
    assert (again.checked, again.replayed, again.still_failing, again.objects) == (5, 0, 5, [])
    assert next(store.list(replay_object))["ETag"] == etag
    assert load(settings, TABLE, full=False, log=lambda line: None).objects == 0
    assert stack.psql("SELECT count(*) FROM bronze.quarantined_cdc")[0][0] == 6


@pytest.mark.faults
def test_reject_summary_counts_load_rejects(stack, produced):
    from pipeline.steps import quarantine
    from pipeline.steps.load import load
    from pipeline.stores.storage import RawStore

    settings = stack.settings
    assert quarantine.reject_summary(settings, TABLE).total == 0
    store = RawStore(settings)
    key = f"{TABLE.raw_objects_prefix}{TOPIC}+0+{100:020d}+{101:020d}.jsonl"
    store.put(
        key,
        b'{"topic":"test.quarantine","partition":0,"offset":100,"key":{"ID":1},"value":null}\n'
        b'{"topic": "test.quarantine", "partition": 0, "offs\n',
    )
    load(settings, TABLE, full=False, log=lambda line: None)
    rejects = quarantine.reject_summary(settings, TABLE)
    assert (rejects.total, rejects.new_since) == (1, 1)
    assert rejects.newest_reason.startswith("not JSON")
    assert quarantine.reject_summary(settings, TABLE, since=rejects.newest_at).new_since == 0
    store.client.delete_object(Bucket=store.bucket, Key=key)  # the tests below read the topic's objects only


@pytest.mark.faults
def test_missing_raw_objects_are_recovered_from_the_topic_with_the_same_bytes(stack, produced):
    from pipeline.steps.ingest import recover_missing_objects
    from pipeline.stores.storage import RawStore

    settings = stack.settings
    store = RawStore(settings)
    raw_object = f"{TABLE.raw_objects_prefix}{TOPIC}+0+{0:020d}+{10:020d}.jsonl"
    replay_object = f"{TABLE.raw_objects_prefix}replay/batch={TOPIC}+0+{0:020d}+{10:020d}.jsonl"
    originals = {key: store.get(key) for key in (raw_object, replay_object)}
    assert originals[raw_object].count(b"\n") == 5
    for key in originals:
        store.client.delete_object(Bucket=store.bucket, Key=key)
    gone_epoch = f"{TABLE.raw_objects_prefix}epoch=4/{TOPIC}+0+{0:020d}+{10:020d}.jsonl"
    beyond = f"{TABLE.raw_objects_prefix}{TOPIC}+0+{11:020d}+{20:020d}.jsonl"
    # The raw object is re-read with the rules it was written with (the oversized message is not
    # in it); the replay object with the raised limit that let its message pass.
    raised = settings.model_copy(update={"ingest_max_value_bytes": LIMIT_RAISED})
    result = recover_missing_objects(settings, TABLE, [raw_object, gone_epoch, beyond], log=lambda line: None)
    assert result.recovered == [raw_object]
    assert set(result.lost) == {gone_epoch, beyond}
    assert "epoch 4" in result.lost[gone_epoch] and "offsets 0..10" in result.lost[beyond]
    assert store.get(raw_object) == originals[raw_object]
    replays = recover_missing_objects(raised, TABLE, [replay_object], log=lambda line: None)
    assert replays.recovered == [replay_object] and not replays.lost
    assert store.get(replay_object) == originals[replay_object]


@pytest.mark.faults
def test_a_reread_replaces_objects_only_once_their_offsets_are_written_again(stack, produced):
    """A full re-read with another batch size, interrupted (objects written, position not moved),
    then resumed: at every point each good event is in the raw zone, and in the end each is in
    exactly one object, the objects contiguous."""
    import threading

    from pipeline.steps.ingest import StepCancelled, ingest
    from pipeline.stores.storage import RawStore

    settings = stack.settings
    store = RawStore(settings)
    good_offsets = sorted(GOOD)

    def raw_lines() -> tuple[list[tuple[int, int]], list[int]]:
        spans, offsets = [], []
        for obj in store.list(f"{TABLE.raw_objects_prefix}{TOPIC}+"):
            first, last = (int(x) for x in obj["Key"].rsplit(".", 1)[0].split("+")[-2:])
            spans.append((first, last))
            offsets += [orjson.loads(line)["offset"] for line in store.get(obj["Key"]).splitlines()]
        return sorted(spans), sorted(offsets)

    assert raw_lines() == ([(0, 10)], good_offsets)
    cancel = threading.Event()

    def cancel_on_progress(line: str) -> None:
        if " events, " in line:
            cancel.set()

    with pytest.raises(StepCancelled):
        ingest(settings, TABLE, full=True, log=cancel_on_progress, cancel=cancel, batch_size=2)
    spans, offsets = raw_lines()
    assert (0, 10) in spans and len(spans) > 1  # the old object stays until its offsets are all written again
    assert set(offsets) == set(good_offsets)
    ingest(settings, TABLE, full=False, log=lambda line: None, batch_size=2)
    # 6 and 7 are both poison: that batch has a quarantine object only.
    assert raw_lines() == ([(0, 1), (2, 3), (4, 5), (8, 9), (10, 10)], good_offsets)
    ingest(settings, TABLE, full=True, log=lambda line: None)
    assert raw_lines() == ([(0, 10)], good_offsets)
