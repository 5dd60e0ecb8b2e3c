"""The validate step: run a table's Great Expectations (GX Core 1.x) suites.

Suites are configuration, not code: `expectations/<suite>.json`, found by the names in
the table config's `suites`. A suite file is GX's own suite JSON plus a `layer`
(`bronze`, `staging` or `marts`: which relation of the table it validates) and
placeholders that are filled in from Settings when the suite is loaded:

    "${thresholds.<name>}"            a threshold from the config file (typed when it is the whole value)
    "${one_minus:<name>}"             1 - thresholds.<name> (an upper share bound as a `mostly`)
    "${now_minus_minutes:<name>}"     now (UTC) minus thresholds.<name> minutes, as a datetime
    "${relation:bronze|staging|marts}" the quoted schema.relation of that layer
    "${table.<field>}"                a field of the table config (topic, bronze_table, ...)
    "${schema:bronze|staging|marts}"  a quoted schema name

A table with no `suites` and a source contract is validated by the suite made from its
contract, `<table>_staging_contract` (pipeline/steps/contract_suite.py).

An expectation's `severity` is GX's (`critical`, `warning`, `info`); here `critical`
is reported as `error`. A suite succeeds when all its error-severity expectations do;
failed warnings are reported but do not fail it.

    result = run_validation(settings, table_name, log=print)
    result.success, [(s.name, s.success) for s in result.suites]
    result.suites[0].expectations[0].observed_value

Results are written as JSON to `<data_dir>/validation/` (`<table>-<stamp>.json` and
`<table>-latest.json`) and GX Data Docs are built in `<data_dir>/validation/data_docs/`.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection

from pipeline.config import Settings, TableConfig
from pipeline.config.contracts import ContractError, load_contract
from pipeline.process.background_import import import_in_background
from pipeline.process.log_sink import Log
from pipeline.steps.contract_suite import contract_suite, contract_suite_name, suite_names
from pipeline.stores.db import one_row

if TYPE_CHECKING:  # Great Expectations takes seconds to import: at run time only when a suite runs
    from great_expectations import ExpectationSuite, ValidationDefinition
    from great_expectations.checkpoint import ValidationAction
    from great_expectations.data_context import EphemeralDataContext
    from great_expectations.datasource.fluent import PostgresDatasource


DEFAULT_EXPECTATIONS_DIR = Path(__file__).resolve().parents[2] / "expectations"
LAYERS = ("bronze", "staging", "marts")
_SEVERITY = {"critical": "error", "warning": "warning", "info": "info"}
_TOKEN = re.compile(r"\$\{([^}]+)\}")


class SuiteConfigError(Exception):
    """A suite file is missing or malformed."""


@dataclass
class ExpectationOutcome:
    type: str
    column: str | None
    success: bool
    severity: str  # error | warning | info
    observed_value: Any = None
    description: str | None = None
    check: str | None = None  # meta.check, e.g. reconciliation, keys, freshness
    details: dict[str, Any] = field(default_factory=dict)  # GX's result summary (counts, partial lists)
    exception: str | None = None

    @property
    def summary(self) -> str:
        """One line for a report: which expectation, on what, observed what."""
        return f"{self.type}({self.column or self.check}) observed {self.observed_value}"


@dataclass
class SuiteOutcome:
    name: str
    layer: str
    relation: str
    success: bool  # every error-severity expectation succeeded
    gx_success: bool | None = None  # GX's own verdict (warnings included)
    expectations: list[ExpectationOutcome] = field(default_factory=list)
    error: str | None = None  # the suite could not run at all

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success and e.severity == "error"]

    @property
    def warnings(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success and e.severity != "error"]


@dataclass
class ValidationResult:
    table: str
    success: bool
    started_at: str
    elapsed: float
    suites: list[SuiteOutcome] = field(default_factory=list)
    results_path: str | None = None
    data_docs_path: str | None = None

    @property
    def counts(self) -> dict[str, int]:
        exps = [e for s in self.suites for e in s.expectations]
        return {
            "suites": len(self.suites),
            "suites_failed": sum(1 for s in self.suites if not s.success),
            "expectations": len(exps),
            "passed": sum(1 for e in exps if e.success),
            "failed": sum(1 for e in exps if not e.success and e.severity == "error"),
            "warnings": sum(1 for e in exps if not e.success and e.severity != "error"),
        }

    def suite(self, name: str) -> SuiteOutcome | None:
        return next((s for s in self.suites if s.name == name), None)

    @property
    def covered(self) -> bool:
        """False for a table with no suite. Its run does not fail (`success`), but nothing
        validated it: every report says "not covered", never "passed"."""
        return bool(self.suites)

    @property
    def verdict(self) -> str:
        return "not covered" if not self.covered else ("passed" if self.success else "FAILED")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["counts"] = self.counts
        data["covered"] = self.covered
        return data


# -- suite loading -----------------------------------------------------------


def layer_relation(settings: Settings, table: TableConfig, layer: str) -> tuple[str, str]:
    f = settings.file
    if layer == "bronze":
        return f.bronze_schema, table.bronze_table
    if layer == "staging":
        return f.staging_schema, table.staging_relation
    if layer == "marts":
        if table.marts_relation is None:
            raise SuiteConfigError(f"table {table.name!r} has no marts layer (tables.marts_relation is not set)")
        return f.marts_schema, table.marts_relation
    raise SuiteConfigError(f"unknown layer {layer!r} (expected one of {', '.join(LAYERS)})")


def _quote(conn: connection, *names: str) -> str:
    return sql.SQL(".").join(sql.Identifier(n) for n in names).as_string(conn)


def _resolve(token: str, settings: Settings, table: TableConfig, conn: connection, now: datetime) -> Any:
    kind, _, arg = token.partition(":")
    if not arg and "." in kind:
        kind, _, arg = kind.partition(".")
    thresholds = settings.file.thresholds
    if kind == "thresholds":
        if not hasattr(thresholds, arg):
            raise SuiteConfigError(f"unknown threshold {arg!r}")
        return getattr(thresholds, arg)
    if kind == "one_minus":
        name = arg.removeprefix("thresholds.")
        if not hasattr(thresholds, name):
            raise SuiteConfigError(f"unknown threshold {name!r}")
        return round(1.0 - float(getattr(thresholds, name)), 12)
    if kind == "now_minus_minutes":
        name = arg.removeprefix("thresholds.")
        if not hasattr(thresholds, name):
            raise SuiteConfigError(f"unknown threshold {name!r}")
        return now - timedelta(minutes=float(getattr(thresholds, name)))
    if kind == "relation":
        return _quote(conn, *layer_relation(settings, table, arg))
    if kind == "schema":
        return _quote(conn, layer_relation(settings, table, arg)[0])
    if kind == "table":
        if arg not in TableConfig.model_fields:
            raise SuiteConfigError(f"unknown table field {arg!r}")
        return getattr(table, arg)
    raise SuiteConfigError(f"unknown placeholder ${{{token}}}")


def _substitute(value: Any, settings: Settings, table: TableConfig, conn: connection, now: datetime) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, settings, table, conn, now) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, settings, table, conn, now) for v in value]
    if isinstance(value, str) and "${" in value:
        whole = _TOKEN.fullmatch(value)
        if whole:
            return _resolve(whole.group(1), settings, table, conn, now)
        return _TOKEN.sub(lambda m: str(_resolve(m.group(1), settings, table, conn, now)), value)
    return value


def load_suite_file(name: str, expectations_dir: Path | None = None) -> dict[str, Any]:
    path = Path(expectations_dir or DEFAULT_EXPECTATIONS_DIR) / f"{name}.json"
    if not path.is_file():
        raise SuiteConfigError(f"suite {name!r}: {path} does not exist")
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SuiteConfigError(f"suite {name!r}: {path} is not valid JSON ({exc})") from None
    if data.get("layer") not in LAYERS:
        raise SuiteConfigError(f"suite {name!r}: 'layer' must be one of {', '.join(LAYERS)}")
    if not isinstance(data.get("expectations"), list):
        raise SuiteConfigError(f"suite {name!r}: 'expectations' must be a list")
    return data


def _suite_data(name: str, table: TableConfig, expectations_dir: Path | str | None, dbt_dir: Path) -> dict[str, Any]:
    """A suite file's content; the contract suite of a table that has no file of that name is
    made from its source contract in `dbt_dir`, the run's dbt project (never a default one)."""
    directory = Path(expectations_dir or DEFAULT_EXPECTATIONS_DIR)
    if name == contract_suite_name(table) and not (directory / f"{name}.json").is_file():
        try:
            return contract_suite(load_contract(dbt_dir, table.name))
        except ContractError as exc:
            raise SuiteConfigError(f"suite {name!r}: {exc}") from None
    return load_suite_file(name, directory)


def render_suite(
    data: dict[str, Any], settings: Settings, table: TableConfig, conn: connection, now: datetime | None = None
) -> dict[str, Any]:
    """The suite file with every placeholder filled in from Settings."""
    rendered: dict[str, Any] = _substitute(data, settings, table, conn, now or datetime.now(timezone.utc))
    return rendered


# -- running -----------------------------------------------------------------


def _connection_string(settings: Settings) -> str:
    from sqlalchemy.engine import URL  # heavy, and only GX needs it

    url = URL.create(
        "postgresql+psycopg2",
        username=settings.pg_user,
        password=settings.pg_password,
        host=settings.pg_host,
        port=int(settings.pg_port),
        database=settings.pg_database,
    )
    return url.render_as_string(hide_password=False)


def import_gx_in_background() -> threading.Thread:
    """Start importing Great Expectations while an earlier step waits on PostgreSQL."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    return import_in_background("great_expectations")


def _new_context(docs_dir: Path) -> EphemeralDataContext:
    """An in-memory GX context (nothing persisted but the Data Docs site under docs_dir)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx  # heavy (seconds): loaded only when a suite runs
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "bi_console": {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _build_suite(name: str, rendered: dict[str, Any]) -> ExpectationSuite:
    from great_expectations import ExpectationSuite  # heavy
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration  # heavy

    expectations = []
    for i, spec in enumerate(rendered["expectations"]):
        try:
            cfg = ExpectationConfiguration(
                type=spec["type"],
                kwargs=spec.get("kwargs", {}),
                meta=spec.get("meta") or {},
                description=spec.get("description"),
                severity=spec.get("severity", "critical"),
            )
            expectations.append(cfg.to_domain_obj())
        except Exception as exc:
            raise SuiteConfigError(f"suite {name!r}: expectation #{i} ({spec.get('type')}): {exc}") from None
    return ExpectationSuite(name=name, expectations=expectations, meta={"layer": rendered["layer"]})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _outcome(res: dict[str, Any]) -> ExpectationOutcome:
    cfg = res.get("expectation_config") or {}
    kwargs = cfg.get("kwargs") or {}
    result = res.get("result") or {}
    if "observed_value" in result:
        observed = result["observed_value"]
    elif "unexpected_count" in result or "element_count" in result:
        observed = {
            k: result.get(k)
            for k in ("element_count", "unexpected_count", "unexpected_percent", "partial_unexpected_list")
            if k in result
        }
    else:
        observed = None
    exc_info = res.get("exception_info") or {}
    exception = None
    if isinstance(exc_info, dict) and exc_info.get("raised_exception"):
        exception = exc_info.get("exception_message")
    else:  # GX sometimes nests exception_info per metric
        for item in exc_info.values() if isinstance(exc_info, dict) else []:
            if isinstance(item, dict) and item.get("raised_exception"):
                exception = item.get("exception_message")
                break
    severity = str(cfg.get("severity") or "critical")
    column = kwargs.get("column")
    if column is None and kwargs.get("column_list"):
        column = ",".join(kwargs["column_list"])
    return ExpectationOutcome(
        type=cfg.get("type", "?"),
        column=column,
        success=bool(res.get("success")),
        severity=_SEVERITY.get(severity, severity),
        observed_value=_jsonable(observed),
        description=cfg.get("description"),
        check=(cfg.get("meta") or {}).get("check"),
        details=_jsonable({k: v for k, v in result.items() if k != "observed_value"}),
        exception=exception,
    )


def _redact(text: str, settings: Settings) -> str:
    for secret in settings.secret_values():
        text = text.replace(secret, "***")
    return text


def run_validation(
    settings: Settings,
    table: str | TableConfig,
    log: Log | None = None,
    *,
    suites: list[str] | None = None,
    expectations_dir: Path | str | None = None,
    build_docs: bool = True,
    dbt_dir: Path | None = None,
) -> ValidationResult:
    """Run the table's suites (or `suites`) against PostgreSQL; never raises for data problems.

    A suite that cannot run (missing relation, bad suite file) is a failed SuiteOutcome
    with `error` set. SuiteConfigError is raised only when a configured suite file is
    missing or malformed, since that is a configuration mistake, not a data problem.
    """
    log = log or (lambda line: None)
    cfg = settings.table(table) if isinstance(table, str) else table
    dbt_dir = dbt_dir or settings.dbt_project_dir
    names = list(suites if suites is not None else suite_names(cfg, dbt_dir))
    started = time.monotonic()
    now = datetime.now(timezone.utc)
    out_dir = Path(settings.data_dir) / "validation"
    docs_dir = out_dir / "data_docs"
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ValidationResult(table=cfg.name, success=True, started_at=now.isoformat(), elapsed=0.0)
    if not names:
        log(f"validate {cfg.name}: not covered (no suite configured)")

    files = {name: _suite_data(name, cfg, expectations_dir, dbt_dir) for name in names}
    context: EphemeralDataContext | None = None
    datasource: PostgresDatasource | None = None
    try:
        conn = psycopg2.connect(**settings.pg_dsn())
    except psycopg2.Error as exc:
        message = _redact(f"cannot connect to PostgreSQL: {str(exc).strip()}", settings)
        log(f"validate {cfg.name}: {message}")
        for name in names:
            layer = files[name]["layer"]
            schema, relation = layer_relation(settings, cfg, layer)
            result.suites.append(
                SuiteOutcome(name=name, layer=layer, relation=f"{schema}.{relation}", success=False, error=message)
            )
        result.success = False
        result.elapsed = time.monotonic() - started
        return result
    conn.autocommit = True
    pending: dict[str, tuple[ValidationDefinition, SuiteOutcome]] = {}
    try:
        if names:
            import great_expectations as gx  # heavy: only when there are suites to run

            context = _new_context(docs_dir)
            datasource = context.data_sources.add_postgres(
                name="analytics", connection_string=_connection_string(settings)
            )
        for name in names:
            data = files[name]
            layer = data["layer"]
            schema, relation = layer_relation(settings, cfg, layer)
            outcome = SuiteOutcome(name=name, layer=layer, relation=f"{schema}.{relation}", success=False)
            result.suites.append(outcome)
            log(f"validate {name}: {schema}.{relation}")
            with conn.cursor() as cur:
                cur.execute("select to_regclass(%s)", (_quote(conn, schema, relation),))
                exists = one_row(cur)[0] is not None
            if not exists:
                outcome.error = f"relation {schema}.{relation} does not exist (run the transform first)"
                log(f"validate {name}: {outcome.error}")
                continue
            rendered = render_suite(data, settings, cfg, conn, now)
            assert context is not None and datasource is not None  # made above, as names is not empty
            try:
                suite = context.suites.add(_build_suite(name, rendered))
                with warnings.catch_warnings():  # schema_name is deprecated in GX 1.24 but still the way
                    warnings.simplefilter("ignore", DeprecationWarning)  # to reach several schemas
                    asset = datasource.add_table_asset(
                        name=f"{name}_{relation}", table_name=relation, schema_name=schema
                    )
                batch = asset.add_batch_definition_whole_table("whole_table")
                vd = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
            except SuiteConfigError:
                raise
            except Exception as exc:
                outcome.error = _redact(f"{type(exc).__name__}: {exc}", settings)
                log(f"validate {name}: could not run: {outcome.error}")
                continue
            pending[name] = (vd, outcome)

        if pending:
            # One checkpoint: every suite validated once, Data Docs built from the same results.
            assert context is not None  # pending holds suites, so the context was made
            actions: list[ValidationAction] = (
                [gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if build_docs else []
            )
            checkpoint = context.checkpoints.add(
                gx.Checkpoint(
                    name=f"{cfg.name}_validation",
                    validation_definitions=[vd for vd, _ in pending.values()],
                    actions=actions,
                    result_format="SUMMARY",
                )
            )
            try:
                run = checkpoint.run()
            except Exception as exc:  # the database refused or GX broke: report, do not crash
                message = _redact(f"{type(exc).__name__}: {exc}", settings)
                log(f"validate {cfg.name}: could not run: {message}")
                for _, outcome in pending.values():
                    outcome.error = message
            else:
                by_suite = {r.suite_name: r for r in run.run_results.values()}
                (out_dir / "gx").mkdir(exist_ok=True)
                for name, (_, outcome) in pending.items():
                    raw = by_suite[name].to_json_dict()  # type: ignore[no-untyped-call]  # GX leaves it unannotated
                    outcome.gx_success = bool(raw.get("success"))
                    outcome.expectations = [_outcome(r) for r in raw.get("results", [])]
                    outcome.success = not outcome.failed and not any(e.exception for e in outcome.expectations)
                    for e in outcome.expectations:
                        mark = "ok" if e.success else ("FAIL" if e.severity == "error" else "WARN")
                        col = f"({e.column})" if e.column else ""
                        log(f"  [{mark}] {name}: {e.type}{col}: observed {e.observed_value}")
                    log(
                        f"validate {name}: {'passed' if outcome.success else 'FAILED'}"
                        f" ({len(outcome.failed)} failed, {len(outcome.warnings)} warnings)"
                    )
                    (out_dir / "gx" / f"{name}.json").write_text(
                        _redact(json.dumps(raw, indent=2, default=str), settings)
                    )
                if build_docs and (docs_dir / "index.html").exists():
                    result.data_docs_path = str(docs_dir / "index.html")
    finally:
        conn.close()

    result.success = all(s.success for s in result.suites)
    result.elapsed = time.monotonic() - started
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    payload = _redact(json.dumps(result.as_dict(), indent=2, default=str), settings)
    path = out_dir / f"{cfg.name}-{stamp}.json"
    path.write_text(payload)
    (out_dir / f"{cfg.name}-latest.json").write_text(payload)
    result.results_path = str(path)
    counts = result.counts
    log(
        f"validate {cfg.name}: {result.verdict} — {counts['passed']}/{counts['expectations']}"
        f" expectations passed, {counts['failed']} failed, {counts['warnings']} warnings ({result.elapsed:.1f}s)"
    )
    return result
