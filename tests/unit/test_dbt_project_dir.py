"""BI_DBT_PROJECT_DIR: the dbt project transform and test run and the source contracts are
read from; unset, the repository's dbt/ (bench/tables.py points a stack at a copy)."""

from __future__ import annotations

import inspect
import shutil

import pytest

from pipeline.config import DEFAULT_DBT_DIR, load_settings
from pipeline.orchestration.table_add import apply_table_add, plan_table_add
from pipeline.steps.contract_suite import suite_names
from pipeline.steps.transform import DbtProject
from pipeline.steps.validate import SuiteConfigError, _suite_data
from tests.support import REPO
from tests.support.settings import make_settings

PRODUCT_DDL = REPO / "pipeline" / "demo" / "contract" / "concord_product.sqlserver.sql"


def test_unset_it_is_the_repositorys_dbt_project(tmp_path):
    settings = make_settings(tmp_path / "data")
    assert settings.dbt_project_dir == REPO / "dbt"
    assert DbtProject(settings).project_dir == REPO / "dbt"


def test_a_run_pointed_at_a_copy_adds_reads_and_runs_the_copy(tmp_path, monkeypatch):
    copy = tmp_path / "dbt-copy"
    shutil.copytree(REPO / "dbt", copy, ignore=shutil.ignore_patterns("target", "logs"))
    config_file = tmp_path / "bi-console.toml"
    config_file.write_text("# the operator's file\n")
    for name, value in make_settings(tmp_path / "data", config_file=str(config_file)).to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BI_DBT_PROJECT_DIR", str(copy))
    settings = load_settings(env_file=None)  # as a child process reads it
    assert settings.dbt_project_dir == copy and DbtProject(settings).project_dir == copy

    ddl = tmp_path / "T01.sql"
    ddl.write_text(PRODUCT_DDL.read_text().replace("CREATE TABLE dbo.Product", "CREATE TABLE dbo.T01", 1))
    apply_table_add(plan_table_add(settings, "t01", ddl_file=ddl))
    assert (copy / "models" / "staging" / "base" / "base_t01.yml").is_file()
    assert not (REPO / "dbt" / "models" / "staging" / "base" / "base_t01.yml").exists()

    table = load_settings(env_file=None).table("t01")
    assert suite_names(table, settings.dbt_project_dir) == ["t01_staging_contract"]
    assert suite_names(table, DEFAULT_DBT_DIR) == []  # the repository's project has no contract of t01


def test_the_contract_suite_is_made_from_the_project_it_is_given_never_the_default_one(tmp_path):
    assert inspect.signature(_suite_data).parameters["dbt_dir"].default is inspect.Parameter.empty
    table = make_settings(tmp_path / "data").table("measure_unit")
    name = "measure_unit_staging_contract"
    expectations = tmp_path / "expectations"  # no suite files: the contract's suite is made
    expectations.mkdir()
    assert _suite_data(name, table, expectations, REPO / "dbt")["layer"] == "staging"
    # A project without the table's contract is an error naming that project, not a quiet
    # fall back to the repository's dbt/ (which has the contract).
    with pytest.raises(SuiteConfigError, match=str(tmp_path / "empty-project")):
        _suite_data(name, table, expectations, tmp_path / "empty-project")
