"""A benchmark stack that stays up, for profiling one step at a time (development aid).

python -m bench.devstack --events 100000 --env /tmp/bench.env   # starts, produces, ingests, waits
env $(cat /tmp/bench.env) python -m bench.child load '{"full": true}'
kill <pid printed>                                               # stops the stack
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from bench.harness import Stack
from bench.producer import Generator, produce
from pipeline.stores.kafka import ensure_topic


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--env", required=True)
    parser.add_argument("--compression", default="none", help="producer compression (none, lz4, ...)")
    args = parser.parse_args()
    stack = Stack.start(lambda line: print(line, file=sys.stderr))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        table = stack.settings.table("product")
        ensure_topic(stack.settings, table.topic)
        print(
            produce(stack.settings.kafka_bootstrap, Generator(table.topic), args.events, compression=args.compression),
            file=sys.stderr,
        )
        with open(args.env, "w") as fh:
            for key, value in stack.env.items():
                if key.startswith("BI_"):
                    fh.write(f"{key}={value}\n")
        print(f"ready; env in {args.env}", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
