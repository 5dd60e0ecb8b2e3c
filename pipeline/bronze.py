"""Bronze schema: the CDC event tables and the pipeline's own bookkeeping tables.

Migrations are idempotent (`IF NOT EXISTS`), so every step may call them first.
Every identifier comes from configuration and is quoted with `psycopg2.sql`.
"""

from __future__ import annotations

from psycopg2 import sql

from pipeline.config import FileConfig, TableConfig

_BRONZE_TABLE = """
CREATE TABLE IF NOT EXISTS {bronze}.{table} (
    kafka_topic      text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    kafka_timestamp  bigint,
    kafka_key        jsonb,
    cdc_payload      jsonb,
    batch_file       text,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT {unique_name} UNIQUE (kafka_topic, kafka_partition, kafka_offset)
)
"""

_META_TABLES = [
    # One row per raw object loaded into bronze, so an incremental load reads only new objects.
    """
    CREATE TABLE IF NOT EXISTS {meta}.load_manifest (
        bronze_table  text        NOT NULL,
        object_key    text        NOT NULL,
        etag          text,
        lines         integer     NOT NULL,
        inserted      integer     NOT NULL,
        rejected      integer     NOT NULL,
        loaded_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (bronze_table, object_key)
    )
    """,
    # Lines of raw objects that could not be loaded, with where they came from and why.
    """
    CREATE TABLE IF NOT EXISTS {meta}.load_rejects (
        bronze_table  text        NOT NULL,
        object_key    text        NOT NULL,
        line_number   integer     NOT NULL,
        reason        text        NOT NULL,
        line          text,
        rejected_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (bronze_table, object_key, line_number)
    )
    """,
    # The ingest position per topic partition: the next offset to read.
    """
    CREATE TABLE IF NOT EXISTS {meta}.ingest_checkpoint (
        topic          text        NOT NULL,
        kafka_partition integer    NOT NULL,
        next_offset    bigint      NOT NULL,
        topic_epoch    text,
        updated_at     timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (topic, kafka_partition)
    )
    """,
]


def ensure_meta(cur, file_config: FileConfig) -> None:
    meta = sql.Identifier(file_config.meta_schema)
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(meta))
    for statement in _META_TABLES:
        cur.execute(sql.SQL(statement).format(meta=meta))


def ensure_bronze(cur, file_config: FileConfig, table: TableConfig) -> None:
    """Create the bronze schema, the table's event table and the bookkeeping tables."""
    bronze = sql.Identifier(file_config.bronze_schema)
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(bronze))
    cur.execute(
        sql.SQL(_BRONZE_TABLE).format(
            bronze=bronze,
            table=sql.Identifier(table.bronze_table),
            unique_name=sql.Identifier(f"{table.bronze_table}_kafka_position_key"),
        )
    )
    ensure_meta(cur, file_config)


def bronze_relation(file_config: FileConfig, table: TableConfig) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(file_config.bronze_schema), sql.Identifier(table.bronze_table))
