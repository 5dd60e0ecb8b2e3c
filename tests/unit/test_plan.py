"""The refresh plan: which (step, table) entries a refresh executes, and in what order."""

from __future__ import annotations

from pathlib import Path

from pipeline.orchestration.plan import plan
from tests.support.settings import make_settings


def two_table_settings(tmp_path: Path, runtime: str = "embedded"):
    """The shipped config: two tables (product, measure_unit), so per-table steps show their split."""
    return make_settings(tmp_path / "data", runtime=runtime)


def rows(entries) -> list[tuple[str, str]]:
    return [(entry.step.name, entry.table) for entry in entries]


def test_default_plan_runs_every_step_but_bi_per_table_where_superset_is_off(tmp_path):
    settings = two_table_settings(tmp_path)
    assert [t.name for t in settings.tables] == ["product", "measure_unit"]
    assert rows(plan(settings)) == [
        ("ingest", "product"),
        ("ingest", "measure_unit"),
        ("load", "product"),
        ("load", "measure_unit"),
        ("transform", "all"),
        ("test", "all"),
        ("validate", "product"),
        ("validate", "measure_unit"),
    ]


def test_default_plan_ends_with_bi_where_superset_runs(tmp_path):
    settings = two_table_settings(tmp_path, runtime="compose")
    assert rows(plan(settings))[-3:] == [("validate", "product"), ("validate", "measure_unit"), ("bi", "all")]
    embedded = two_table_settings(tmp_path / "embedded")
    (Path(embedded.data_dir) / "run").mkdir(parents=True)
    (Path(embedded.data_dir) / "run" / "superset.enabled").touch()
    assert rows(plan(embedded))[-1] == ("bi", "all")


def test_single_step_plan(tmp_path):
    settings = two_table_settings(tmp_path)
    assert rows(plan(settings, ["load"])) == [("load", "product"), ("load", "measure_unit")]
    assert rows(plan(settings, ["transform"])) == [("transform", "all")]
    assert rows(plan(settings, ["bi"])) == [("bi", "all")]


def test_named_steps_run_in_pipeline_order_for_the_selected_tables(tmp_path):
    settings = two_table_settings(tmp_path)
    assert rows(plan(settings, ["validate", "ingest", "test"], ["measure_unit"])) == [
        ("ingest", "measure_unit"),
        ("test", "all"),
        ("validate", "measure_unit"),
    ]
    assert rows(plan(settings, None, ["measure_unit", "product"])) == [
        ("ingest", "measure_unit"),
        ("ingest", "product"),
        ("load", "measure_unit"),
        ("load", "product"),
        ("transform", "all"),
        ("test", "all"),
        ("validate", "measure_unit"),
        ("validate", "product"),
    ]


def test_full_and_incremental_runs_share_one_plan(tmp_path):
    """The mode changes what a step does (full reload, dbt --full-refresh), not which steps run."""
    from pipeline.orchestration.plan import STEP_BY_NAME, StepContext

    settings = two_table_settings(tmp_path)
    assert [step for step, _ in rows(plan(settings))] == [
        "ingest",
        "ingest",
        "load",
        "load",
        "transform",
        "test",
        "validate",
        "validate",
    ]
    assert [(s.name, s.per_table) for s in STEP_BY_NAME.values()] == [
        ("ingest", True),
        ("load", True),
        ("transform", False),
        ("test", False),
        ("validate", True),
        ("bi", False),
    ]
    # A table without suites or a source contract validates as "no suites" with no database:
    # the body runs from the context.
    lines = []
    unsuited = settings.table("measure_unit").model_copy(update={"suites": [], "name": "uncontracted"})
    context = StepContext(settings, settings.tables, unsuited, set(), lines.append)
    assert STEP_BY_NAME["validate"].run(context) == {"suites": 0}
    assert lines == ["validate: no suites configured for uncontracted and no source contract"]
