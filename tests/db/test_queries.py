"""The runbook's validation queries as library functions, checked against the runbook SQL verbatim."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import psycopg2
import pytest

from pipeline.steps.transform import DbtProject
from pipeline.stores import queries
from tests.support import REPO
from tests.support.dbt import fresh_settings, load_events, read_events

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    settings = fresh_settings("bi_queries", tmp_path_factory.mktemp("data"))
    conn = psycopg2.connect(**settings.pg_dsn())
    conn.autocommit = True
    table = settings.table("product")
    # Before the first transform: bronze exists, staging and marts do not.
    early = queries.layer_counts(conn, settings.file, table)
    load_events(settings, "product", read_events("product_sqlserver.jsonl"))
    load_events(settings, "product", read_events("product_postgres.jsonl"))
    assert DbtProject(settings).run("base_product stg_product dim_product").success
    yield settings, conn, table, early
    conn.close()


def test_layer_counts_before_transform(env):
    early = env[3]
    assert early == [
        {"layer": "Bronze CDC", "records": 0},
        {"layer": "Bronze (distinct keys)", "records": 0},
        {"layer": "Staging (All)", "records": None},
        {"layer": "Staging (Active)", "records": None},
        {"layer": "Marts", "records": None},
    ]


def test_layer_counts(env):
    settings, conn, table, _ = env
    rows = queries.layer_counts(conn, settings.file, table)
    assert rows == [
        {"layer": "Bronze CDC", "records": 16},
        {"layer": "Bronze (distinct keys)", "records": 8},
        {"layer": "Staging (All)", "records": 8},
        {"layer": "Staging (Active)", "records": 6},
        {"layer": "Marts", "records": 6},
    ]
    verbatim = {
        r["layer"]: r["total_records"] for r in queries.fetch(conn, queries.RUNBOOK_VALIDATION_SQL["layer_counts"])
    }
    assert verbatim == {r["layer"]: r["records"] for r in rows if r["layer"] != "Bronze (distinct keys)"}


def test_supplier_distribution(env):
    settings, conn, table, _ = env
    rows = queries.supplier_distribution(conn, settings.file, table)
    assert rows[0] == {"supplier_name": "0340", "product_count": 1, "percentage": Decimal("16.67")}
    assert {r["supplier_name"] for r in rows} == {"SEM1", "Unknown", "WBR0", "0340", "RL35", "9025"}
    assert sum(r["percentage"] for r in rows) == pytest.approx(Decimal("100.02"), abs=Decimal("0.05"))
    verbatim = queries.fetch(conn, queries.RUNBOOK_VALIDATION_SQL["supplier_distribution"])
    assert sorted(map(lambda r: tuple(r.values()), verbatim)) == sorted(map(lambda r: tuple(r.values()), rows))


def test_multilingual_coverage(env):
    settings, conn, table, _ = env
    rows = queries.multilingual_coverage(conn, settings.file, table)
    assert rows == [
        {"multilingual_status": "Complete", "product_count": 3},
        {"multilingual_status": "Partial", "product_count": 2},
        {"multilingual_status": "Missing", "product_count": 1},
    ]
    verbatim = queries.fetch(conn, queries.RUNBOOK_VALIDATION_SQL["multilingual_coverage"])
    assert sorted(map(lambda r: tuple(r.values()), verbatim)) == sorted(map(lambda r: tuple(r.values()), rows))


def test_data_freshness(env):
    settings, conn, table, _ = env
    (row,) = queries.data_freshness(conn, settings.file, table)
    assert row["latest_source_update"] == datetime(2023, 11, 14, 23, 13, 20)
    assert timedelta(0) <= row["data_age"] < timedelta(minutes=10)
    (verbatim,) = queries.fetch(conn, queries.RUNBOOK_VALIDATION_SQL["data_freshness"])
    assert verbatim["latest_source_update"] == row["latest_source_update"]
    assert verbatim["latest_ingest"] == row["latest_ingest"]


def test_queries_follow_configured_schemas(env, tmp_path):
    settings, conn, table, _ = env
    custom = settings.file.model_copy(update={"marts_schema": "nowhere"})
    rows = queries.layer_counts(conn, custom, table)
    assert rows[-1] == {"layer": "Marts", "records": None}
    with pytest.raises(psycopg2.errors.UndefinedTable):
        queries.supplier_distribution(conn, custom, table)


def test_library_steps_import_no_ui():
    """pipeline/ is a library: none of these modules imports textual, rich, tui or cli."""
    import ast

    root = REPO / "pipeline"
    for path in (root / "stores" / "queries.py", root / "steps" / "transform.py", root / "steps" / "validate.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            for name in names:
                assert name.split(".")[0] not in ("textual", "rich", "tui", "cli"), (path, name)
