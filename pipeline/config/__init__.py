"""One settings object for the whole pipeline, read from the environment and `.env`.

Connection settings and secrets come from `BI_*` environment variables (or a `.env`
file); table definitions, thresholds, keymap and theme come from a TOML config file
(`bi-console.toml`), whose defaults ship in `pipeline/config/default_config.toml`.
"""

from __future__ import annotations

import os
import re
import secrets
import string
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "BI_"
DEFAULT_CONFIG = Path(__file__).with_name("default_config.toml")
# The dbt project the repository ships: its models and the tables' source contracts.
DEFAULT_DBT_DIR = Path(__file__).resolve().parents[2] / "dbt"
# Identifiers that come from configuration end up in SQL and object names; refuse
# anything that is not a plain name rather than trying to escape it everywhere.
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class ConfigError(Exception):
    """A setting is missing or wrong. The message is one line naming the variable."""


def xdg_data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def safe_identifier(value: str, what: str) -> str:
    if not _SAFE_NAME.match(value or ""):
        raise ConfigError(f"{what}={value!r} is not a plain SQL identifier (letters, digits, underscore)")
    return value


class TableChecks(BaseModel):
    """Which marts columns the headless checks read; the numbers are in [thresholds]."""

    # The marts' copy of the source's commit time (source.ts_ms), compared with the source's
    # latest change for freshness.
    freshness_column: str | None = None
    # How the source says when a row last changed and whether it is deleted: columns of
    # source_schema.source_table, read by the freshness and source reconciliation checks.
    source_modified_column: str | None = None
    source_deleted_column: str | None = None
    min_active_rows: bool = False
    coverage_column: str | None = None
    coverage_value: str | None = None
    flag_shares: list[str] = Field(default_factory=list)

    @field_validator("freshness_column", "coverage_column")
    @classmethod
    def _plain(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else safe_identifier(v, f"tables.checks.{info.field_name}")

    @field_validator("source_modified_column", "source_deleted_column")
    @classmethod
    def _source_column(cls, v: str | None, info: ValidationInfo) -> str | None:
        # Source columns keep their case (SQL Server's "Updated"); they are always quoted.
        if v is not None and (not v or '"' in v or "\x00" in v):
            raise ValueError(f"tables.checks.{info.field_name}: {v!r} is not a column name")
        return v

    @field_validator("flag_shares")
    @classmethod
    def _plain_flags(cls, v: list[str]) -> list[str]:
        return [safe_identifier(flag, "tables.checks.flag_shares") for flag in v]


class TableProfile(BaseModel):
    """The production profile (shared contract) the marts are compared with; a drift beyond
    the [thresholds] profile tolerances is a warning."""

    value_shares: dict[str, dict[str, float]] = Field(default_factory=dict)  # column -> value -> share
    true_shares: dict[str, float] = Field(default_factory=dict)  # boolean column -> share true
    filled_shares: dict[str, float] = Field(default_factory=dict)  # column -> share not null
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)  # column -> (min, max)

    @field_validator("value_shares", "true_shares", "filled_shares", "ranges")
    @classmethod
    def _plain_columns(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        for column in v:
            safe_identifier(column, f"tables.profile.{info.field_name}")
        return v

    @property
    def empty(self) -> bool:
        return not (self.value_shares or self.true_shares or self.filled_shares or self.ranges)


class TableConfig(BaseModel):
    """A source table flowing through the pipeline. Everything table-specific lives here."""

    name: str
    source_schema: str = "dbo"
    source_table: str
    # The source key, one column or several (a link table's), as Debezium names them in the key.
    key_columns: list[str] = Field(default_factory=lambda: ["ID"], min_length=1)
    topic: str
    raw_prefix: str
    bronze_table: str
    # The dbt models a refresh of this table builds; unset, its staging models and, if it has
    # one, its marts relation.
    dbt_selector: str
    staging_relation: str
    # None for a table with staging only (`bi-console table add`): its marts are not modelled.
    marts_relation: str | None = None
    suites: list[str] = Field(default_factory=list)
    checks: TableChecks = TableChecks()
    profile: TableProfile = TableProfile()

    @model_validator(mode="before")
    @classmethod
    def _single_key_column(cls, data: Any) -> Any:
        """`key_column = "ID"`, the one-column spelling of earlier config files, still reads."""
        if isinstance(data, dict) and "key_column" in data:
            if "key_columns" in data:
                raise ConfigError("tables: give key_columns or key_column, not both")
            legacy = safe_identifier(data["key_column"], "tables.key_column")
            data = {**{k: v for k, v in data.items() if k != "key_column"}, "key_columns": [legacy]}
        return data

    @field_validator("name", "bronze_table", "staging_relation")
    @classmethod
    def _plain(cls, v: str, info: ValidationInfo) -> str:
        return safe_identifier(v, f"tables.{info.field_name}")

    @field_validator("key_columns")
    @classmethod
    def _plain_key_columns(cls, columns: list[str]) -> list[str]:
        if len(set(columns)) != len(columns):
            raise ConfigError(f"tables.key_columns={columns!r} names a column twice")
        return [safe_identifier(c, "tables.key_columns") for c in columns]

    @field_validator("marts_relation")
    @classmethod
    def _plain_marts(cls, v: str | None) -> str | None:
        return None if v is None else safe_identifier(v, "tables.marts_relation")

    @model_validator(mode="before")
    @classmethod
    def _default_selector(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dbt_selector" not in data and "name" in data and "staging_relation" in data:
            marts = [data["marts_relation"]] if data.get("marts_relation") else []
            data = {**data, "dbt_selector": " ".join([f"base_{data['name']}", data["staging_relation"], *marts])}
        return data

    @property
    def raw_objects_prefix(self) -> str:
        return f"{self.raw_prefix.rstrip('/')}/batch="

    @property
    def quarantine_prefix(self) -> str:
        return f"{self.raw_prefix.rstrip('/').rsplit('/', 1)[0]}/quarantine/"


class Thresholds(BaseModel, extra="allow"):
    """Numbers the checks compare with. Flag share bounds are `<flag>_share_min/_max`."""

    freshness_max_age_minutes: float = 60.0
    min_active_products: int = 1
    min_multilingual_coverage: float = 1.0
    is_for_sale_share_max: float = 1.0
    is_for_web_share_min: float = 0.5
    # Quarantined messages (not replayed) and rejected rows per table: above 0 is a warning,
    # above these a failure.
    quarantined_max: int = Field(default=10, ge=0)
    rejected_max: int = Field(default=10, ge=0)
    # Events in the topic not yet ingested: above 0 warns, above this fails.
    ingest_lag_max_events: int = Field(default=1000, ge=0)
    # Profile drift: a share may differ from production by this much (absolute, 0.1 = 10
    # points); a range bound by this share of the range's width.
    profile_share_tolerance: float = Field(default=0.1, ge=0)
    profile_range_tolerance: float = Field(default=0.1, ge=0)

    def share_bounds(self, flag: str) -> tuple[float, float]:
        values = self.model_dump()
        return float(values.get(f"{flag}_share_min", 0.0)), float(values.get(f"{flag}_share_max", 1.0))


class RunnerConfig(BaseModel):
    """The continuous runner, `bi-console run` ([runner] of the config file)."""

    # A raw object is written at this many events, or once its first event waited this long.
    object_max_events: int = Field(default=5000, ge=1)
    object_max_age_seconds: float = Field(default=1.0, gt=0)
    # Off the hot path: dbt tests and Great Expectations at most this often (when data changed),
    # the BI cache refresh this long after the last change reached the marts (debounced).
    validate_every_seconds: float = Field(default=300.0, gt=0)
    bi_debounce_seconds: float = Field(default=10.0, ge=0)
    heartbeat_every_seconds: float = Field(default=2.0, gt=0)
    # A heartbeat older than this is a dead (or hung) runner: `--check` fails.
    heartbeat_timeout_seconds: float = Field(default=30.0, gt=0)
    # The freshness objective: how far the marts may trail a source commit while the runner
    # runs; `--check` fails above it.
    freshness_objective_seconds: float = Field(default=10.0, gt=0)
    # A manual refresh asks a running runner to pause, and gives up after this long.
    pause_wait_seconds: float = Field(default=120.0, gt=0)


class FileConfig(BaseModel):
    """The TOML config file: tables and behaviour, never secrets."""

    tables: list[TableConfig]
    thresholds: Thresholds = Thresholds()
    runner: RunnerConfig = RunnerConfig()
    keymap: dict[str, str] = Field(default_factory=dict)
    theme: str = "textual-dark"
    # The TUI asks before a stop, a restart or a fix that writes; false skips the question.
    confirm_actions: bool = True
    staging_schema: str = "staging_staging"
    marts_schema: str = "marts"
    bronze_schema: str = "bronze"
    meta_schema: str = "bi_console"

    @field_validator("staging_schema", "marts_schema", "bronze_schema", "meta_schema")
    @classmethod
    def _plain_schema(cls, v: str, info: ValidationInfo) -> str:
        return safe_identifier(v, str(info.field_name))


class Settings(BaseSettings):
    """Connection settings. Secrets have no default: `bi-console init` generates them."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    runtime: Literal["auto", "embedded", "compose"] = "auto"
    data_dir: Path = Field(default_factory=lambda: xdg_data_home() / "bi-console")
    config_file: Path | None = None
    # The dbt project transform and test run and validate reads the source contracts from
    # (BI_DBT_PROJECT_DIR): a copy of it holds tables of its own (bench/tables.py).
    dbt_project_dir: Path = DEFAULT_DBT_DIR

    pg_host: str = "127.0.0.1"
    pg_port: int = 5433
    pg_database: str = "analytics"
    pg_user: str = "analytics"
    pg_password: str
    pg_reader_user: str = "bi_reader"
    pg_reader_password: str
    pg_binaries: Literal["embedded", "system"] = "embedded"
    pg_system_bindir: Path = Path("/usr/lib/postgresql/15/bin")

    source_host: str = "127.0.0.1"
    source_port: int = 5433
    source_database: str = "concord"
    source_user: str = "concord"
    source_password: str

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_consumer_group: str = "bi-console-ingest"
    cdc_schemas_enable: bool = True
    cdc_topic_prefix: str = "cord"
    cdc_database_name: str = "ConcordDb"
    # Replication slots are per server, not per database: two pipelines capturing from one
    # PostgreSQL server need two names.
    cdc_slot_name: str = "bi_console_cdc"

    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str = "cord-raw"
    s3_region: str = "us-east-1"

    kafka_connect_url: str = "http://127.0.0.1:8083"
    connector_name: str = "sqlserver-product-v2"

    superset_url: str = "http://127.0.0.1:8088"
    superset_user: str = "bi_admin"
    superset_password: str | None = None
    superset_secret_key: str | None = None
    # PostgreSQL as the Superset server reaches it, for the connection it queries the marts
    # through; unset, where bi-console reaches it. A Superset container reaches the compose
    # network's `postgres:5432`, not the port published on the host.
    superset_pg_host: str | None = None
    superset_pg_port: int | None = None

    compose_project_name: str | None = None
    compose_files: str | None = None

    alert_webhook_url: str | None = None
    ingest_batch_size: int = 5000
    # Values above this go to the quarantine; raise it, then `bi-console quarantine replay`.
    ingest_max_value_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    load_workers: int = Field(default=2, ge=1, le=16)

    @field_validator("pg_database", "pg_user", "pg_reader_user", "source_database", "source_user", "cdc_slot_name")
    @classmethod
    def _plain_names(cls, v: str, info: ValidationInfo) -> str:
        return safe_identifier(v, ENV_PREFIX + str(info.field_name).upper())

    @cached_property
    def file(self) -> FileConfig:
        return load_file_config(self.config_file)

    @property
    def tables(self) -> list[TableConfig]:
        return self.file.tables

    def table(self, name: str) -> TableConfig:
        for table in self.tables:
            if table.name == name:
                return table
        known = ", ".join(t.name for t in self.tables)
        raise ConfigError(f"table {name!r} is not configured (known: {known})")

    def pg_dsn(
        self, database: str | None = None, *, user: str | None = None, password: str | None = None
    ) -> dict[str, Any]:
        return {
            "host": self.pg_host,
            "port": self.pg_port,
            "dbname": database or self.pg_database,
            "user": user or self.pg_user,
            "password": password if password is not None else self.pg_password,
            "connect_timeout": 5,
            "application_name": "bi-console",
        }

    def source_dsn(self) -> dict[str, Any]:
        return {
            "host": self.source_host,
            "port": self.source_port,
            "dbname": self.source_database,
            "user": self.source_user,
            "password": self.source_password,
            "connect_timeout": 5,
            "application_name": "bi-console",
        }

    def to_env(self) -> dict[str, str]:
        """The settings as `BI_*` variables: what a child process or a `.env` needs to see
        exactly this configuration. Unset (None) settings are left out, so the child's own
        defaults apply; booleans are written as pydantic reads them back (true/false)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def secret_values(self) -> list[str]:
        """Every secret in force, for redaction of logs and outputs."""
        values = [
            self.pg_password,
            self.pg_reader_password,
            self.source_password,
            self.s3_secret_key,
            self.s3_access_key,
            self.superset_password,
            self.superset_secret_key,
        ]
        return [v for v in values if v and len(v) >= 6]


SECRET_VARIABLES = (
    "PG_PASSWORD",
    "PG_READER_PASSWORD",
    "SOURCE_PASSWORD",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "SUPERSET_PASSWORD",
    "SUPERSET_SECRET_KEY",
    "SOURCE_SA_PASSWORD",
)

# Secrets that SQL Server checks against its password policy: at least 8 characters from
# three of upper case, lower case, digits and symbols. The symbols are safe in `.env`,
# in compose interpolation and in a shell (no $, #, quotes, spaces or backslashes).
_POLICY_SECRETS = {"SOURCE_SA_PASSWORD"}
_POLICY_SYMBOLS = "-_.+"


def _policy_password(length: int = 32) -> str:
    rng = secrets.SystemRandom()
    alphabet = string.ascii_letters + string.digits + _POLICY_SYMBOLS
    chars = [
        secrets.choice(string.ascii_uppercase),
        secrets.choice(string.ascii_lowercase),
        secrets.choice(string.digits),
        secrets.choice(_POLICY_SYMBOLS),
    ]
    chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
    rng.shuffle(chars)
    return "".join(chars)


def config_file_candidates(path: Path | None) -> list[Path]:
    """Where the operator's config file is looked for, first found wins: BI_CONFIG_FILE when
    set, else ./bi-console.toml, then the XDG one."""
    return [path] if path else [Path("bi-console.toml"), xdg_config_file()]


def load_file_config(path: Path | None) -> FileConfig:
    candidates = config_file_candidates(path)
    data = tomllib.loads(DEFAULT_CONFIG.read_text())
    for candidate in candidates:
        if candidate and candidate.is_file():
            try:
                override = tomllib.loads(candidate.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{candidate}: not valid TOML ({exc})") from None
            data.update(override)
            break
        if path is not None:
            raise ConfigError(f"{ENV_PREFIX}CONFIG_FILE={path} does not exist")
    try:
        return FileConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"config file: {where}: {first['msg']}") from None


def xdg_config_file() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "bi-console" / "bi-console.toml"


def load_settings(env_file: Path | str | None = ".env", **overrides: Any) -> Settings:
    """Build the settings, turning pydantic's report into one line naming the variable."""
    try:
        return Settings(_env_file=env_file, **overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        variable = ENV_PREFIX + field.upper()
        where = f"environment and {Path(env_file).resolve()}" if env_file else "environment"
        if first["type"] == "missing":
            raise ConfigError(
                f"{variable} is not set (looked in {where}); run `bi-console init` to create a .env"
            ) from None
        raise ConfigError(f"{variable}={first.get('input')!r}: {first['msg']}") from None


def generate_env(compose: bool = False) -> str:
    """The text of a new `.env`: every secret random, services on 127.0.0.1."""
    lines = [
        "# Written by `bi-console init`. Secrets are random; keep this file private.",
        f"{ENV_PREFIX}RUNTIME={'compose' if compose else 'auto'}",
    ]
    for name in SECRET_VARIABLES:
        if name in _POLICY_SECRETS:
            lines.append(f"{ENV_PREFIX}{name}={_policy_password()}")
            continue
        length = 48 if name == "SUPERSET_SECRET_KEY" else 24
        lines.append(f"{ENV_PREFIX}{name}={secrets.token_urlsafe(length)}")
    if compose:
        lines += [
            f"{ENV_PREFIX}PG_PORT=5433",
            f"{ENV_PREFIX}S3_ENDPOINT=http://127.0.0.1:9000",
            f"{ENV_PREFIX}KAFKA_BOOTSTRAP=127.0.0.1:9092",
            f"{ENV_PREFIX}SUPERSET_PG_HOST=postgres",
            f"{ENV_PREFIX}SUPERSET_PG_PORT=5432",
        ]
    return "\n".join(lines) + "\n"
