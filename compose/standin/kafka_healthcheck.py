"""Healthy when the broker answers a metadata request (not just an open port)."""

import os
import sys

from confluent_kafka.admin import AdminClient

port = os.environ.get("BI_STANDIN_KAFKA_PORT", "9092")
try:
    AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0}).list_topics(timeout=5)
except Exception as exc:  # noqa: BLE001 - the healthcheck reports whatever failed
    print(f"broker on 127.0.0.1:{port}: {exc}")
    sys.exit(1)
