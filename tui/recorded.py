"""A fixed, recorded state of every view: for snapshot tests and README screenshots.

Times are fixed (the app's clock is frozen at RECORDED_NOW), so renders are deterministic.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pipeline.checks.diagnose import connector_check
from pipeline.checks.model import Check
from pipeline.checks.probes import LayerCounts, PartitionLag
from pipeline.checks.views import ConnectorSnapshot, QualitySnapshot
from pipeline.orchestration.refresh import RefreshRun, RunFinished, StepFinished, StepStarted
from pipeline.runtime.model import ConnectorStatus, ServiceStatus, TaskStatus
from pipeline.steps.quarantine import QuarantineEntry, RejectEntry

RECORDED_NOW = datetime(2025, 10, 19, 12, 0, 0, tzinfo=timezone.utc)
STARTED = RECORDED_NOW - timedelta(hours=1, minutes=12, seconds=5)


def services() -> list[ServiceStatus]:
    return [
        ServiceStatus("postgres", "running", True, "PostgreSQL 18.0 on 127.0.0.1:5433", 4101, STARTED, [5433]),
        ServiceStatus("kafka", "running", True, "1 broker(s), 3 topic(s) at 127.0.0.1:9092", 4102, STARTED, [9092]),
        ServiceStatus("s3", "running", True, "bucket cord-raw reachable", 4103, STARTED, [9000]),
        ServiceStatus("cdc", "exited", False, "not running", None, None, []),
    ]


SERVICE_LOG = [
    "2025-10-19 10:47:55 INFO  Starting PostgresConnectorTask with configuration:",
    '{"ts": "2025-10-19T10:47:56Z", "level": "INFO", "msg": "snapshot completed", "tables": 2, "rows": 2400}',
    "2025-10-19 10:47:57 INFO  Streaming changes from LSN 0/1A2B3C8",
    "2025-10-19 11:58:01 ERROR Connection to node -1 (127.0.0.1:9092) could not be established",
    "2025-10-19 11:58:02 WARN  Producer retrying send (attempt 2 of 5)",
    "2025-10-19 11:58:03 INFO  engine stopped",
]


# The engine's own log, as the embedded runtime writes it: snapshot, streaming, then the engine
# process gone (the services above show cdc exited).
CONNECTOR_SERVICE = "cdc"
CONNECTOR_LOG = [
    "2025-10-19 10:47:54 INFO  Starting embedded engine for connector sqlserver-product-v2",
    "2025-10-19 10:47:55 INFO  Starting PostgresConnectorTask with configuration:",
    '{"ts": "2025-10-19T10:47:56Z", "level": "INFO", "msg": "snapshot completed", "tables": 2, "rows": 2400}',
    "2025-10-19 10:47:57 INFO  Streaming changes from LSN 0/1A2B3C8",
    "2025-10-19 11:56:58 INFO  3 records sent during previous 00:01:00.012, last recorded offset: "
    "{lsn_proc=27273064, lsn=27273064}",
    "2025-10-19 11:57:01 WARN  Connection to the source database lost; the engine exits",
]
# What the live model reads for an engine whose process ended without `stop`
# (pipeline.runtime.cdc_engine.read_status): STOPPED with its reason, never UNASSIGNED.
STOPPED_REASON = "the cdc engine exited without being stopped (killed or crashed); start the cdc service"


def connector(state: str = "STOPPED") -> ConnectorSnapshot:
    """The connector in one recorded state: STOPPED (the default: cdc exited) or FAILED."""
    partitions = [
        PartitionLag("cord.ConcordDb.dbo.Product", 0, 0, 2400, 2380),
        PartitionLag("cord.ConcordDb.dbo.MeasureUnit", 0, 0, 12, 12),
    ]
    captured = dict(events_captured=2403, last_event_at=RECORDED_NOW - timedelta(minutes=3))
    if state == "STOPPED":
        status = ConnectorStatus(
            name="sqlserver-product-v2",
            state="STOPPED",
            tasks=[TaskStatus(0, "STOPPED", "embedded")],
            trace=STOPPED_REASON,
            **captured,
        )
        return ConnectorSnapshot(status=status, partitions=partitions)
    trace = (
        "org.apache.kafka.connect.errors.ConnectException: An exception occurred in the change event producer.\n"
        "\tat io.debezium.pipeline.ErrorHandler.setProducerThrowable(ErrorHandler.java:67)\n"
        "Caused by: org.postgresql.util.PSQLException: FATAL: terminating connection due to administrator command"
    )
    status = ConnectorStatus(
        name="sqlserver-product-v2", state="RUNNING", tasks=[TaskStatus(0, "FAILED", "embedded", trace)], **captured
    )
    return ConnectorSnapshot(status=status, partitions=partitions)


class _RecordedConnector:
    """The recorded connector behind the same check the live views run (diagnose.connector_check)."""

    name = "recorded"

    def connector(self) -> _RecordedConnector:
        return self

    def status(self) -> ConnectorStatus:
        return connector().status


def connector_state_check() -> Check:
    check, _ = connector_check(None, _RecordedConnector())
    return check


def run_events() -> list[object]:
    run = RefreshRun("a1b2c3d4e5f6", "full", "2025-10-19T11:50:00+00:00")
    finished = [
        StepFinished(run.run_id, "product", "ingest", "ok", 2.4, {"messages": 2400, "objects": 1}),
        StepFinished(run.run_id, "measure_unit", "ingest", "ok", 0.6, {"messages": 12, "objects": 1}),
        StepFinished(run.run_id, "product", "load", "ok", 1.1, {"inserted": 2400, "rejected": 0}),
        StepFinished(run.run_id, "measure_unit", "load", "ok", 0.3, {"inserted": 12, "rejected": 0}),
        StepFinished(run.run_id, "all", "transform", "ok", 6.8, {"success": 4, "total": 4, "full_refresh": True}),
    ]
    events: list[object] = []
    for f in finished:
        events += [StepStarted(run.run_id, f.table, f.step), f]
    events.append(StepStarted(run.run_id, "all", "test"))
    return events


def finished_run_events() -> list[object]:
    events = run_events()
    run = RefreshRun("a1b2c3d4e5f6", "full", "2025-10-19T11:50:00+00:00")
    test = StepFinished(
        run.run_id, "all", "test", "failed", 3.2, {}, "dbt tests failed: not_null_dim_product_vendor_code (2 rows)"
    )
    run.steps = [e for e in events if isinstance(e, StepFinished)] + [test]
    run.outcome, run.failed_step, run.error, run.duration = "failed", "all:test", test.error, 14.4
    return [*events, test, RunFinished(run)]


STEP_LOG = [
    "[product:ingest] ingest cord.ConcordDb.dbo.Product: partition 0 from 0 to 2400",
    "[product:ingest] wrote product/raw/batch=cord.ConcordDb.dbo.Product+0+00000000000000000000.jsonl",
    "[product:load] load: 1 new object(s), 2400 line(s) inserted, 0 rejected",
    "[all:transform] 1 of 4 OK created sql view model staging_staging.stg_product ........ [CREATE VIEW in 0.08s]",
    "[all:transform] 2 of 4 OK created sql incremental model marts.dim_product .......... [SELECT 115 in 0.21s]",
    "[all:test] 7 of 31 FAIL 2 not_null_dim_product_vendor_code ......................... [FAIL 2 in 0.05s]",
]


def history() -> list[dict]:
    return [
        {
            "run_id": "a1b2c3d4e5f6",
            "mode": "full",
            "started_at": "2025-10-19T11:50:00+00:00",
            "outcome": "failed",
            "duration": 14.4,
            "failed_step": "all:test",
        },
        {
            "run_id": "0f9e8d7c6b5a",
            "mode": "incremental",
            "started_at": "2025-10-19T09:00:02+00:00",
            "outcome": "ok",
            "duration": 8.9,
            "failed_step": None,
        },
        {
            "run_id": "99aa88bb77cc",
            "mode": "full",
            "started_at": "2025-10-18T18:31:40+00:00",
            "outcome": "cancelled",
            "duration": 3.0,
            "failed_step": "product:load",
        },
    ]


def quality() -> QualitySnapshot:
    validation = {
        "product": {
            "table": "product",
            "success": False,
            "started_at": "2025-10-19T11:50:12+00:00",
            "suites": [
                {
                    "name": "product_bronze",
                    "layer": "bronze",
                    "success": True,
                    "error": None,
                    "expectations": [
                        {
                            "type": "expect_table_row_count_to_be_between",
                            "column": None,
                            "success": True,
                            "severity": "error",
                            "observed_value": 2400,
                        },
                        {
                            "type": "expect_column_values_to_not_be_null",
                            "column": "cdc_payload",
                            "success": True,
                            "severity": "error",
                            "observed_value": {"element_count": 2400, "unexpected_count": 0},
                        },
                    ],
                },
                {
                    "name": "product_marts",
                    "layer": "marts",
                    "success": False,
                    "error": None,
                    "expectations": [
                        {
                            "type": "expect_table_row_count_to_be_between",
                            "column": None,
                            "success": True,
                            "severity": "error",
                            "observed_value": 115,
                        },
                        {
                            "type": "expect_column_values_to_be_unique",
                            "column": "product_id",
                            "success": True,
                            "severity": "error",
                            "observed_value": {"element_count": 115, "unexpected_count": 0},
                        },
                        {
                            "type": "expect_column_values_to_not_be_null",
                            "column": "vendor_code",
                            "success": False,
                            "severity": "error",
                            "observed_value": {"element_count": 115, "unexpected_count": 2},
                        },
                        {
                            "type": "expect_column_values_to_be_in_set",
                            "column": "is_for_sale",
                            "success": True,
                            "severity": "warning",
                            "observed_value": {
                                "element_count": 115,
                                "unexpected_count": 18,
                                "unexpected_percent": 15.65,
                            },
                        },
                        {
                            "type": "expect_column_mean_to_be_between",
                            "column": "is_for_web",
                            "success": False,
                            "severity": "warning",
                            "observed_value": 0.4609,
                        },
                    ],
                },
            ],
        }
    }
    return QualitySnapshot(
        counts=[LayerCounts("product", 2400, 120, 120, 115, 115), LayerCounts("measure_unit", 12, 6, 6, 6, 5)],
        freshness_lag=timedelta(minutes=9, seconds=30).total_seconds(),
        freshness_max_minutes=60.0,
        suppliers=[("SEM1", 41), ("SABO", 33), ("FEBI", 18), ("LEMF", 12), ("Unknown", 6), ("BOSC", 3), ("MANN", 2)],
        multilingual=[("Complete", 112), ("Partial", 3)],
        validation=validation,
        checks=[
            Check(
                "reconciliation:product",
                "pass",
                "Bronze CDC 2400, Bronze (distinct keys) 120, Staging (All) 120, Staging (Active) 115, Marts 115",
            ),
            Check("reconciliation:product:source", "pass", "source 115 active row(s), marts 115"),
            Check(
                "reconciliation:product:topic",
                "fail",
                "end offsets 2418 vs bronze 2400 + quarantined 1 "
                "+ rejected 1 + not ingested 0 = 2402: +16 event(s) unaccounted for",
            ),
            Check(
                "freshness:product",
                "pass",
                "source's latest change 2025-10-19 11:50:30, marts' newest "
                "source_timestamp 2025-10-19 11:41:00: 9.5 min behind (max 60)",
            ),
            Check(
                "profile:product",
                "warn",
                "6/8 figures within tolerance of production (shares ±10%) over 115 rows; "
                "drift: supplier_name=SEM1 35.7% vs production 43.5%; has_analogue true 52.2% vs production 67.0%",
            ),
            Check(
                "reconciliation:measure_unit",
                "fail",
                "Bronze CDC 12, Bronze (distinct keys) 6, Staging (All) 6, Staging (Active) 6, Marts 5",
            ),
            Check("gx:measure_unit", "warn", "not covered: measure_unit has no Great Expectations suite"),
        ],
        quarantined=[
            QuarantineEntry(
                "product",
                "cord.ConcordDb.dbo.Product",
                0,
                0,
                2417,
                "value is not JSON: unexpected end of data",
                1843,
                '{"schema":{"type":"struct","fields":[{"type":"int32","field":"ID"},{"type":"string","field":"Name"',
                "product/quarantine/batch=cord.ConcordDb.dbo.Product+0+00000000000000002000+00000000000000002417.jsonl",
                RECORDED_NOW - timedelta(minutes=9),
                None,
                None,
            )
        ],
        rejected=[
            RejectEntry(
                "product",
                "cord.ConcordDb.dbo.Product",
                0,
                0,
                2399,
                "product/raw/batch=cord.ConcordDb.dbo.Product+0+00000000000000002000+00000000000000002399.jsonl",
                400,
                "PostgreSQL refused the row: value overflows numeric format",
                '{"topic":"cord.ConcordDb.dbo.Product","partition":0,"offset":2399,"timestamp":1760874612000,"key":',
                RECORDED_NOW - timedelta(minutes=9),
            )
        ],
    )


def diagnoses() -> dict[str, list[Check]]:
    return {
        "no_cdc_events": [
            Check("Kafka broker reachable", "pass", "1 broker(s), 3 topic(s) at 127.0.0.1:9092"),
            connector_state_check(),
            Check("Topic cord.ConcordDb.dbo.Product", "pass", "exists, 1 partition(s), end offset 2400, 2400 event(s)"),
            Check("Topic cord.ConcordDb.dbo.MeasureUnit", "pass", "exists, 1 partition(s), end offset 12, 12 event(s)"),
        ],
        "bronze_load": [
            Check("PostgreSQL reachable", "pass", "SELECT 1 ok on 127.0.0.1:5433/analytics (PostgreSQL 18.0, 3 ms)"),
            Check("Object store reachable", "pass", "bucket cord-raw reachable"),
            Check("Schema bronze", "pass", "exists"),
            Check("Table bronze.product_cdc", "pass", "exists, 2400 row(s)"),
            Check(
                "Table bronze.measure_unit_cdc",
                "fail",
                "table does not exist",
                fix="create the bronze schema and tables",
            ),
            Check("Table bi_console.ingest_checkpoint", "pass", "exists"),
            Check(
                "Raw zone product matches the manifest",
                "fail",
                "1 of 6 loaded object(s) missing from s3://cord-raw/product/raw/batch= "
                "(first: batch=cord.ConcordDb.dbo.Product+0+00000000000000000000+00000000000000000399.jsonl)",
                fix="re-read the missing objects' offsets from the topic (fix key); "
                "a full refresh now would drop their events from bronze",
            ),
            Check(
                "Quarantine product",
                "warn",
                "1 quarantined message(s) not replayed (1 in all); newest: value is not JSON: unexpected end of data",
                fix="`bi-console quarantine list` shows each with its reason; fix the cause, "
                "then `bi-console quarantine replay`",
            ),
        ],
        "dbt": [
            Check("PostgreSQL reachable", "pass", "SELECT 1 ok on 127.0.0.1:5433/analytics (PostgreSQL 18.0, 3 ms)"),
            Check("View staging_staging.stg_product", "pass", "exists"),
            Check("Table marts.dim_product", "pass", "exists"),
            Check("dbt debug", "pass", "Connection test: [OK connection ok]; All checks passed!"),
        ],
        "stale_bi": [
            Check(
                "Superset configured",
                "warn",
                "Superset not configured (start the stack with `stack up --with superset`)",
                fix="`bi-console stack up --with superset`",
            ),
        ],
    }
