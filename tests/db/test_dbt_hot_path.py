"""Issue 20: the continuous runner's hot path (`hot_path` var): marts compare only the keys
staging changed, and still equal a full rebuild after inserts, updates, deletes and a
re-creation; what only a full pass does (the calendar's columns, keys gone from bronze)
waits for it."""

from __future__ import annotations

import pytest

from pipeline.steps.transform import DbtProject
from tests.db.test_dbt_incremental import SELECT, later_changes, marts
from tests.support.dbt import event_factory, execute, fresh_settings, load_events, read_events

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    settings = fresh_settings("bi_dbt_hot_path", tmp_path_factory.mktemp("data"))
    return settings, DbtProject(settings), event_factory()


def test_hot_path_runs_equal_a_full_rebuild(env):
    settings, project, ev = env
    events = read_events("product_sqlserver.jsonl")
    load_events(settings, "product", events[:5])
    assert project.run(SELECT).success  # the first build is a full pass
    load_events(settings, "product", events[5:])
    r = project.run(SELECT, hot_path=True)
    assert r.success, r.error
    assert r.node("stg_product") is None  # views are left as they are on the hot path
    assert [row["product_id"] for row in marts(settings)] == [1001, 1003, 1004, 1006]

    load_events(settings, "product", later_changes(ev))  # delete 1001, change 1003, re-create 1002, new 1010
    r = project.run(SELECT, hot_path=True)
    assert r.success, r.error
    assert r.node("dim_product").rows_affected == 3
    hot = marts(settings)
    assert [row["product_id"] for row in hot] == [1002, 1003, 1004, 1006, 1010]
    assert project.run(SELECT, full_refresh=True).success
    assert marts(settings) == hot


def test_what_the_hot_path_leaves_to_the_full_pass(env):
    """With the manifest parsed once, as the runner keeps it: the var still comes from each run."""
    settings, _, _ = env
    project = DbtProject(settings)
    project.warm()
    execute(settings, "update marts.dim_product set days_since_created = days_since_created - 1")
    execute(settings, "delete from bronze.product_cdc where kafka_key::text like '%%1006%%'")
    assert project.run(SELECT, hot_path=True).success
    rows = marts(settings)
    assert 1006 in [row["product_id"] for row in rows]  # gone from bronze: pruned by the full pass only
    assert project.run(SELECT).success  # the full pass
    full = marts(settings)
    assert [row["product_id"] for row in full] == [1002, 1003, 1004, 1010]
    assert project.run(SELECT, full_refresh=True).success
    assert marts(settings) == full
