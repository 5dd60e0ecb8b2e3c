"""The refresh's steps, each one object with its name, whether it runs once per table, and
its body; and the plan: the ordered (step, table) entries a refresh executes. The refresh,
the TUI's step table, the benchmark and the Prefect flow all read these, so the order and
the per-table split are written once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Settings, TableConfig
from pipeline.steps.bi import SupersetStopped, run_bi_refresh
from pipeline.steps.contract_suite import suite_names
from pipeline.steps.ingest import EpochReset, ingest
from pipeline.steps.load import load
from pipeline.steps.transform import DbtProject, DbtResult
from pipeline.steps.validate import run_validation
from pipeline.stores.db import connect

StepResult = dict[str, Any]  # the counts a step reports


@dataclass
class StepContext:
    """What a step body needs of the run: `table` is None for a step that runs once for all."""

    settings: Settings
    tables: list[TableConfig]
    table: TableConfig | None
    full_tables: set[str]
    log: Callable[[str], None]
    notice: Callable[[str], None] = lambda line: None
    cancel: threading.Event = field(default_factory=threading.Event)
    details: dict[str, Any] = field(default_factory=dict)  # the run's details, filled by the steps

    @property
    def selector(self) -> str:
        return " ".join(t.dbt_selector for t in self.tables)


@dataclass(frozen=True)
class Step:
    name: str
    per_table: bool
    run: Callable[[StepContext], StepResult]


@dataclass(frozen=True)
class PlanEntry:
    step: Step
    table: str  # a table's name, or "all" for a step that runs once


def _database_answers(settings: Settings) -> None:
    """dbt and GX report a refused password as their own error text (exit 1); one
    connection first makes it the one line naming BI_PG_PASSWORD (exit 3)."""
    connect(settings).close()


def _per_table(ctx: StepContext) -> TableConfig:
    """The table of a per-table step's run: the plan gives each of those entries one."""
    if ctx.table is None:
        raise RuntimeError("a per-table step ran without its table")
    return ctx.table


def _ingest(ctx: StepContext) -> StepResult:
    table = _per_table(ctx)

    def on_reset(reset: EpochReset) -> None:
        # The run goes on in the new epoch: the earlier epochs stay in the raw zone and
        # bronze, so an incremental load and transform are enough.
        ctx.notice(reset.notice())
        ctx.details.setdefault("topic_resets", []).append(reset.as_detail())

    full = table.name in ctx.full_tables
    return ingest(ctx.settings, table, full=full, log=ctx.log, cancel=ctx.cancel, on_reset=on_reset).counts()


def _load(ctx: StepContext) -> StepResult:
    table = _per_table(ctx)
    return load(ctx.settings, table, full=table.name in ctx.full_tables, log=ctx.log, cancel=ctx.cancel).counts()


class TablesFailed(Exception):
    """Some tables' models failed and the others built: the run goes on for the others."""

    def __init__(self, tables: set[str], message: str):
        super().__init__(message)
        self.tables = tables


def tables_of_failed_models(tables: list[TableConfig], result: DbtResult) -> set[str] | None:
    """The tables whose models failed or were skipped for an upstream failure; None when a
    failure is no table's (dbt did not run, or a model outside every table's selector)."""
    if result.error and not result.nodes:
        return None
    owner = {name.strip("+@"): t.name for t in tables for name in t.dbt_selector.split()}
    failed: set[str] = set()
    for node in result.nodes:
        if (
            node.resource_type == "model"
            and not node.ok
            or (node.resource_type == "model" and node.status == "skipped")
        ):
            if node.name not in owner:
                return None
            failed.add(owner[node.name])
    return failed or None


def _transform(ctx: StepContext) -> StepResult:
    _database_answers(ctx.settings)
    full = bool(ctx.full_tables)
    result = DbtProject(ctx.settings, ctx.log).run(ctx.selector, full_refresh=full)
    if not result.success:
        failed = ", ".join(f"{n.name}: {(n.message or '').strip()[:300]}" for n in result.failed)
        tables = tables_of_failed_models(ctx.tables, result)
        if tables and len(tables) < len(ctx.tables):
            built = ", ".join(t.name for t in ctx.tables if t.name not in tables)
            raise TablesFailed(
                tables,
                f"dbt run failed for {', '.join(sorted(tables))}: {failed}; the models of {built} built, "
                "and their steps go on",
            )
        raise RuntimeError(f"dbt run failed: {failed or result.error}")
    return {**result.counts, "full_refresh": full}


def _test(ctx: StepContext) -> StepResult:
    _database_answers(ctx.settings)
    result = DbtProject(ctx.settings, ctx.log).test(ctx.selector, within_selection=True)
    if not result.success:
        failed = ", ".join(f"{n.name} ({n.failures} rows)" for n in result.failed)
        raise RuntimeError(f"dbt tests failed: {failed or result.error}")
    return result.counts


def _validate(ctx: StepContext) -> StepResult:
    table, log = _per_table(ctx), ctx.log
    if not suite_names(table, ctx.settings.dbt_project_dir):
        log(f"validate: no suites configured for {table.name} and no source contract")
        return {"suites": 0}
    _database_answers(ctx.settings)
    result = run_validation(ctx.settings, table, log)
    ctx.details.setdefault("validation", {})[table.name] = result.as_dict()
    for suite in result.suites:
        for warning in suite.warnings:
            log(
                f"validate: WARNING {suite.name}: {warning.type} {warning.column or ''} observed {warning.observed_value}"
            )
    if not result.success:
        failed = [
            f"{s.name}: {s.error or ', '.join(e.summary for e in s.failed)}" for s in result.suites if not s.success
        ]
        raise RuntimeError(f"Great Expectations suites failed: {'; '.join(failed)}")
    return result.counts


def _bi(ctx: StepContext) -> StepResult:
    if not superset_enabled(ctx.settings):  # named with --steps bi on a stack without Superset
        raise SupersetStopped(
            "superset stopped (not enabled in this stack; `bi-console stack up --with superset` enables it)"
        )
    return run_bi_refresh(ctx.settings, ctx.log)


STEPS: tuple[Step, ...] = (
    Step("ingest", per_table=True, run=_ingest),
    Step("load", per_table=True, run=_load),
    Step("transform", per_table=False, run=_transform),
    Step("test", per_table=False, run=_test),
    Step("validate", per_table=True, run=_validate),
    Step("bi", per_table=False, run=_bi),
)
STEP_BY_NAME: dict[str, Step] = {step.name: step for step in STEPS}
StepNames = tuple(STEP_BY_NAME)
DEFAULT_STEPS = ("ingest", "load", "transform", "test", "validate")


def superset_enabled(settings: Settings) -> bool:
    """Every compose stack has Superset (its production and stand-in files both define it); the
    embedded one only once `stack up --with superset` left its marker. Read from the settings and
    the data directory, not asked of the runtime: the TUI plans on its UI thread, and asking the
    compose runtime is a Docker call."""
    return settings.runtime == "compose" or (Path(settings.data_dir) / "run" / "superset.enabled").exists()


def wanted_steps(settings: Settings, steps: list[str] | None = None) -> list[str]:
    """The named steps, or by default every step but bi, which runs only where Superset does."""
    return list(steps) if steps else [*DEFAULT_STEPS, *(["bi"] if superset_enabled(settings) else [])]


def plan(settings: Settings, steps: list[str] | None = None, tables: list[str] | None = None) -> list[PlanEntry]:
    """The (step, table) entries a refresh executes, in order: the steps in pipeline order
    whatever order they were named in, a per-table step once for each selected table."""
    wanted = wanted_steps(settings, steps)
    names = list(tables) if tables else [t.name for t in settings.tables]
    entries: list[PlanEntry] = []
    for step in STEPS:
        if step.name not in wanted:
            continue
        if step.per_table:
            entries += [PlanEntry(step, name) for name in names]
        else:
            entries.append(PlanEntry(step, "all"))
    return entries
