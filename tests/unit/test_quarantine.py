"""Issue 16, without the stack: the epoch in raw lines and object names, the notice of a topic
reset, and the settings named when S3 or Kafka is away. The poison messages themselves are
in tests/stack/test_quarantine.py, on the embedded stack."""

from __future__ import annotations

import pytest

from tests.stack.test_quarantine import TABLE, TOPIC


def test_raw_line_carries_its_epoch_after_the_offset_and_epoch_0_is_unchanged():
    from pipeline.steps.ingest import _line

    assert (
        _line("t", 0, 5, 7, b'{"ID":1}', b"null")
        == b'{"topic":"t","partition":0,"offset":5,"timestamp":7,"key":{"ID":1},"value":null}\n'
    )
    assert (
        _line("t", 3, 5, None, b'{"ID":1}', b'{"op":"d"}', epoch=2)
        == b'{"topic":"t","partition":3,"offset":5,"epoch":2,"timestamp":null,"key":{"ID":1},"value":{"op":"d"}}\n'
    )


def test_object_names_by_epoch():
    from pipeline.steps.ingest import object_key, parse_object_key, quarantine_key
    from pipeline.steps.quarantine import replay_key

    assert (
        object_key(TABLE, TOPIC, 0, 5, 99)
        == "quarantined/raw/batch=test.quarantine+0+00000000000000000005+00000000000000000099.jsonl"
    )
    assert (
        object_key(TABLE, TOPIC, 1, 5, 99, epoch=3)
        == "quarantined/raw/batch=epoch=3/test.quarantine+1+00000000000000000005+00000000000000000099.jsonl"
    )
    assert (
        quarantine_key(TABLE, TOPIC, 1, 5, 99, epoch=3)
        == "quarantined/quarantine/epoch=3/batch=test.quarantine+1+00000000000000000005+00000000000000000099.jsonl"
    )
    assert parse_object_key(
        TABLE, "quarantined/raw/batch=epoch=3/a+b+1+00000000000000000005+00000000000000000099.jsonl"
    ) == (3, "a+b", 1, 5, 99)
    assert parse_object_key(TABLE, "quarantined/raw/batch=replay/batch=x+0+1+2.jsonl") is None
    assert (
        replay_key(TABLE, "quarantined/quarantine/epoch=2/batch=t+0+1+9.jsonl")
        == "quarantined/raw/batch=replay/epoch=2/batch=t+0+1+9.jsonl"
    )


def test_epoch_reset_notice_says_what_was_kept():
    from pipeline.steps.ingest import EpochReset

    reset = EpochReset(
        "product",
        "cord.P",
        0,
        0,
        1,
        "it now ends at offset 141 but offsets up to 7309 were read before",
        0,
        12,
        32_895,
        32_530,
    )
    assert reset.notice() == (
        "topic cord.P partition 0 was reset (it now ends at offset 141 but offsets up to 7309 were read before): "
        "epoch 1 started at offset 0; epoch 0 keeps 32,895 offsets in 12 raw objects and 32,530 events in bronze; "
        "nothing was deleted"
    )


def test_s3_that_stays_away_names_bi_s3_endpoint(tmp_path):
    """A real client against a port nobody listens on: ingest gives up with the setting to fix
    (the refresh then exits 3), after logging its retries."""
    from pipeline.steps.ingest import put_with_retry
    from pipeline.stores.db import ServiceUnreachable
    from pipeline.stores.storage import RawStore
    from tests.support.net import free_port
    from tests.support.settings import make_settings

    settings = make_settings(tmp_path, own_ports=True, s3_endpoint=f"http://127.0.0.1:{free_port()}")
    retries: list[str] = []
    with pytest.raises(ServiceUnreachable) as raised:
        put_with_retry(
            RawStore(settings, timeout=1.0, retries=1),
            "product/raw/batch=x.jsonl",
            b"{}\n",
            retries.append,
            None,
            max_wait=1.0,
        )
    assert str(raised.value).startswith(
        f"BI_S3_ENDPOINT={settings.s3_endpoint}: S3 unreachable, could not write product/raw/batch=x.jsonl after "
    )
    assert retries and all("retrying in" in line for line in retries)


def test_kafka_that_is_away_names_bi_kafka_bootstrap(tmp_path):
    from pipeline.steps.ingest import ingest
    from pipeline.stores.db import ServiceUnreachable
    from tests.support.net import free_port
    from tests.support.settings import make_settings

    settings = make_settings(tmp_path, own_ports=True, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with pytest.raises(ServiceUnreachable, match=f"^BI_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: "):
        ingest(settings, TABLE, full=False, log=lambda line: None)
