"""The transform step's API: configurable schemas, failing dbt tests, --debug logging, errors."""

from __future__ import annotations

import pytest

from pipeline.steps.transform import DbtProject, write_profile
from tests.support.dbt import event_factory, fresh_settings, load_events, query

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def custom(tmp_path_factory):
    settings = fresh_settings("bi_dbt_transform", tmp_path_factory.mktemp("data"))
    settings.file.staging_schema = "stg_custom"
    settings.file.marts_schema = "mart_custom"
    ev = event_factory()
    src = ev.sqlserver_source("00000001:00000001:0003", "00000001:00000001:0002", 1, 1700000000000)
    same_guid = "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"
    records = [
        ev.record(i, {"ID": pid}, ev.env("c", None, ev.product_row(pid, NetUID=same_guid), src))
        for i, pid in enumerate((1, 2))
    ]
    load_events(settings, "product", records)
    return settings


def test_schema_names_come_from_settings(custom):
    lines: list[str] = []
    result = DbtProject(custom, log=lines.append).run("base_product stg_product dim_product")
    assert result.success, result.error
    assert result.counts == {"success": 3, "total": 3}
    schemas = {
        r["table_schema"]
        for r in query(
            custom,
            """select table_schema from information_schema.tables
                                                          where table_name in ('base_product', 'stg_product', 'dim_product')""",
        )
    }
    assert schemas == {"stg_custom", "mart_custom"}
    assert not any(line.startswith("DEBUG") or "Acquiring new postgres connection" in line for line in lines)


def test_failing_dbt_test_is_reported(custom):
    result = DbtProject(custom).test("dim_product")
    assert not result.success
    failed = {n.name: n for n in result.failed}
    assert "unique_dim_product_net_uid" in failed
    assert failed["unique_dim_product_net_uid"].failures == 1
    assert result.counts["fail"] == 1 and result.counts["pass"] >= 10


def test_debug_logging_streams_debug_lines(custom):
    lines: list[str] = []
    result = DbtProject(custom, log=lines.append, debug=True).run("stg_product")
    assert result.success
    assert any("Acquiring new postgres connection" in line for line in lines)
    assert "--debug" in result.args


def test_profile_holds_no_password(custom):
    directory = write_profile(custom)
    text = (directory / "profiles.yml").read_text()
    assert custom.pg_password not in text and "env_var" in text
    assert oct((directory / "profiles.yml").stat().st_mode & 0o777) == "0o600"


def test_connection_failure_is_a_result_not_an_exception(custom, tmp_path):
    broken = custom.model_copy(update={"pg_password": "wrong-password-123", "data_dir": tmp_path})
    lines: list[str] = []
    result = DbtProject(broken, log=lines.append).run("stg_product")
    assert not result.success
    assert "wrong-password-123" not in result.output and "wrong-password-123" not in (result.error or "")
    debug = DbtProject(broken).debug()
    assert not debug.success


def test_dbt_debug_in_a_child_process_reports_like_in_process(custom):
    """The TUI's dbt diagnosis runs `dbt debug` in its own process (dbt would hold the UI's GIL)."""
    from pipeline.checks.diagnose import diagnose_dbt
    from pipeline.steps.transform import debug_in_child

    result = debug_in_child(custom)
    assert result.success, result.error or result.output[-2000:]
    assert "All checks passed" in result.output
    checks = {c.name: c for c in diagnose_dbt(custom)}
    assert checks["dbt debug"].ok and "All checks passed" in checks["dbt debug"].evidence

    wrong = debug_in_child(custom.model_copy(update={"pg_password": "not-the-password"}))
    assert not wrong.success
    assert "not-the-password" not in (wrong.output or "") + (wrong.error or "")


def test_dbt_run_in_a_child_process_streams_its_log(custom):
    """The TUI's "rerun dbt with debug logging" runs dbt in its own process, line by line."""
    from pipeline.steps.transform import run_in_child

    lines: list[str] = []
    result = run_in_child(custom, "base_product stg_product", lines.append, debug=True)
    assert result.success, result.error
    assert result.node("stg_product").status == "success" and result.counts["total"] == 2
    assert any("Acquiring new postgres connection" in line for line in lines)  # debug lines, as they came
    assert custom.pg_password not in "\n".join(lines) + result.output

    wrong = run_in_child(custom.model_copy(update={"pg_password": "not-the-password"}), "stg_product", lines.append)
    assert not wrong.success and (wrong.error or wrong.failed)
    assert "not-the-password" not in "\n".join(lines) + wrong.output + (wrong.error or "")
