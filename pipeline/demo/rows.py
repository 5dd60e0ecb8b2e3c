"""Rows of a source table, from its SQL Server DDL: the one column model behind the demo
source (PostgreSQL), the bench's synthetic Debezium stream and the test fixtures.

Nothing here knows a table: the columns come from a `CREATE TABLE` text (the data
contract's, for dbo.Product) and the values from a shape (pipeline.demo.shapes). A row
is a dict of source-native Python values (int, str, float, bool, bytes, datetime, None);
the encoders turn it into what each consumer needs.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from pipeline.config.contracts import contract_from_ddl

_EPOCH = datetime(1970, 1, 1)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # as SQL Server spells it: nvarchar(500), bigint, bit, ...
    nullable: bool

    @property
    def base_type(self) -> str:
        return self.sql_type.split("(", 1)[0].lower()

    @property
    def length(self) -> str | None:
        found = re.search(r"\((\w+)\)", self.sql_type)
        return found.group(1) if found else None


@dataclass(frozen=True)
class TableModel:
    schema: str
    table: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...]  # the primary key's columns, in key order

    @property
    def key(self) -> str:
        """The key column of a table with a one-column key."""
        if len(self.keys) != 1:
            raise ValueError(f"{self.schema}.{self.table} has a composite key ({', '.join(self.keys)})")
        return self.keys[0]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def blank_row(self) -> dict[str, Any]:
        return {c.name: None for c in self.columns}


def parse_sqlserver_ddl(text: str) -> TableModel:
    """The first `CREATE TABLE` of a SQL Server script: its columns, their types and
    nullability, and its key. Read by the source contracts' parser, the one that
    `bi-console table add --from-ddl` uses, so the demo and the contracts see one DDL alike."""
    found = re.search(r"CREATE TABLE\s+\[?(\w+)\]?\.\[?(\w+)\]?", text, flags=re.I)
    if not found:
        raise ValueError("no CREATE TABLE schema.table (...); in the DDL")
    schema, table = found.groups()
    contract = contract_from_ddl(text, table)
    columns = tuple(Column(c.source_column, c.source_type, c.nullable) for c in contract.columns)
    return TableModel(schema, table, columns, tuple(contract.key_columns))


# SQL Server type -> (PostgreSQL type of the embedded demo source, Kafka Connect type and
# logical name as the Debezium SQL Server connector writes it with time.precision.mode=adaptive).
# decimal.handling.mode=string: decimals and money are strings.
_TYPES: dict[str, tuple[str, str, str | None]] = {
    "bigint": ("bigint", "int64", None),
    "int": ("integer", "int32", None),
    "smallint": ("smallint", "int16", None),
    "tinyint": ("smallint", "int16", None),
    "bit": ("boolean", "boolean", None),
    "float": ("double precision", "double", None),
    "real": ("real", "float", None),
    "decimal": ("numeric", "string", None),
    "numeric": ("numeric", "string", None),
    "money": ("numeric(19,4)", "string", None),
    "smallmoney": ("numeric(10,4)", "string", None),
    "uniqueidentifier": ("uuid", "string", None),
    "datetime": ("timestamp", "int64", "io.debezium.time.Timestamp"),
    "datetime2": ("timestamp", "int64", "io.debezium.time.NanoTimestamp"),
    "datetimeoffset": ("timestamptz", "string", "io.debezium.time.ZonedTimestamp"),
    "date": ("date", "int32", "io.debezium.time.Date"),
    "nvarchar": ("varchar", "string", None),
    "varchar": ("varchar", "string", None),
    "nchar": ("char", "string", None),
    "char": ("char", "string", None),
    "varbinary": ("bytea", "bytes", None),
    "binary": ("bytea", "bytes", None),
}


def _type(column: Column) -> tuple[str, str, str | None]:
    try:
        return _TYPES[column.base_type]
    except KeyError:
        raise ValueError(f"column {column.name}: SQL Server type {column.sql_type} has no mapping") from None


def postgres_type(column: Column) -> str:
    pg = _type(column)[0]
    if pg in ("varchar", "char"):
        return "text" if column.length in (None, "max", "MAX") else f"{pg}({column.length})"
    if pg == "numeric" and "(" in column.sql_type:
        return "numeric" + column.sql_type[column.sql_type.index("(") :]
    return pg


def postgres_ddl(model: TableModel) -> str:
    """The table as the embedded demo source holds it: same names, nearest PostgreSQL types,
    and REPLICA IDENTITY FULL so that Debezium sees a deleted row's values."""
    lines = []
    for c in model.columns:
        line = f'    "{c.name}" {postgres_type(c)}'
        if model.keys == (c.name,):
            line += " PRIMARY KEY"
        elif not c.nullable:
            line += " NOT NULL"
            if c.base_type == "bit":
                line += " DEFAULT false"  # as the source's flags default to 0
        lines.append(line)
    if len(model.keys) > 1:
        lines.append(f"    PRIMARY KEY ({', '.join(chr(34) + k + chr(34) for k in model.keys)})")
    relation = f'{model.schema}."{model.table}"'
    return (
        f"CREATE TABLE IF NOT EXISTS {relation} (\n" + ",\n".join(lines) + "\n);\n"
        f"ALTER TABLE {relation} REPLICA IDENTITY FULL;\n"
    )


def insert_sql(model: TableModel, columns: list[str] | None = None) -> str:
    names = columns or model.names
    return (
        f'INSERT INTO {model.schema}."{model.table}" ({", ".join(chr(34) + n + chr(34) for n in names)}) '
        f"VALUES ({', '.join(f'%({n})s' for n in names)})"
    )


def connect_fields(model: TableModel) -> list[dict[str, Any]]:
    """The row struct's fields of the Debezium value schema."""
    out = []
    for c in model.columns:
        _, kind, logical = _type(c)
        field = {"type": kind, "optional": c.nullable}
        if logical:
            field.update({"name": logical, "version": 1})
        field["field"] = c.name
        out.append(field)
    return out


def _epoch_ms(value: datetime) -> int:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return (value - _EPOCH) // _MS


def _epoch_ns(value: datetime) -> int:
    return _epoch_ms(value.replace(microsecond=0)) * 1_000_000 + value.microsecond * 1000


def _encoder(column: Column) -> Callable[[Any], object] | None:
    kind = column.base_type
    if kind in ("datetime", "smalldatetime"):
        return _epoch_ms
    if kind == "datetime2":
        return _epoch_ns
    if kind == "datetimeoffset":
        return lambda v: v.isoformat()
    if kind == "date":
        return lambda v: (v - _EPOCH.date()).days
    if kind in ("decimal", "numeric", "money", "smallmoney"):
        return str
    if kind == "uniqueidentifier":
        return lambda v: str(v).upper()
    if kind in ("varbinary", "binary"):
        return lambda v: base64.b64encode(v).decode()
    return None


def sqlserver_encoder(model: TableModel) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """row -> the row as the Debezium SQL Server connector writes it in JSON: datetime as epoch
    ms, datetime2 as epoch ns, datetimeoffset as ISO-8601 with its offset, date as days,
    decimal and money as strings, uniqueidentifier as an uppercase GUID, binaries as base64,
    the rest as they are."""
    encoders = [(c.name, e) for c in model.columns if (e := _encoder(c)) is not None]

    def encode(row: dict[str, Any]) -> dict[str, Any]:
        out = dict(row)
        for name, convert in encoders:
            value = out[name]
            if value is not None:
                out[name] = convert(value)
        return out

    return encode
