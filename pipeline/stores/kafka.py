"""Kafka helpers: broker probe, topic creation, end offsets. confluent-kafka only."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # exported, not re-declared

from pipeline.config import Settings
from pipeline.stores.db import ServiceUnreachable

_LIBRDKAFKA_LOG = logging.getLogger("bi_console.librdkafka")
_LIBRDKAFKA_LOG.addHandler(logging.NullHandler())
_LIBRDKAFKA_LOG.propagate = False


def client_config(settings: Settings, **options: Any) -> dict[str, Any]:
    """The base of every Kafka client's configuration. librdkafka's own log lines
    (`%3|...|FAIL|...` for every refused connection) go to a Python logger instead of
    stderr: an unreachable broker is reported once, by the caller, naming BI_KAFKA_BOOTSTRAP."""
    return {"bootstrap.servers": settings.kafka_bootstrap, "logger": _LIBRDKAFKA_LOG, **options}


def admin(settings: Settings, timeout: float = 5.0) -> AdminClient:
    return AdminClient(client_config(settings, **{"socket.timeout.ms": int(timeout * 1000)}))


_TRANSPORT_CODES = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._TIMED_OUT,
    KafkaError._RESOLVE,
    KafkaError.REQUEST_TIMED_OUT,
}


def _is_transport(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return not isinstance(error, KafkaError) or error.code() in _TRANSPORT_CODES


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else (str(exc) or type(exc).__name__)


def broker_unreachable(settings: Settings, exc: KafkaException) -> ServiceUnreachable:
    """The one line for a broker that does not answer, naming the setting to fix (librdkafka's
    own lines are silenced by client_config: this is the only report)."""
    return ServiceUnreachable(
        f"BI_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: cannot connect to the Kafka broker ({_reason(exc)})"
    )


def probe_broker(settings: Settings, timeout: float = 1.0) -> tuple[bool, str]:
    try:
        metadata = admin(settings, timeout).list_topics(timeout=timeout)
    except KafkaException as exc:
        return False, str(broker_unreachable(settings, exc))
    return True, f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s) at {settings.kafka_bootstrap}"


def ensure_topic(settings: Settings, topic: str, partitions: int = 1) -> None:
    client = admin(settings)
    try:
        if topic in client.list_topics(timeout=10).topics:
            return
    except KafkaException as exc:  # list_topics fails only when no broker answers
        raise broker_unreachable(settings, exc) from None
    futures = client.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for future in futures.values():
        try:
            future.result(timeout=10)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc):
                continue
            if _is_transport(exc):
                raise broker_unreachable(settings, exc) from None
            raise RuntimeError(
                f"Kafka at {settings.kafka_bootstrap} refused to create topic {topic}: {_reason(exc)}"
            ) from None


@dataclass
class PartitionOffsets:
    partition: int
    low: int
    high: int


def topic_offsets(settings: Settings, topic: str, timeout: float = 5.0) -> list[PartitionOffsets] | None:
    """Low and high watermarks of every partition, or None if the topic does not exist."""
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "bi-console-offsets",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
                "socket.timeout.ms": int(timeout * 1000),
            },
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            return None
        result = []
        for partition in sorted(info.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout, cached=False)
            result.append(PartitionOffsets(partition, low, _true_high(consumer, topic, partition, low, high, timeout)))
        return result
    except KafkaException as exc:
        if _is_transport(exc):
            raise broker_unreachable(settings, exc) from None
        raise
    finally:
        consumer.close()


def _true_high(consumer: Consumer, topic: str, partition: int, low: int, high: int, timeout: float) -> int:
    """The end offset, read from the log itself.

    tansu answers ListOffsets(latest) with the base offset of the last record batch
    plus one, not the offset after its last record. Reading from there to the
    partition's end gives the true value on tansu and costs one fetch on Kafka.
    """
    if high <= low:
        return high
    consumer.assign([TopicPartition(topic, partition, high - 1)])
    end = high
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in consumer.consume(500, timeout=0.1):
            error, offset = message.error(), message.offset()
            if offset is None:
                continue
            if error is None:
                end = max(end, offset + 1)
            elif error.code() == KafkaError._PARTITION_EOF:
                consumer.unassign()
                return max(end, offset)
    consumer.unassign()
    return end


def topic_event_count(settings: Settings, topic: str) -> int:
    offsets = topic_offsets(settings, topic) or []
    return sum(p.high - p.low for p in offsets)


@dataclass
class TopicMessage:
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes


def newest_message(settings: Settings, topic: str, timeout: float = 10.0, window: int = 50) -> TopicMessage | None:
    """The newest record of the topic that has a value (tombstones carry no schema), from the
    last `window` records of each partition; None when the topic is missing or has none.
    Partitions are assigned, not subscribed: no consumer group is joined, no offset committed."""
    offsets = topic_offsets(settings, topic, timeout)
    if not offsets:
        return None
    consumer = Consumer(
        client_config(
            settings,
            **{
                "group.id": "bi-console-table-add",  # librdkafka wants one; assign() never joins it
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "socket.timeout.ms": int(timeout * 1000),
            },
        )
    )
    newest: TopicMessage | None = None
    try:
        for p in offsets:
            if p.high <= p.low:
                continue
            consumer.assign([TopicPartition(topic, p.partition, max(p.low, p.high - window))])
            deadline = time.monotonic() + timeout
            done = False
            while not done and time.monotonic() < deadline:
                for message in consumer.consume(window, timeout=0.2):
                    error = message.error()
                    if error is not None:
                        done = error.code() == KafkaError._PARTITION_EOF
                        continue
                    value, offset = message.value(), message.offset()
                    if value is None or offset is None:
                        continue
                    _, stamp = message.timestamp()
                    candidate = TopicMessage(
                        p.partition, offset, stamp if stamp and stamp > 0 else None, message.key(), value
                    )
                    if newest is None or _recency(candidate) >= _recency(newest):
                        newest = candidate
                    done = offset + 1 >= p.high
            consumer.unassign()
    except KafkaException as exc:
        if _is_transport(exc):
            raise broker_unreachable(settings, exc) from None
        raise
    finally:
        consumer.close()
    return newest


def _recency(message: TopicMessage) -> tuple[int, int]:
    """Newest first by the record's time; within one time, by offset."""
    return message.timestamp_ms or 0, message.offset
