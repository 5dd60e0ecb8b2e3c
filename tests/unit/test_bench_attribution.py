"""Issue 8: the rules that charge a profile's time to PostgreSQL, the broker, S3, dbt or our
Python. The benchmark notes rest on them, so each rule is checked on a py-spy recording."""

from __future__ import annotations

from bench.attribution import attribute_pyspy

RATE = 10.0  # samples per second


def _line(thread: str, frames: list[str], samples: int) -> str:
    return ";".join([f"thread (0x1): {thread}", *frames]) + f" {samples}"


def test_native_frames_charge_the_service_waited_on():
    raw = "\n".join(
        [
            _line(
                "MainThread",
                [
                    "ingest (pipeline/steps/ingest.py:250)",
                    "_read_partition (pipeline/steps/ingest.py:390)",
                    "rd_kafka_consume_batch_queue (librdkafka.so.1)",
                ],
                20,
            ),
            _line(
                "MainThread",
                ["ingest (pipeline/steps/ingest.py:250)", "check_event (pipeline/steps/envelope.py:60)"],
                30,
            ),
            _line(
                "load_0",
                [
                    "write_object (pipeline/steps/load.py:260)",
                    "copy_expert (psycopg2/_psycopg.so)",
                    "PQgetResult (libpq-a17e3caa.so.5.17)",
                ],
                40,
            ),
        ]
    )
    threads = attribute_pyspy(raw, RATE)
    assert threads["MainThread"] == {"our Python": 3.0, "broker": 2.0}
    assert threads["load_0"] == {"PostgreSQL": 4.0}


def test_thread_waits_belong_to_whoever_started_the_threads():
    ours = [
        "flush (pipeline/steps/ingest.py:300)",
        "result (concurrent/futures/_base.py:449)",
        "wait (/usr/lib/python3.11/threading.py:320)",
    ]
    dbts = ["execute_nodes (dbt/task/runnable.py:400)", "join (/usr/lib/python3.11/threading.py:1100)"]
    threads = attribute_pyspy("\n".join([_line("MainThread", ours, 5), _line("MainThread", dbts, 7)]), RATE)
    assert threads["MainThread"] == {"dbt": 0.7, "our threads": 0.5}


def test_imports_are_marked_and_a_blocked_import_is_named():
    importing_gx = [
        "_import_next_library (pipeline/orchestration/refresh.py:180)",
        "_find_and_load (<frozen importlib._bootstrap>:1176)",
        "<module> (great_expectations/__init__.py:1)",
    ]
    blocked = [
        "validate (pipeline/steps/validate.py:100)",
        "_find_and_load (<frozen importlib._bootstrap>:1176)",
        "acquire (<frozen importlib._bootstrap>:100)",
    ]
    threads = attribute_pyspy("\n".join([_line("import-gx", importing_gx, 12), _line("MainThread", blocked, 3)]), RATE)
    assert threads["import-gx"] == {"Great Expectations (import)": 1.2}
    assert threads["MainThread"] == {"import in another thread": 0.3}


def test_unknown_libraries_and_malformed_lines():
    raw = "\n".join([_line("MainThread", ["main (/usr/lib/python3.11/runpy.py:198)"], 4), "not a sample line", ""])
    assert attribute_pyspy(raw, RATE) == {"MainThread": {"other": 0.4}}
