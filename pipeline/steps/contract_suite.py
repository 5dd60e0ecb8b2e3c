"""The default Great Expectations suite of a table, made from its source contract.

A table with a contract (`dbt/models/staging/base/base_<table>.yml`) and no suites of its
own in the config file is validated by `<table>_staging_contract`: on its staging relation,
the key is not null and unique (compound for a link table), and every contract column has
the PostgreSQL type the staging macros give its SQL Server type (a type they do not know:
the column exists). It is a suite like the files
of `expectations/` (the same dict), so validate, `--check` and the Quality view show it as
any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import TableConfig
from pipeline.config.contracts import SourceContract, find_contract

CONTRACT_SUITE_SUFFIX = "_staging_contract"

# A SQL Server type -> the PostgreSQL type its staging column has, as GX names it (the
# SQLAlchemy type's name). It is the type map of the staging macros (cdc_type_map() in
# dbt/macros/type_map.sql): a change there is a change here. float(1..24) is SQL Server's
# real.
STAGING_TYPES: dict[str, str] = {
    "bit": "BOOLEAN",
    "tinyint": "SMALLINT",
    "smallint": "SMALLINT",
    "int": "INTEGER",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "decimal": "NUMERIC",
    "numeric": "NUMERIC",
    "money": "NUMERIC",
    "smallmoney": "NUMERIC",
    "float": "DOUBLE PRECISION",
    "real": "REAL",
    "date": "DATE",
    "time": "TIME WITHOUT TIME ZONE",
    "datetime": "TIMESTAMP WITHOUT TIME ZONE",
    "smalldatetime": "TIMESTAMP WITHOUT TIME ZONE",
    "datetime2": "TIMESTAMP WITHOUT TIME ZONE",
    "datetimeoffset": "TIMESTAMP WITH TIME ZONE",
    "uniqueidentifier": "TEXT",  # lower-case GUID text
    "char": "TEXT",
    "varchar": "TEXT",
    "nchar": "TEXT",
    "nvarchar": "TEXT",
    "text": "TEXT",
    "ntext": "TEXT",
    "sysname": "TEXT",
    "xml": "TEXT",
    "binary": "BYTEA",
    "varbinary": "BYTEA",
    "image": "BYTEA",
    "rowversion": "BYTEA",
    "timestamp": "BYTEA",  # SQL Server's timestamp is rowversion, not a time
}


def staging_type(source_type: str) -> str | None:
    """The PostgreSQL type staging holds for a SQL Server type (`decimal(18,2)`,
    `float(24)`), or None for a type the staging macros do not decode."""
    text = source_type.replace(" ", "").lower()
    base, _, arguments = text.partition("(")
    if base == "float" and arguments.rstrip(")").isdigit() and int(arguments.rstrip(")")) <= 24:
        return STAGING_TYPES["real"]
    return STAGING_TYPES.get(base)


def contract_suite_name(table: TableConfig) -> str:
    return f"{table.name}{CONTRACT_SUITE_SUFFIX}"


def suite_names(table: TableConfig, dbt_dir: Path) -> list[str]:
    """The suites that validate the table: its configured ones, else its contract's."""
    if table.suites:
        return list(table.suites)
    if find_contract(dbt_dir, table.name) is not None:
        return [contract_suite_name(table)]
    return []


def contract_suite(contract: SourceContract) -> dict[str, Any]:
    """The suite (the dict a suite file holds) of a contract, on the staging layer."""
    keys = contract.key_names
    expectations: list[dict[str, Any]] = [
        {
            "type": "expect_column_values_to_not_be_null",
            "kwargs": {"column": key},
            "meta": {"check": "keys"},
            "description": f"The key column {key} is never null.",
        }
        for key in keys
    ]
    if len(keys) == 1:
        expectations.append(
            {
                "type": "expect_column_values_to_be_unique",
                "kwargs": {"column": keys[0]},
                "meta": {"check": "keys"},
                "description": f"One row per {keys[0]}.",
            }
        )
    else:
        expectations.append(
            {
                "type": "expect_compound_columns_to_be_unique",
                "kwargs": {"column_list": keys},
                "meta": {"check": "keys"},
                "description": f"One row per ({', '.join(keys)}).",
            }
        )
    for column in contract.columns:
        expected = staging_type(column.source_type)
        if expected is None:
            expectations.append(
                {
                    "type": "expect_column_to_exist",
                    "kwargs": {"column": column.name},
                    "meta": {"check": "types", "source_type": column.source_type},
                    "description": f"{column.name} exists (its type {column.source_type} has no staging type here).",
                }
            )
            continue
        expectations.append(
            {
                "type": "expect_column_values_to_be_of_type",
                "kwargs": {"column": column.name, "type_": expected},
                "meta": {"check": "types", "source_type": column.source_type},
                "description": f"{column.name} ({column.source_type} at the source) is {expected.lower()}.",
            }
        )
    return {"layer": "staging", "expectations": expectations}
