"""The runbook's way (/work/shared/runbook/product-sync-to-bi.md), for comparison.

Step 3, the inline bronze loader: boto3 lists and reads every raw object, and each line
is `json.loads`-ed and inserted row by row (`INSERT ... ON CONFLICT DO NOTHING`,
`json.dumps` of key and value), with one commit at the end. Here it is the runbook's
code with only its endpoints, credentials and target database changed (a scratch
database, so that our bronze table is untouched).

Step 2, Kafka -> MinIO: batches of up to 5,000 records, a `json.loads` of key and value
per record into a dict, then one JSONL object per batch (`json.dumps` per record) put
with boto3. The runbook's `fetch_kafka_batch`/`write_to_minio` live in another
repository; this is their documented behaviour, in its most favourable form (one
long-lived consumer instead of one per batch). Objects go under a scratch prefix and are
deleted after each batch, outside the timed section, so that moto's memory stays bounded.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime

import boto3
import psycopg2
from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipeline.config import Settings


def _s3(settings: Settings):
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
    )


def runbook_step3_loader(settings: Settings, database: str, prefix: str, max_objects: int | None = None) -> dict:
    started = time.monotonic()
    # --- the runbook's Step 3 script (endpoints, credentials and database pointed at the bench) ---
    s3 = _s3(settings)
    conn = psycopg2.connect(
        host=settings.pg_host,
        port=settings.pg_port,
        database=database,
        user=settings.pg_user,
        password=settings.pg_password,
    )
    cur = conn.cursor()
    cur.execute("TRUNCATE TABLE bronze.product_cdc;")
    conn.commit()
    paginator = s3.get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=settings.s3_bucket, Prefix=prefix)
    total_inserted = 0
    objects = 0
    for page in pages:
        for obj in page.get("Contents", []):
            if max_objects is not None and objects >= max_objects:
                break
            objects += 1
            response = s3.get_object(Bucket=settings.s3_bucket, Key=obj["Key"])
            content = response["Body"].read().decode("utf-8")
            for line in content.strip().split("\n"):
                if not line.strip():
                    continue
                record = json.loads(line)
                cur.execute(
                    """
                    INSERT INTO bronze.product_cdc (
                        kafka_topic, kafka_partition, kafka_offset, kafka_timestamp,
                        kafka_key, cdc_payload, batch_file
                    ) VALUES (%s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (kafka_topic, kafka_partition, kafka_offset) DO NOTHING
                """,
                    (
                        record.get("topic"),
                        record.get("partition"),
                        record.get("offset"),
                        record.get("timestamp"),
                        json.dumps(record.get("key")),
                        json.dumps(record.get("value")),
                        obj["Key"],
                    ),
                )
                total_inserted += 1
    conn.commit()
    cur.close()
    conn.close()
    # --- end of the runbook's script ---
    return {"seconds": time.monotonic() - started, "rows": total_inserted, "objects": objects}


def runbook_step2_copy(settings: Settings, topic: str, prefix: str, max_events: int | None = None) -> dict:
    s3 = _s3(settings)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"prefect-fresh-load-{int(time.time())}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    from pipeline.stores.kafka import topic_offsets

    ends = {p.partition: p.high for p in topic_offsets(settings, topic) or []}
    consumer.assign([TopicPartition(topic, p, 0) for p in ends])
    done: set[int] = set()
    total_records = batches = 0
    excluded = 0.0  # the bench's own clean-up of each object, not part of the runbook's work
    started = time.monotonic()
    while len(done) < len(ends) and (max_events is None or total_records < max_events):
        # fetch_kafka_batch(topic, max_records=5000)
        records = []
        while len(records) < 5000 and len(done) < len(ends):
            for message in consumer.consume(5000 - len(records), timeout=1.0):
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        done.add(message.partition())
                        continue
                    raise RuntimeError(message.error().str())
                if message.offset() >= ends[message.partition()] - 1:
                    done.add(message.partition())
                if message.offset() >= ends[message.partition()]:
                    continue
                records.append(
                    {
                        "topic": message.topic(),
                        "partition": message.partition(),
                        "offset": message.offset(),
                        "timestamp": message.timestamp()[1],
                        "key": json.loads(message.key()) if message.key() else None,
                        "value": json.loads(message.value()) if message.value() else None,
                    }
                )
        if not records:
            break
        # write_to_minio(records, bucket, prefix)
        stamp = datetime.utcnow().strftime("%Y%m%d_%H%M%S")
        key = f"{prefix}batch={stamp}_{uuid.uuid4().hex[:8]}.jsonl"
        body = "\n".join(json.dumps(r) for r in records)
        s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body.encode("utf-8"))
        total_records += len(records)
        batches += 1
        t = time.monotonic()
        s3.delete_object(Bucket=settings.s3_bucket, Key=key)
        excluded += time.monotonic() - t
    consumer.close()
    return {"seconds": time.monotonic() - started - excluded, "events": total_records, "objects": batches}
