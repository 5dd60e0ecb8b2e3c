"""Bronze schema: the CDC event tables and the pipeline's own bookkeeping tables.

Migrations are idempotent (`IF NOT EXISTS`), so every step may call them first.
Every identifier comes from configuration (plain names, see safe_identifier) and is quoted.
The DDL is written once, here: the migrations run it, and `bronze_script` renders the same
statements as text for compose's initdb (`python -m pipeline.stores.bronze FILE` rewrites
its generated section) and for anything else that must create bronze without a connection.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import cursor

from pipeline.config import DEFAULT_CONFIG, ConfigError, FileConfig, TableConfig, load_file_config
from pipeline.stores.db import one_row

# The event table's own columns; the change columns (_change_columns) follow them.
_EVENT_COLUMNS = [
    ("kafka_topic", "text NOT NULL"),
    ("kafka_partition", "integer NOT NULL"),
    ("kafka_offset", "bigint NOT NULL"),
    ("kafka_epoch", "integer NOT NULL DEFAULT 0"),
    ("kafka_timestamp", "bigint"),
    ("kafka_key", "jsonb"),
    ("cdc_payload", "jsonb"),
    ("batch_file", "text"),
    ("ingested_at", "timestamptz NOT NULL DEFAULT now()"),
]
_INDEXED = ("record_key", "ingested_at")

# A Kafka record's place: the epoch counts the times the broker lost the topic and its
# offsets began again at 0 (see ingest), so equal offsets of two epochs are two records.
POSITION_COLUMNS = ("kafka_topic", "kafka_epoch", "kafka_partition", "kafka_offset")
POSITION = ", ".join(POSITION_COLUMNS)

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
        sanitized     integer     NOT NULL DEFAULT 0,
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
        kafka_topic   text,
        kafka_partition integer,
        kafka_offset  bigint,
        kafka_epoch   integer,
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

# Columns added since the tables were first created: (table, column, type).
_META_COLUMNS = [
    # Events stored repaired (U+0000 removed, a lone surrogate replaced): see load's repair_line.
    ("load_manifest", "sanitized", "integer NOT NULL DEFAULT 0"),
    # Where the rejected record was in Kafka, when its line says it (a line that is not JSON does not).
    ("load_rejects", "kafka_topic", "text"),
    ("load_rejects", "kafka_partition", "integer"),
    ("load_rejects", "kafka_offset", "bigint"),
    ("load_rejects", "kafka_epoch", "integer"),
]


def quote_ident(name: str) -> str:
    """An identifier as SQL text: bare when it is a plain lowercase name, else double-quoted."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def meta_statements(file_config: FileConfig) -> list[str]:
    meta = quote_ident(file_config.meta_schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {meta}",
        *(textwrap.dedent(statement.format(meta=meta)).strip() for statement in _META_TABLES),
    ]


def ensure_meta(cur: cursor, file_config: FileConfig) -> None:
    meta = sql.Identifier(file_config.meta_schema)
    for statement in meta_statements(file_config):
        cur.execute(statement)
    cur.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s",
        (file_config.meta_schema,),
    )
    present = set(cur.fetchall())
    for table_name, column, type_name in _META_COLUMNS:
        if (table_name, column) not in present:
            cur.execute(
                sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {} {}").format(
                    meta, sql.Identifier(table_name), sql.Identifier(column), sql.SQL(type_name)
                )
            )


def _unwrapped(column: str) -> str:
    # A JSON-converter document with schemas enabled is {"schema": ..., "payload": ...}.
    return (
        f"(CASE WHEN jsonb_typeof({column}) = 'object' AND {column} ? 'schema' AND {column} ? 'payload' "
        f"THEN {column} -> 'payload' ELSE {column} END)"
    )


def _record_key(row: str, kafka_key: str, key_columns: list[str]) -> str:
    """The text a key is ranked on. A single key column gives its value's text, as it always
    has (bronze tables keep their generated column). Several give the JSON array of their JSON
    values, e.g. [7807552, 3], which no value of one column can fake; built with jsonb `||`,
    since PostgreSQL takes only immutable expressions for a generated column and
    jsonb_build_array is not. The dbt side writes the same text with jsonb_build_array."""
    literals = ["'" + column.replace("'", "''") + "'" for column in key_columns]
    if len(literals) == 1:
        return f"coalesce({row} ->> {literals[0]}, {kafka_key} ->> {literals[0]})"
    parts = " || ".join(f"coalesce({row} -> {literal}, {kafka_key} -> {literal})" for literal in literals)
    return f"(('[]'::jsonb || {parts})::text)"


def _change_columns(key_columns: list[str]) -> list[tuple[str, str, str]]:
    """(name, type, expression) of the generated columns that describe each event's change.

    PostgreSQL computes them once, when a row is stored, from the payload it has in memory
    at that moment; staging then ranks events on these small columns instead of unwrapping
    every (TOASTed) payload on each read. The rules are the dbt `cdc_*` macros' rules:
      record_key       the key of the row (after, or before for a delete), else of the Kafka key;
                       a composite key as the JSON array of its columns' values (_record_key)
      cdc_operation    c | u | d | r for an event that carries a row state, else NULL
                       (tombstones, truncates, malformed rows)
      source_position  a text that sorts in the source log's order (SQL Server
                       commit_lsn/change_lsn/event_serial_no, PostgreSQL lsn), else ''
      is_snapshot      op 'r' or source.snapshot set
    """
    envelope = _unwrapped("cdc_payload")
    key = _unwrapped("kafka_key")
    row = f"(CASE WHEN {envelope} ->> 'op' = 'd' THEN {envelope} -> 'before' ELSE {envelope} -> 'after' END)"
    source = f"({envelope} -> 'source')"
    return [
        ("record_key", "text", _record_key(row, key, key_columns)),
        (
            "cdc_operation",
            "text",
            f"(CASE WHEN {envelope} ->> 'op' IN ('c', 'u', 'd', 'r') AND jsonb_typeof({row}) = 'object' "
            f"THEN {envelope} ->> 'op' END)",
        ),
        (
            "source_position",
            "text",
            f"(CASE {source} ->> 'connector' "
            f"WHEN 'sqlserver' THEN lower(coalesce({source} ->> 'commit_lsn', '')) || '/' "
            f"|| lower(coalesce({source} ->> 'change_lsn', '')) || '/' "
            f"|| lpad(coalesce({source} ->> 'event_serial_no', '0'), 12, '0') "
            f"WHEN 'postgresql' THEN lpad(coalesce({source} ->> 'lsn', '0'), 24, '0') "
            f"ELSE '' END)",
        ),
        (
            "is_snapshot",
            "boolean",
            f"({envelope} ->> 'op' = 'r' OR coalesce({source} ->> 'snapshot', 'false') NOT IN ('false', ''))",
        ),
    ]


def event_table_statements(file_config: FileConfig, table: TableConfig, name: str) -> list[str]:
    """The event table `name` as a new database gets it: its columns, the change columns,
    the unique Kafka position, the indexes, and payloads stored uncompressed (see below)."""
    relation = f"{quote_ident(file_config.bronze_schema)}.{quote_ident(name)}"
    names = object_names(name)
    lines = [f"    {column:<16} {definition}" for column, definition in _EVENT_COLUMNS]
    lines += [
        f"    {column:<16} {type_name} GENERATED ALWAYS AS ({expression}) STORED"
        for column, type_name, expression in _change_columns(table.key_columns)
    ]
    lines.append(f"    CONSTRAINT {quote_ident(names['position'])} UNIQUE ({POSITION})")
    return [
        f"CREATE TABLE IF NOT EXISTS {relation} (\n" + ",\n".join(lines) + "\n)",
        *(f"CREATE INDEX IF NOT EXISTS {quote_ident(names[column])} ON {relation} ({column})" for column in _INDEXED),
        # A load is bound by PostgreSQL's CPU, pglz is the only method some builds offer (no
        # lz4), and compressing every payload cost ~15 % of the load for the 2x disk it saves.
        f"ALTER TABLE {relation} ALTER COLUMN cdc_payload SET STORAGE EXTERNAL",
    ]


def bronze_statements(file_config: FileConfig, tables: list[TableConfig]) -> list[str]:
    """Everything ensure_bronze creates for these tables, in order."""
    return [
        f"CREATE SCHEMA IF NOT EXISTS {quote_ident(file_config.bronze_schema)}",
        *(
            statement
            for table in tables
            for statement in event_table_statements(file_config, table, table.bronze_table)
        ),
        *meta_statements(file_config),
    ]


def bronze_script(file_config: FileConfig) -> str:
    """bronze_statements for every configured table, as a SQL script."""
    return "".join(statement + ";\n\n" for statement in bronze_statements(file_config, file_config.tables))


GENERATED_BEGIN = "-- BEGIN bronze DDL, generated by `python -m pipeline.stores.bronze FILE` from the default config"
GENERATED_END = "-- END bronze DDL"


def with_generated_section(text: str, file_config: FileConfig) -> str:
    """`text` with the lines between the generated-section markers replaced by bronze_script."""
    head, found, rest = text.partition(GENERATED_BEGIN + "\n")
    if not found or GENERATED_END not in rest:
        raise ValueError(f"no section between {GENERATED_BEGIN!r} and {GENERATED_END!r}")
    return head + GENERATED_BEGIN + "\n" + bronze_script(file_config) + GENERATED_END + rest.split(GENERATED_END, 1)[1]


def ensure_bronze(cur: cursor, file_config: FileConfig, table: TableConfig) -> None:
    """Create the bronze schema, the table's event table and the bookkeeping tables."""
    cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(file_config.bronze_schema)))
    ensure_event_table(cur, file_config, table, table.bronze_table)
    ensure_meta(cur, file_config)


def object_names(name: str) -> dict[str, str]:
    """The names of an event table's unique constraint and indexes, which `IF NOT EXISTS` matches."""
    return {
        "position": f"{name}_kafka_position_key",
        "record_key": f"{name}_record_key_idx",
        "ingested_at": f"{name}_ingested_at_idx",
    }


def ensure_event_table(cur: cursor, file_config: FileConfig, table: TableConfig, name: str) -> None:
    """Create or bring up to date the event table `name` (bronze's, or a full load's shadow).

    The change columns are added to an existing table too (PostgreSQL computes them for
    the rows already there), with an index on the record key for incremental staging. A
    table from before epochs gets kafka_epoch (0: every row it holds) and the unique key
    that includes it; each change is made only when missing, since ALTER TABLE locks out
    readers even when it has nothing to do."""
    relation = sql.SQL("{}.{}").format(sql.Identifier(file_config.bronze_schema), sql.Identifier(name))
    names = object_names(name)
    create, *indexes, storage = event_table_statements(file_config, table, name)
    cur.execute(create)
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
        (file_config.bronze_schema, name),
    )
    present = {column for (column,) in cur.fetchall()}
    if "kafka_epoch" not in present:
        cur.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS kafka_epoch {}").format(
                relation, sql.SQL(dict(_EVENT_COLUMNS)["kafka_epoch"])
            )
        )
    cur.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s",
        (relation.as_string(cur), names["position"]),
    )
    found = cur.fetchone()
    if found is None or found[0] != f"UNIQUE ({POSITION})":
        cur.execute(
            sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}, ADD CONSTRAINT {} UNIQUE ({})").format(
                relation, sql.Identifier(names["position"]), sql.Identifier(names["position"]), sql.SQL(POSITION)
            )
        )
    for column, type_name, expression in _change_columns(table.key_columns):
        if column not in present:
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {} GENERATED ALWAYS AS ({}) STORED").format(
                    relation, sql.Identifier(column), sql.SQL(type_name), sql.SQL(expression)
                )
            )
    for statement in indexes:
        cur.execute(statement)
    # Applies to rows stored from now on; skipped when set, since ALTER TABLE locks out readers.
    cur.execute(
        "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'cdc_payload'",
        (relation.as_string(cur),),
    )
    if one_row(cur)[0] != "e":
        cur.execute(storage)


def bronze_relation(file_config: FileConfig, table: TableConfig) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(file_config.bronze_schema), sql.Identifier(table.bronze_table))


# -- the shadow of a full load -----------------------------------------------------------------
SHADOW_SUFFIX = "__full"
_LONGEST_SHADOWED_NAME = 50  # the shadow's index names must stay within PostgreSQL's 63 bytes
_GRANTABLE = {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN"}


def shadow_name(table: TableConfig) -> str:
    """The table a full load fills while readers keep reading bronze's."""
    if len(table.bronze_table.encode()) > _LONGEST_SHADOWED_NAME:
        raise ConfigError(
            f"tables.bronze_table={table.bronze_table!r} is longer than {_LONGEST_SHADOWED_NAME} "
            f"bytes: a full load's shadow table {table.bronze_table + SHADOW_SUFFIX!r} and its "
            "index names would not fit PostgreSQL's 63-byte names"
        )
    return table.bronze_table + SHADOW_SUFFIX


def _bookkeeping(cur: cursor, file_config: FileConfig, statement: str, *params: Any) -> None:
    meta = sql.Identifier(file_config.meta_schema)
    for name in ("load_manifest", "load_rejects"):
        cur.execute(sql.SQL(statement).format(meta=meta, table=sql.Identifier(name)), params)


def create_shadow(cur: cursor, file_config: FileConfig, table: TableConfig) -> str:
    """An empty shadow of the event table, built by the same DDL; a leftover one (a full load
    that crashed) and its manifest and rejects rows are dropped first. Returns its name."""
    shadow = shadow_name(table)
    cur.execute(
        sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(file_config.bronze_schema), sql.Identifier(shadow))
    )
    _bookkeeping(cur, file_config, "DELETE FROM {meta}.{table} WHERE bronze_table = %s", shadow)
    ensure_event_table(cur, file_config, table, shadow)
    return shadow


def _copy_grants(cur: cursor, source: sql.Composed, target: sql.Composed) -> None:
    """Give `target` the table privileges other roles hold on `source` (none by default: bronze
    is the owner's alone), so that a swap takes nothing from anyone."""
    cur.execute(
        "SELECT a.grantee, pg_get_userbyid(a.grantee), a.privilege_type, a.is_grantable "
        "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s::regclass AND a.grantee <> c.relowner",
        (source.as_string(cur),),
    )
    for grantee_oid, grantee, privilege, grantable in cur.fetchall():
        if privilege not in _GRANTABLE:
            continue
        role = sql.SQL("PUBLIC") if grantee_oid == 0 else sql.Identifier(grantee)
        cur.execute(
            sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege), target, role, sql.SQL(" WITH GRANT OPTION" if grantable else "")
            )
        )


def replace_with_shadow(cur: cursor, file_config: FileConfig, table: TableConfig, lock_timeout_s: int = 120) -> None:
    """Put the filled shadow in bronze's place, within the caller's transaction.

    Readers see the old table until the commit and the new one after it (a query waiting on
    the lock resolves the name again). The shadow's constraint and indexes take the canonical
    names, so ensure_event_table's IF NOT EXISTS still finds them; the manifest and rejects
    rows follow. A view on bronze would make the DROP fail, and the whole swap with it: the
    old table then stays. lock_timeout: a reader holding bronze in a long transaction makes
    the load fail, naming the wait, instead of hanging the refresh (and every reader queued
    behind the swap)."""
    schema = sql.Identifier(file_config.bronze_schema)
    shadow = shadow_name(table)
    canonical = bronze_relation(file_config, table)
    shadow_relation = sql.SQL("{}.{}").format(schema, sql.Identifier(shadow))
    cur.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_s}s")))
    cur.execute("SELECT to_regclass(%s)", (canonical.as_string(cur),))
    if one_row(cur)[0] is not None:
        _copy_grants(cur, canonical, shadow_relation)
        cur.execute(sql.SQL("DROP TABLE {}").format(canonical))
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(shadow_relation, sql.Identifier(table.bronze_table)))
    final, temporary = object_names(table.bronze_table), object_names(shadow)
    cur.execute(
        sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
            canonical, sql.Identifier(temporary["position"]), sql.Identifier(final["position"])
        )
    )
    for index in ("record_key", "ingested_at"):
        cur.execute(
            sql.SQL("ALTER INDEX {}.{} RENAME TO {}").format(
                schema, sql.Identifier(temporary[index]), sql.Identifier(final[index])
            )
        )
    _bookkeeping(cur, file_config, "DELETE FROM {meta}.{table} WHERE bronze_table = %s", table.bronze_table)
    _bookkeeping(
        cur,
        file_config,
        "UPDATE {meta}.{table} SET bronze_table = %s WHERE bronze_table = %s",
        table.bronze_table,
        shadow,
    )


if __name__ == "__main__":
    # python -m pipeline.stores.bronze compose/postgres/initdb/10-bi-console.sql
    target = Path(sys.argv[1])
    target.write_text(with_generated_section(target.read_text(), load_file_config(DEFAULT_CONFIG)))
