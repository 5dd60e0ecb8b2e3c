"""`bi-console table add`: a new table by configuration alone.

From the SQL Server DDL or the Debezium schema on its topic, the files a table needs:
its source contract (`dbt/models/staging/base/base_<name>.yml`), the two model files the
staging macros fill in (`base_<name>.sql`, `stg_<name>.sql`), its bronze table among dbt's
sources, and its `[[tables]]` entry in the operator's config file. Nothing is written until
every file is known, and nothing that exists is overwritten: a table that is already there
is refused, naming the file.

    addition = plan_table_add(settings, "product_pricing", ddl_file=Path("ProductPricing.sql"))
    for planned in addition.files: print(planned.path, planned.added)
    apply_table_add(addition)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.config import DEFAULT_CONFIG, ConfigError, Settings, TableConfig, safe_identifier
from pipeline.config.contracts import (
    SourceContract,
    contract_from_ddl,
    contract_from_topic,
    contract_path,
    render_contract,
)
from pipeline.config.operator_file import operator_config_file, render_table_entry, with_table_entry
from pipeline.stores.kafka import newest_message

# The whole of a generated base model: the staging macro reads the table's contract (the
# property file beside it) and dbt_project.yml gives staging/base its materialization.
BASE_MODEL_TEXT = "{{ cdc_staging() }}\n"
SOURCES_FILE = Path("models") / "sources.yml"


class TableAddError(ConfigError):
    """The table cannot be added as asked; one line naming the table, the file or the topic."""


@dataclass
class PlannedFile:
    path: Path
    text: str  # the file's whole new text
    added: str  # what is new in it (all of it for a new file)
    new: bool


@dataclass
class TableAddition:
    table: TableConfig
    contract: SourceContract
    files: list[PlannedFile] = field(default_factory=list)


def staging_model_text(name: str, contract: SourceContract) -> str:
    return (
        "{#-\n"
        f"  stg_{name}: the staging relation of {contract.source}, one row per key, deletes kept.\n"
        f"  A view of base_{name}, which the staging macros build from its source contract\n"
        f"  (base/base_{name}.yml, written by `bi-console table add`).\n"
        "-#}\n"
        "{{ config(materialized='view') }}\n\n"
        f"select * from {{{{ ref('base_{name}') }}}}\n"
    )


def _sources_with(text: str, contract: SourceContract, topic: str, path: Path) -> tuple[str, str]:
    """sources.yml with the table's bronze table added to the `bronze` source (its last
    table list, which the file ends with)."""
    data = yaml.safe_load(text) or {}
    bronze = next((s for s in data.get("sources") or [] if s.get("name") == "bronze"), None)
    if bronze is None:
        raise TableAddError(f"{path}: has no source 'bronze' to add {contract.bronze_table} to")
    names = [t.get("name") for t in bronze.get("tables") or []]
    if contract.bronze_table in names:
        return text, ""
    last = names[-1] if names else None
    if not re.search(r"(?m)^\s+columns: \*bronze_columns\s*\Z", text) or last is None:
        raise TableAddError(
            f"{path}: its last lines are not the bronze source's table list; add {contract.bronze_table} by hand"
        )
    description = f"Change events of {contract.source} (topic {topic})."
    added = (
        f"      - name: {contract.bronze_table}\n"
        f"        description: {json.dumps(description)}\n"
        "        columns: *bronze_columns\n"
    )
    new_text = text.rstrip("\n") + "\n" + added
    reread = yaml.safe_load(new_text)
    bronze = next(s for s in reread["sources"] if s.get("name") == "bronze")
    if [t["name"] for t in bronze["tables"]][-1] != contract.bronze_table:
        raise TableAddError(f"{path}: could not add {contract.bronze_table} to the bronze source; add it by hand")
    return new_text, added


def _read_topic_contract(settings: Settings, name: str, topic: str) -> SourceContract:
    message = newest_message(settings, topic)
    if message is None:
        raise TableAddError(f"topic {topic} does not exist or holds no change event; use --from-ddl")
    try:
        value = json.loads(message.value)
        key = json.loads(message.key) if message.key else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise TableAddError(f"topic {topic}: offset {message.offset} is not JSON ({exc})") from None
    if not (isinstance(value, dict) and isinstance(value.get("schema"), dict) and "payload" in value):
        raise TableAddError(
            f"topic {topic}: its messages carry no schema (the JSON converter runs with schemas.enable=false); "
            "use --from-ddl"
        )
    key_schema = key.get("schema") if isinstance(key, dict) and isinstance(key.get("schema"), dict) else None
    key_columns = None
    if key_schema is None and isinstance(key, dict):
        key_columns = list(key)  # a bare key: its fields are the key, in its order
    return contract_from_topic(value["schema"], name, topic=topic, key_schema=key_schema, key_columns=key_columns)


def plan_table_add(
    settings: Settings,
    name: str,
    *,
    ddl_file: Path | None = None,
    topic: str | None = None,
    dbt_dir: Path | None = None,
) -> TableAddition:
    """Every file `table add` writes, with its text; raises TableAddError (nothing written)."""
    safe_identifier(name, "table name")
    if name != name.lower():
        raise TableAddError(f"table name {name!r}: use lower case (staging names are snake_case)")
    if (ddl_file is None) == (topic is None):
        raise TableAddError("give exactly one of --from-ddl FILE and --from-topic TOPIC")
    config_path = operator_config_file(settings)
    if config_path.resolve() == DEFAULT_CONFIG.resolve():
        raise TableAddError(
            f"BI_CONFIG_FILE={config_path} is the shipped defaults; point it at your own bi-console.toml"
        )
    if any(t.name == name for t in settings.tables):
        where = config_path if config_path.is_file() else "pipeline/config/default_config.toml"
        raise TableAddError(f"table {name!r} is already configured in {where}")
    dbt_dir = Path(dbt_dir or settings.dbt_project_dir)
    if ddl_file is not None:
        if not ddl_file.is_file():
            raise TableAddError(f"--from-ddl {ddl_file}: no such file")
        contract = contract_from_ddl(ddl_file.read_text(encoding="utf-8"), name, database=settings.cdc_database_name)
    else:
        assert topic is not None  # one of the two, checked above
        contract = _read_topic_contract(settings, name, topic)
    database, schema, source_table = contract.source.split(".")[-3:]
    topic = topic or f"{settings.cdc_topic_prefix}.{database}.{schema}.{source_table}"
    fields: dict[str, object] = {
        "name": name,
        "source_schema": schema,
        "source_table": source_table,
        "key_columns": list(contract.key_columns),
        "topic": topic,
        "raw_prefix": f"{name}/raw",
        "bronze_table": contract.bronze_table,
        "dbt_selector": f"base_{name} stg_{name}",
        "staging_relation": f"stg_{name}",
    }
    origin = f"--from-ddl {ddl_file.name}" if ddl_file is not None else f"--from-topic {topic}"
    entry = render_table_entry(
        fields,
        f"{name}: added by `bi-console table add {name} {origin}`.\n"
        f"Staging only (no marts_relation: its marts are not modelled); its source contract is\n"
        f"dbt/{contract_path(Path(), name)}.",
    )
    try:
        table = TableConfig.model_validate(fields)
    except ValueError as exc:
        raise TableAddError(f"table {name!r}: {' '.join(str(exc).split())[:300]}") from None

    files: list[PlannedFile] = []
    for path, text in (
        (contract_path(dbt_dir, name), render_contract(name, contract)),
        (dbt_dir / "models" / "staging" / "base" / f"base_{name}.sql", BASE_MODEL_TEXT),
        (dbt_dir / "models" / "staging" / f"stg_{name}.sql", staging_model_text(name, contract)),
    ):
        if path.exists():
            raise TableAddError(f"{path} exists: table {name!r} already has dbt files; nothing written")
        files.append(PlannedFile(path, text, text, new=True))
    sources = dbt_dir / SOURCES_FILE
    if not sources.is_file():
        raise TableAddError(f"{sources}: no such file (is --dbt-dir the dbt project?)")
    sources_text, sources_added = _sources_with(sources.read_text(encoding="utf-8"), contract, topic, sources)
    if sources_added:
        files.append(PlannedFile(sources, sources_text, sources_added, new=False))
    current = config_path.read_text(encoding="utf-8") if config_path.is_file() else None
    config_text, config_added = with_table_entry(current, entry, config_path)
    files.append(PlannedFile(config_path, config_text, config_added, new=current is None))
    return TableAddition(table, contract, files)


def apply_table_add(addition: TableAddition) -> list[Path]:
    """Write the planned files: the dbt files first, the config entry last, so a configured
    table always has its models."""
    written = []
    for planned in addition.files:
        planned.path.parent.mkdir(parents=True, exist_ok=True)
        planned.path.write_text(planned.text, encoding="utf-8")
        written.append(planned.path)
    return written
