"""The runbook's Validation Queries as library functions.

Each function takes an open psycopg2 connection (or cursor), the FileConfig (schema
names) and the TableConfig (relation names), and returns a list of dicts, one per row.
Identifiers are composed with psycopg2.sql. `RUNBOOK_VALIDATION_SQL` holds the
runbook's SQL verbatim (default schema names), for comparison and for operators.

    with psycopg2.connect(**settings.pg_dsn()) as conn:
        layer_counts(conn, settings.file, settings.table("product"))
        # [{'layer': 'Bronze CDC', 'records': 31970}, {'layer': 'Bronze (distinct keys)', ...}, ...]

A relation that does not exist yet (before the first transform) counts as None
instead of raising. The supplier, multilingual and freshness queries read the
product mart's contract columns (supplier_name, multilingual_status,
last_modified_in_source, ingested_timestamp).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection, cursor

from pipeline.config import FileConfig, TableConfig
from pipeline.stores.db import one_row

# The runbook's "Validation Queries" section, verbatim.
RUNBOOK_VALIDATION_SQL: dict[str, str] = {
    "layer_counts": """-- Compare record counts
SELECT
    'Bronze CDC' as layer,
    COUNT(*) as total_records
FROM bronze.product_cdc

UNION ALL

SELECT
    'Staging (Active)',
    COUNT(*)
FROM staging_staging.stg_product
WHERE deleted = false

UNION ALL

SELECT
    'Staging (All)',
    COUNT(*)
FROM staging_staging.stg_product

UNION ALL

SELECT
    'Marts',
    COUNT(*)
FROM marts.dim_product;""",
    "supplier_distribution": """SELECT
    supplier_name,
    COUNT(*) as product_count,
    ROUND(100.0 * COUNT(*) / SUM(COUNT(*)) OVER (), 2) as percentage
FROM marts.dim_product
GROUP BY supplier_name
ORDER BY product_count DESC;""",
    "multilingual_coverage": """SELECT
    multilingual_status,
    COUNT(*) as product_count
FROM marts.dim_product
GROUP BY multilingual_status;""",
    "data_freshness": """SELECT
    MAX(last_modified_in_source) as latest_source_update,
    MAX(ingested_timestamp) as latest_ingest,
    CURRENT_TIMESTAMP - MAX(ingested_timestamp) as data_age
FROM marts.dim_product;""",
}

LAYER_BRONZE = "Bronze CDC"
LAYER_BRONZE_KEYS = "Bronze (distinct keys)"
LAYER_STAGING_ALL = "Staging (All)"
LAYER_STAGING_ACTIVE = "Staging (Active)"
LAYER_MARTS = "Marts"

# Distinct keys of the state-carrying events of a bronze table, from its generated
# columns (pipeline/stores/bronze.py): the same rule as the dbt macros.
_BRONZE_DISTINCT_KEYS = """
SELECT count(DISTINCT record_key) FROM {bronze} WHERE cdc_operation IS NOT NULL
"""


def _rel(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def relations(file_config: FileConfig, table: TableConfig) -> dict[str, tuple[str, str]]:
    """(schema, relation) of each layer the table has: no "marts" for a table with staging only."""
    layers = {
        "bronze": (file_config.bronze_schema, table.bronze_table),
        "staging": (file_config.staging_schema, table.staging_relation),
    }
    if table.marts_relation is not None:
        layers["marts"] = (file_config.marts_schema, table.marts_relation)
    return layers


class _Cursor:
    """Accept a connection or a cursor; close only what we opened."""

    def __init__(self, conn_or_cursor: connection | cursor):
        self.own = isinstance(conn_or_cursor, connection)
        self.cur = conn_or_cursor.cursor() if isinstance(conn_or_cursor, connection) else conn_or_cursor

    def __enter__(self) -> cursor:
        return self.cur

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.own:
            self.cur.close()


def _rows(cur: cursor) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description or ()]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _exists(cur: cursor, schema: str, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (_rel(schema, name).as_string(cur),))
    row = cur.fetchone()
    return bool(row and row[0])


def _has_column(cur: cursor, schema: str, name: str, column: str) -> bool:
    cur.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s AND column_name = %s",
        (schema, name, column),
    )
    return cur.fetchone() is not None


def fetch(
    conn: connection | cursor, statement: str | sql.Composable, params: tuple[Any, ...] | dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Run any statement (e.g. one of RUNBOOK_VALIDATION_SQL) and return its rows as dicts."""
    with _Cursor(conn) as cur:
        cur.execute(statement, params)
        return _rows(cur) if cur.description else []


def layer_counts(conn: connection | cursor, file_config: FileConfig, table: TableConfig) -> list[dict[str, Any]]:
    """Rows {'layer', 'records'}: bronze total, bronze distinct keys, staging all, staging active,
    marts. `records` is None for a relation that does not exist yet."""
    rel = relations(file_config, table)
    out: list[dict[str, Any]] = []
    with _Cursor(conn) as cur:
        bronze_ok = _exists(cur, *rel["bronze"])
        staging_ok = _exists(cur, *rel["staging"])
        marts_ok = "marts" in rel and _exists(cur, *rel["marts"])

        def count(ok: bool, statement: sql.Composable) -> int | None:
            if not ok:
                return None
            cur.execute(statement)
            return int(one_row(cur)[0])

        bronze = _rel(*rel["bronze"])
        staging = _rel(*rel["staging"])
        out.append(
            {"layer": LAYER_BRONZE, "records": count(bronze_ok, sql.SQL("SELECT count(*) FROM {}").format(bronze))}
        )
        out.append(
            {
                "layer": LAYER_BRONZE_KEYS,
                "records": count(bronze_ok, sql.SQL(_BRONZE_DISTINCT_KEYS).format(bronze=bronze)),
            }
        )
        staging_all = staging_active = None
        if staging_ok:
            # One scan for both counts. A source without a Deleted flag has no `deleted` column
            # in staging: its deleted rows are those whose latest event is a delete.
            active = (
                sql.SQL("deleted = false")
                if _has_column(cur, *rel["staging"], "deleted")
                else sql.SQL("cdc_operation <> 'd'")
            )
            cur.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM {}").format(active, staging))
            staging_all, staging_active = (int(v) for v in one_row(cur))
        out.append({"layer": LAYER_STAGING_ALL, "records": staging_all})
        out.append({"layer": LAYER_STAGING_ACTIVE, "records": staging_active})
        if "marts" in rel:
            out.append(
                {
                    "layer": LAYER_MARTS,
                    "records": count(marts_ok, sql.SQL("SELECT count(*) FROM {}").format(_rel(*rel["marts"]))),
                }
            )
    return out


def supplier_distribution(
    conn: connection | cursor, file_config: FileConfig, table: TableConfig
) -> list[dict[str, Any]]:
    """Rows {'supplier_name', 'product_count', 'percentage'} (percentage: Decimal, 2 places), largest first."""
    marts = _rel(*relations(file_config, table)["marts"])
    statement = sql.SQL(
        "SELECT supplier_name, COUNT(*) AS product_count,"
        " ROUND(100.0 * COUNT(*) / SUM(COUNT(*)) OVER (), 2) AS percentage"
        " FROM {} GROUP BY supplier_name ORDER BY product_count DESC, supplier_name"
    ).format(marts)
    return fetch(conn, statement)


def multilingual_coverage(
    conn: connection | cursor, file_config: FileConfig, table: TableConfig
) -> list[dict[str, Any]]:
    """Rows {'multilingual_status', 'product_count'}, largest first."""
    marts = _rel(*relations(file_config, table)["marts"])
    statement = sql.SQL(
        "SELECT multilingual_status, COUNT(*) AS product_count FROM {}"
        " GROUP BY multilingual_status ORDER BY product_count DESC, multilingual_status"
    ).format(marts)
    return fetch(conn, statement)


def data_freshness(conn: connection | cursor, file_config: FileConfig, table: TableConfig) -> list[dict[str, Any]]:
    """One row {'latest_source_update', 'latest_ingest', 'data_age'} (data_age: timedelta or None)."""
    marts = _rel(*relations(file_config, table)["marts"])
    statement = sql.SQL(
        "SELECT MAX(last_modified_in_source) AS latest_source_update,"
        " MAX(ingested_timestamp) AS latest_ingest,"
        " CURRENT_TIMESTAMP - MAX(ingested_timestamp) AS data_age FROM {}"
    ).format(marts)
    return fetch(conn, statement)
