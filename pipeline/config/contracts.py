"""Source contracts: what a source table holds, read by the dbt macros that build its staging.

A contract is one dbt property file per table, `dbt/models/staging/base/base_<table>.yml`
(the format agreed with the dbt side: `config.meta.source_contract` names the source, the
bronze table and the key; each column's `meta` names its source column, SQL Server type and
nullability). This module reads and writes that file and builds a contract from the two
things an operator has: the SQL Server DDL (`contract_from_ddl`) or the Debezium value
schema of a schema-wrapped message (`contract_from_topic`).

    contract = contract_from_ddl(Path("Product.sql").read_text(), "product")
    write_contract(dbt_dir, "product", contract)
    load_contract(dbt_dir, "product").key_columns == ["ID"]
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import DEFAULT_DBT_DIR as DEFAULT_DBT_DIR  # the contracts live in the dbt project
from pipeline.config import ConfigError

# sqlglot logs the statements it cannot read; contract_from_ddl reports them itself, once.
_SQLGLOT_LOG = logging.getLogger("sqlglot")
_SQLGLOT_LOG.addHandler(logging.NullHandler())
_SQLGLOT_LOG.propagate = False
CONTRACT_DIR = Path("models") / "staging" / "base"


class ContractError(ConfigError):
    """A contract file, a DDL text or a topic schema cannot be read as a contract; the message
    names the file, the table or the column."""


@dataclass(frozen=True)
class ContractColumn:
    source_column: str  # exactly as Debezium emits it (the SQL Server column name)
    name: str  # the staging name
    source_type: str  # the SQL Server type as in the DDL: decimal(18,2), nvarchar(max), ...
    nullable: bool
    description: str | None = None
    # Why source_type is a guess (a contract read from a topic whose schema cannot say).
    note: str | None = None


@dataclass(frozen=True)
class SourceContract:
    source: str  # database.schema.table at SQL Server
    bronze_table: str
    key_columns: list[str]  # source names, in key order
    columns: list[ContractColumn]
    description: str | None = None
    note: str | None = None  # how the contract was made, when that limits it

    def column(self, source_column: str) -> ContractColumn:
        for column in self.columns:
            if column.source_column == source_column:
                return column
        raise ContractError(f"{self.source}: no column {source_column!r}")

    @property
    def key_names(self) -> list[str]:
        """The key's staging names, in key order."""
        return [self.column(key).name for key in self.key_columns]


# -- names -----------------------------------------------------------------------

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_NAME = re.compile(r"[^a-z0-9]+")


def snake_case(source_name: str, table_name: str | None = None) -> str:
    """The staging name of a source column: NetUID -> net_uid, MeasureUnitID ->
    measure_unit_id, NamePL -> name_pl. The bare key `ID` is `<table>_id`, so a join of two
    staging relations never meets two columns called `id`."""
    if source_name.upper() == "ID" and table_name:
        return f"{table_name}_id"
    words = _WORD_BOUNDARY.sub("_", source_name.strip())
    name = _NOT_NAME.sub("_", words.lower()).strip("_")
    if not name:
        raise ContractError(f"column {source_name!r} has no letters or digits to name it by")
    return name if not name[0].isdigit() else f"c_{name}"


def contract_path(dbt_dir: Path, table_name: str) -> Path:
    return Path(dbt_dir) / CONTRACT_DIR / f"base_{table_name}.yml"


# -- reading ---------------------------------------------------------------------


def find_contract(dbt_dir: Path, table_name: str) -> SourceContract | None:
    """The table's contract, or None when it has no contract file."""
    if not contract_path(dbt_dir, table_name).is_file():
        return None
    return load_contract(dbt_dir, table_name)


def load_contract(dbt_dir: Path, table_name: str) -> SourceContract:
    path = contract_path(dbt_dir, table_name)
    if not path.is_file():
        raise ContractError(f"table {table_name!r} has no source contract: {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    model_name = f"base_{table_name}"
    models = data.get("models") if isinstance(data, dict) else None
    model = next((m for m in models or [] if isinstance(m, dict) and m.get("name") == model_name), None)
    if model is None:
        raise ContractError(f"{path}: no model {model_name!r}")
    meta = ((model.get("config") or {}).get("meta") or {}) | (model.get("meta") or {})
    header = meta.get("source_contract")
    if not isinstance(header, dict):
        raise ContractError(f"{path}: model {model_name} has no config.meta.source_contract")
    for required in ("source", "bronze_table", "key_columns"):
        if not header.get(required):
            raise ContractError(f"{path}: source_contract.{required} is missing")
    columns = []
    for spec in model.get("columns") or []:
        column_meta = (spec.get("meta") or {}) | ((spec.get("config") or {}).get("meta") or {})
        if "source_column" not in column_meta:
            continue  # a CDC metadata column the macro adds, documented only
        for required in ("source_type", "nullable"):
            if required not in column_meta:
                raise ContractError(f"{path}: column {spec.get('name')!r}: meta.{required} is missing")
        columns.append(
            ContractColumn(
                source_column=str(column_meta["source_column"]),
                name=str(spec["name"]),
                source_type=str(column_meta["source_type"]),
                nullable=bool(column_meta["nullable"]),
                description=spec.get("description") or None,
                note=column_meta.get("note"),
            )
        )
    if not columns:
        raise ContractError(f"{path}: model {model_name} lists no source column")
    contract = SourceContract(
        source=str(header["source"]),
        bronze_table=str(header["bronze_table"]),
        key_columns=[str(k) for k in header["key_columns"]],
        columns=columns,
        description=model.get("description") or None,
        note=header.get("note"),
    )
    missing = [k for k in contract.key_columns if k not in {c.source_column for c in columns}]
    if missing:
        raise ContractError(f"{path}: key column(s) {', '.join(missing)} are not among its columns")
    return contract


# -- writing ---------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_(),.]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def _scalar(value: str) -> str:
    if _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def render_contract(table_name: str, contract: SourceContract) -> str:
    """The contract file's text, in the agreed layout."""
    description = contract.description or (
        f"The latest state of every row of {contract.source}, typed and snake_cased from its source "
        f"contract (this file); hard deletes are kept."
    )
    lines = [
        "version: 2",
        "models:",
        f"  - name: base_{table_name}",
        f"    description: {json.dumps(description, ensure_ascii=False)}",
        "    config:",
        "      meta:",
        "        source_contract:",
        f"          source: {_scalar(contract.source)}",
        f"          bronze_table: {_scalar(contract.bronze_table)}",
        f"          key_columns: [{', '.join(_scalar(k) for k in contract.key_columns)}]",
    ]
    if contract.note:
        lines.append(f"          note: {json.dumps(contract.note, ensure_ascii=False)}")
    lines.append("    columns:")
    single_key = contract.key_columns if len(contract.key_columns) == 1 else []
    for column in contract.columns:
        text = column.description or f"{column.source_column} ({column.source_type}) at the source."
        lines += [
            f"      - name: {_scalar(column.name)}",
            f"        description: {json.dumps(text, ensure_ascii=False)}",
            "        meta:",
            f"          source_column: {_scalar(column.source_column)}",
            f"          source_type: {_scalar(column.source_type)}",
            f"          nullable: {'true' if column.nullable else 'false'}",
        ]
        if column.note:
            lines.append(f"          note: {json.dumps(column.note, ensure_ascii=False)}")
        if column.source_column in single_key:
            lines.append("        data_tests: [not_null, unique]")
        elif column.source_column in contract.key_columns:
            lines.append("        data_tests: [not_null]")
    return "\n".join(lines) + "\n"


def write_contract(dbt_dir: Path, table_name: str, contract: SourceContract, *, overwrite: bool = False) -> Path:
    path = contract_path(dbt_dir, table_name)
    if path.exists() and not overwrite:
        raise ContractError(f"{path} exists: table {table_name!r} already has a source contract")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_contract(table_name, contract), encoding="utf-8")
    return path


# -- from SQL Server DDL ---------------------------------------------------------

# sqlglot reads `PRIMARY KEY CLUSTERED` only with a column list; how the key is stored does
# not matter to a contract.
_CLUSTERING = re.compile(r"\bPRIMARY\s+KEY\s+(?:NON)?CLUSTERED\b(?!\s*\()", re.IGNORECASE)
_BATCH_SEPARATOR = re.compile(r"^[ \t]*GO(?:[ \t]+\d+)?[ \t]*;?[ \t]*$", re.IGNORECASE | re.MULTILINE)
_CREATE_TABLE = re.compile(r"\bCREATE\s+TABLE\b", re.IGNORECASE)
# Where SQL Server stores large values (Management Studio scripts it); sqlglot does not read it.
_STORAGE_OPTIONS = re.compile(r"\b(?:TEXTIMAGE_ON|FILESTREAM_ON)\s+(?:\[[^\]]*\]|\w+)", re.IGNORECASE)
# SQL Server reports (max) as these lengths.
_MAX_LENGTHS = {"2147483647", "1073741823", "-1"}


def _source_type(tokens: list[Any], start: int) -> str:
    """The column's type exactly as the DDL spells it (lower case, no spaces): sqlglot's own
    type node folds decimal into numeric and text into varchar(max)."""
    from sqlglot.tokenizer_core import TokenType  # sqlglot is imported only where SQL is parsed

    name = str(tokens[start].text).lower()
    if start + 1 >= len(tokens) or tokens[start + 1].token_type != TokenType.L_PAREN:
        return name
    args = []
    for token in tokens[start + 2 :]:
        if token.token_type == TokenType.R_PAREN:
            break
        if token.token_type != TokenType.COMMA:
            args.append(token.text.lower())
    return f"{name}({','.join(args)})"


def contract_from_ddl(
    text: str, table_name: str, *, database: str = "ConcordDb", bronze_table: str | None = None
) -> SourceContract:
    """The contract of the first CREATE TABLE in a SQL Server script (other statements,
    comments, defaults and constraints are read past). The key is the PRIMARY KEY, of a
    column or of the table (`CONSTRAINT PK_x PRIMARY KEY (A, B)`). A trailing `-- comment`
    on a column's line becomes its description."""
    import sqlglot  # 0.16 s to import, and only this path parses SQL
    from sqlglot import expressions as exp

    # A script is batches separated by GO lines (sqlcmd's and Management Studio's, not T-SQL):
    # the contract is the batch that creates the table; SET options and the rest are not read.
    batches = _BATCH_SEPARATOR.split(text)
    text = next((b for b in batches if _CREATE_TABLE.search(b)), batches[0])
    text = _STORAGE_OPTIONS.sub("", _CLUSTERING.sub("PRIMARY KEY", text))
    dialect = sqlglot.Dialect.get_or_raise("tsql")
    try:
        tokens = dialect.tokenize(text)
        statements = dialect.parser().parse(tokens, text)
    except sqlglot.errors.SqlglotError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ContractError(
            f"table {table_name!r}: the DDL is not SQL Server SQL sqlglot can read ({first_line})"
        ) from None
    create = next(
        (s for s in statements if isinstance(s, exp.Create) and str(s.args.get("kind")).upper() == "TABLE"), None
    )
    if create is None and _CREATE_TABLE.search(text):
        raise ContractError(
            f"table {table_name!r}: sqlglot could not read its CREATE TABLE (syntax it does not know); "
            "remove the storage and index options and try again"
        )
    if create is None or not isinstance(create.this, exp.Schema):
        raise ContractError(f"table {table_name!r}: the DDL has no CREATE TABLE (name, columns ...)")
    table = create.this.this
    token_ending_at = {token.end: i for i, token in enumerate(tokens)}
    columns: list[ContractColumn] = []
    keys: list[str] = []
    not_null: set[str] = set()
    for item in create.this.expressions:
        if isinstance(item, exp.ColumnDef):
            name = item.this.name
            index = token_ending_at.get(item.this.meta.get("end", -1))
            if item.args.get("kind") is None:
                continue  # a computed column (`B AS (A + 1)`): SQL Server's CDC captures it as NULL
            if index is None:
                raise ContractError(f"table {table_name!r}: cannot find where column {name!r} is declared")
            nullable = True
            for constraint in item.args.get("constraints") or []:
                kind = constraint.kind
                if isinstance(kind, exp.NotNullColumnConstraint):
                    nullable = bool(kind.args.get("allow_null"))
                elif isinstance(kind, exp.PrimaryKeyColumnConstraint):
                    keys.append(name)
                    not_null.add(name)
            comment = " ".join(c.strip() for c in item.comments or [] if c.strip()) or None
            columns.append(
                ContractColumn(
                    source_column=name,
                    name=snake_case(name, table_name),
                    source_type=_source_type(tokens, index + 1),
                    nullable=nullable,
                    description=comment,
                )
            )
        else:
            keys += _table_primary_key(item)
    if not columns:
        raise ContractError(f"table {table_name!r}: the CREATE TABLE lists no column")
    if not keys:
        raise ContractError(f"table {table_name!r}: the DDL declares no PRIMARY KEY; a contract needs the key")
    known = {c.source_column for c in columns}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ContractError(f"table {table_name!r}: PRIMARY KEY names {', '.join(unknown)}, not a column of the table")
    key_set = set(keys) | not_null
    columns = [
        c
        if c.source_column not in key_set
        else ContractColumn(c.source_column, c.name, c.source_type, False, c.description)
        for c in columns
    ]
    schema = table.args.get("db")
    catalog = table.args.get("catalog")
    source = ".".join([catalog.name if catalog else database, schema.name if schema else "dbo", table.name])
    return SourceContract(
        source=source, bronze_table=bronze_table or f"{table_name}_cdc", key_columns=keys, columns=columns
    )


def _table_primary_key(item: Any) -> list[str]:
    """The columns of a table-level PRIMARY KEY (named or not, clustered or not), else []."""
    from sqlglot import expressions as exp

    if isinstance(item, exp.PrimaryKey):
        return [o.this.name for o in item.expressions]
    if isinstance(item, exp.Constraint):
        kinds = item.expressions
        if any(isinstance(k, exp.PrimaryKey) for k in kinds):
            return next(_table_primary_key(k) for k in kinds if isinstance(k, exp.PrimaryKey))
        if any(isinstance(k, exp.PrimaryKeyColumnConstraint) for k in kinds):
            for k in kinds:
                if isinstance(k, exp.ClusteredColumnConstraint | exp.NonClusteredColumnConstraint):
                    return [o.this.name for o in k.this]
    return []


# -- from a Debezium value schema ------------------------------------------------

# Debezium's SQL Server connector, by the field's semantic name (time.precision.mode adaptive
# or connect): the SQL Server type, and whether another type gives the same schema.
_BY_SCHEMA_NAME: dict[str, tuple[str, str | None]] = {
    "io.debezium.time.Date": ("date", None),
    "org.apache.kafka.connect.data.Date": ("date", None),
    "io.debezium.time.Time": ("time(3)", "time(0) to time(3) give the same schema"),
    "io.debezium.time.MicroTime": ("time(6)", "time(4) to time(6) give the same schema"),
    "io.debezium.time.NanoTime": ("time(7)", None),
    "org.apache.kafka.connect.data.Time": ("time(3)", "time.precision.mode=connect: any time(n)"),
    "io.debezium.time.Timestamp": ("datetime", "datetime, smalldatetime and datetime2(0..3) give the same schema"),
    "io.debezium.time.MicroTimestamp": ("datetime2(6)", "datetime2(4) to datetime2(6) give the same schema"),
    "io.debezium.time.NanoTimestamp": ("datetime2(7)", None),
    "org.apache.kafka.connect.data.Timestamp": ("datetime", "time.precision.mode=connect: any datetime type"),
    "io.debezium.time.ZonedTimestamp": ("datetimeoffset(7)", "the schema does not give the fraction digits"),
    "io.debezium.time.ZonedTime": ("time(7)", "a time with a zone; SQL Server has none"),
    "io.debezium.data.Uuid": ("uniqueidentifier", None),
    "io.debezium.data.Xml": ("xml", None),
}
_BY_CONNECT_TYPE: dict[str, tuple[str, str | None]] = {
    "boolean": ("bit", None),
    "int8": ("tinyint", None),
    "int16": ("smallint", "tinyint and smallint give the same schema"),
    "int32": ("int", None),
    "int64": ("bigint", None),
    # The JSON converter spells Connect's FLOAT32 and FLOAT64 "float" and "double".
    "float": ("real", None),
    "double": ("float", "float, or a decimal read with decimal.handling.mode=double"),
    "float32": ("real", None),
    "float64": ("float", "float, or a decimal read with decimal.handling.mode=double"),
    "string": (
        "nvarchar(max)",
        "the schema gives no length, nor whether it is char, varchar, nvarchar or a decimal read with "
        "decimal.handling.mode=string (column.propagate.source.type on the connector makes it exact)",
    ),
    "bytes": ("varbinary(max)", "the schema gives no length; binary, image and rowversion look the same"),
}
# The types whose length, precision or scale is part of their name in the DDL.
_LENGTH_TYPES = {"char", "varchar", "nchar", "nvarchar", "binary", "varbinary"}
_SCALE_TYPES = {"time", "datetime2", "datetimeoffset"}
_PRECISION_TYPES = {"decimal", "numeric"}


def _type_from_source_parameters(parameters: dict[str, Any]) -> str | None:
    """The exact type, from what column.propagate.source.type adds to a field's schema."""
    raw = parameters.get("__debezium.source.column.type")
    if not raw:
        return None
    name = str(raw).lower().split()[0]  # "INT IDENTITY" -> int
    length = parameters.get("__debezium.source.column.length")
    scale = parameters.get("__debezium.source.column.scale")
    if name in _LENGTH_TYPES and length is not None:
        return f"{name}({'max' if str(length) in _MAX_LENGTHS else length})"
    if name in _PRECISION_TYPES and length is not None:
        return f"{name}({length},{scale or 0})"
    if name in _SCALE_TYPES and scale is not None:
        return f"{name}({scale})"
    return name


def _type_from_schema(field: dict[str, Any]) -> tuple[str, str | None]:
    parameters = field.get("parameters") or {}
    exact = _type_from_source_parameters(parameters)
    if exact:
        return exact, None
    semantic = field.get("name")
    if semantic == "org.apache.kafka.connect.data.Decimal":
        scale = parameters.get("scale", "0")
        precision = parameters.get("connect.decimal.precision")
        if precision is None:
            return f"decimal(38,{scale})", "the schema gives the scale, not the precision"
        if (str(precision), str(scale)) == ("19", "4"):
            return "decimal(19,4)", "money gives the same schema"
        if (str(precision), str(scale)) == ("10", "4"):
            return "decimal(10,4)", "smallmoney gives the same schema"
        return f"decimal({precision},{scale})", "numeric gives the same schema"
    if semantic in _BY_SCHEMA_NAME:
        return _BY_SCHEMA_NAME[semantic]
    connect_type = str(field.get("type"))
    if connect_type in _BY_CONNECT_TYPE:
        source_type, note = _BY_CONNECT_TYPE[connect_type]
        if semantic:  # a semantic type this map does not know: say so rather than pass it off as exact
            note = f"unknown schema name {semantic}; " + (note or f"read as {source_type}")
        return source_type, note
    raise ContractError(f"field {field.get('field')!r}: Debezium type {connect_type!r} has no SQL Server type here")


def row_fields(value_schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The row's fields (those of `after`) of a Debezium envelope schema."""
    for field in value_schema.get("fields") or []:
        if field.get("field") == "after" and field.get("type") == "struct":
            return list(field.get("fields") or [])
    raise ContractError(f"schema {value_schema.get('name')!r} is not a Debezium envelope (no struct field 'after')")


def contract_from_topic(
    value_schema: dict[str, Any],
    table_name: str,
    *,
    topic: str,
    key_schema: dict[str, Any] | None = None,
    key_columns: list[str] | None = None,
    bronze_table: str | None = None,
) -> SourceContract:
    """The contract of a table from the Debezium value schema of one of its messages (the
    `schema` of a schema-wrapped `{"schema", "payload"}`). The key comes from `key_columns`,
    else the key schema's fields. Where the schema cannot tell two SQL Server types apart,
    the column's `note` says so; with column.propagate.source.type on, every type is exact."""
    fields = row_fields(value_schema)
    if not fields:
        raise ContractError(f"topic {topic}: the schema's row has no field")
    if key_columns is None:
        key_columns = [str(f["field"]) for f in (key_schema or {}).get("fields") or [] if "field" in f]
    if not key_columns:
        raise ContractError(f"topic {topic}: no key schema and no key columns given; name the key")
    names = [str(f.get("field")) for f in fields]
    unknown = [k for k in key_columns if k not in names]
    if unknown:
        raise ContractError(f"topic {topic}: key column(s) {', '.join(unknown)} are not fields of the row")
    columns = []
    for field in fields:
        source_type, note = _type_from_schema(field)
        source_column = str(field["field"])
        columns.append(
            ContractColumn(
                source_column=source_column,
                name=snake_case(source_column, table_name),
                source_type=source_type,
                nullable=bool(field.get("optional")) and source_column not in key_columns,
                note=None if note is None else f"guessed from the topic's schema: {note}",
            )
        )
    envelope = str(value_schema.get("name") or "")
    parts = envelope.removesuffix(".Envelope").split(".")
    source = ".".join(parts[-3:]) if len(parts) >= 3 else ".".join(topic.split(".")[-3:])
    guessed = sum(1 for c in columns if c.note)
    return SourceContract(
        source=source,
        bronze_table=bronze_table or f"{table_name}_cdc",
        key_columns=list(key_columns),
        columns=columns,
        note=(
            f"read from the Debezium schema of topic {topic}; {guessed} of {len(columns)} types are guesses "
            "(their column's note says why): check them against the DDL"
            if guessed
            else f"read from the Debezium schema of topic {topic}"
        ),
    )


# -- the JSON each SQL Server type arrives as ------------------------------------------

# The JSON kinds (jsonb_typeof) a column's non-null values take in Debezium's SQL Server
# encodings (dbt/README.md's type map): a value of another kind means the source retyped
# the column. Decimals are strings in string mode and numbers in double mode; times are
# epoch numbers, or ISO strings where a connector is set to send them.
_JSON_KINDS: dict[str, frozenset[str]] = {
    **dict.fromkeys(("bit",), frozenset({"boolean"})),
    **dict.fromkeys(("tinyint", "smallint", "int", "bigint", "float", "real"), frozenset({"number"})),
    **dict.fromkeys(("decimal", "numeric", "money", "smallmoney"), frozenset({"string", "number"})),
    **dict.fromkeys(("date", "time", "datetime", "datetime2", "smalldatetime"), frozenset({"number", "string"})),
    **dict.fromkeys(
        (
            "datetimeoffset",
            "uniqueidentifier",
            "char",
            "varchar",
            "nchar",
            "nvarchar",
            "text",
            "ntext",
            "xml",
            "sysname",
            "binary",
            "varbinary",
            "image",
            "rowversion",
            "timestamp",
        ),
        frozenset({"string"}),
    ),
}


def expected_json_kinds(source_type: str) -> frozenset[str] | None:
    """The JSON kinds a column of `source_type` arrives as; None for a type not mapped."""
    return _JSON_KINDS.get(source_type.split("(", 1)[0].strip().lower())
