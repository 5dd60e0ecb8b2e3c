"""`bi-console table add`: the files it writes, the config it keeps, what it refuses. The
command runs as the operator runs it (a process, a .env from `bi-console init`), on a copy of
the project's dbt directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline.config import DEFAULT_CONFIG, load_file_config
from pipeline.config.contracts import load_contract
from pipeline.config.operator_file import with_table_entry
from pipeline.orchestration.table_add import BASE_MODEL_TEXT
from tests.support import REPO

IMAGE_DDL = """\
CREATE TABLE dbo.ProductImage (
    ID         bigint IDENTITY(1,1) NOT NULL CONSTRAINT PK_ProductImage PRIMARY KEY,
    ProductID  bigint        NOT NULL,
    ImageUrl   nvarchar(max) NULL,  -- CDN path
    IsMain     bit           NOT NULL DEFAULT 0
);
"""
LINK_DDL = """\
CREATE TABLE dbo.ProductAvailability (
    ProductID bigint NOT NULL, StorageID int NOT NULL, Amount decimal(18,2) NULL,
    CONSTRAINT PK_ProductAvailability PRIMARY KEY (ProductID, StorageID)
);
"""


DEFAULT_TABLES = ["product", "measure_unit", "product_pricing", "product_availability", "product_image"]


@pytest.fixture
def operator(tmp_path):
    """A working directory with a .env and a copy of the dbt project."""
    shutil.copytree(REPO / "dbt", tmp_path / "dbt", ignore=shutil.ignore_patterns("target", "logs"))
    (tmp_path / "image.sql").write_text(IMAGE_DDL)
    (tmp_path / "link.sql").write_text(LINK_DDL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BI_")}
    env["PYTHONPATH"] = str(REPO)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")  # no operator file of this machine's user

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("init").returncode == 0
    return tmp_path, run


def test_from_ddl_writes_the_contract_the_models_the_source_and_the_entry(operator):
    where, run = operator
    done = run("table", "add", "product_photo", "--from-ddl", "image.sql", "--dbt-dir", "dbt")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "dbt/models/staging/base/base_product_photo.yml",
        "dbt/models/staging/base/base_product_photo.sql",
        "dbt/models/staging/stg_product_photo.sql",
        "dbt/models/sources.yml",
        "bi-console.toml",
    ]
    assert done.stderr.strip() == "table add: product_photo: 4 columns, key ID, from ConcordDb.dbo.ProductImage"
    dbt = where / "dbt" / "models" / "staging"
    assert (dbt / "base" / "base_product_photo.sql").read_text() == "{{ cdc_staging() }}\n" == BASE_MODEL_TEXT
    stg = (dbt / "stg_product_photo.sql").read_text()
    assert stg.endswith("{{ config(materialized='view') }}\n\nselect * from {{ ref('base_product_photo') }}\n")
    assert stg.startswith("{#-\n  stg_product_photo: the staging relation of ConcordDb.dbo.ProductImage")
    contract = load_contract(where / "dbt", "product_photo")
    assert contract.key_columns == ["ID"] and contract.bronze_table == "product_photo_cdc"
    assert [(c.name, c.source_type, c.nullable) for c in contract.columns] == [
        ("product_photo_id", "bigint", False),
        ("product_id", "bigint", False),
        ("image_url", "nvarchar(max)", True),
        ("is_main", "bit", False),
    ]
    sources = yaml.safe_load((where / "dbt" / "models" / "sources.yml").read_text())
    bronze = sources["sources"][0]
    assert [t["name"] for t in bronze["tables"]] == [
        "product_cdc",
        "measure_unit_cdc",
        "product_pricing_cdc",
        "product_availability_cdc",
        "product_image_cdc",
        "product_photo_cdc",
    ]
    assert bronze["tables"][-1]["columns"] == bronze["tables"][0]["columns"]  # the same bronze columns
    # The operator had no config file: it now holds the default tables and the new one.
    config = load_file_config(where / "bi-console.toml")
    assert [t.name for t in config.tables] == DEFAULT_TABLES + ["product_photo"]
    assert config.tables[0] == load_file_config(DEFAULT_CONFIG).tables[0]
    image = config.tables[-1]
    assert (image.source_table, image.key_columns, image.topic) == (
        "ProductImage",
        ["ID"],
        "cord.ConcordDb.dbo.ProductImage",
    )
    assert (image.staging_relation, image.marts_relation, image.suites) == ("stg_product_photo", None, [])
    assert image.dbt_selector == "base_product_photo stg_product_photo"
    assert (image.raw_prefix, image.bronze_table) == ("product_photo/raw", "product_photo_cdc")


def test_an_operator_file_keeps_its_text_and_comments(operator):
    where, run = operator
    mine = textwrap.dedent(
        """\
        # my settings: keep this comment
        theme = "nord"

        [[tables]]
        name = "product"  # only product here
        source_table = "Product"
        topic = "cord.ConcordDb.dbo.Product"
        raw_prefix = "product/raw"
        bronze_table = "product_cdc"
        staging_relation = "stg_product"
        marts_relation = "dim_product"

        [tables.checks]
        freshness_column = "source_timestamp\""""
    )  # no newline at the end, as an editor may leave it
    (where / "bi-console.toml").write_text(mine)
    done = run("table", "add", "product_photo", "--from-ddl", "image.sql", "--dbt-dir", "dbt")
    assert done.returncode == 0, done.stderr
    text = (where / "bi-console.toml").read_text()
    assert text.startswith(mine + "\n")
    assert "default tables" not in text  # the file had its own tables: nothing copied
    config = load_file_config(where / "bi-console.toml")
    assert config.theme == "nord" and [t.name for t in config.tables] == ["product", "product_photo"]
    assert config.tables[0].checks.freshness_column == "source_timestamp"


def test_a_table_that_exists_is_refused_naming_the_file(operator):
    where, run = operator
    assert run("table", "add", "product_photo", "--from-ddl", "image.sql", "--dbt-dir", "dbt").returncode == 0
    before = (where / "bi-console.toml").read_text()
    again = run("table", "add", "product_photo", "--from-ddl", "image.sql", "--dbt-dir", "dbt")
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == "bi-console: table add: table 'product_photo' is already configured in bi-console.toml\n"
    assert (where / "bi-console.toml").read_text() == before
    shipped = run("table", "add", "product", "--from-ddl", "image.sql", "--dbt-dir", "dbt")
    assert shipped.returncode == 2 and "table 'product' is already configured in bi-console.toml" in shipped.stderr


def test_dbt_files_that_exist_are_refused_and_nothing_is_written(operator):
    where, run = operator
    stg = where / "dbt" / "models" / "staging" / "stg_product_photo.sql"
    stg.write_text("select 1\n")
    done = run("table", "add", "product_photo", "--from-ddl", "image.sql", "--dbt-dir", "dbt")
    assert done.returncode == 2
    assert done.stderr.strip().endswith(
        f"{Path('dbt/models/staging/stg_product_photo.sql')} exists: table 'product_photo' already has dbt files; nothing written"
    )
    assert stg.read_text() == "select 1\n"
    assert not (where / "bi-console.toml").exists()
    assert not (where / "dbt" / "models" / "staging" / "base" / "base_product_photo.yml").exists()


def test_dry_run_prints_and_writes_nothing(operator):
    where, run = operator
    sources_before = (where / "dbt" / "models" / "sources.yml").read_text()
    done = run("table", "add", "product_photo", "--from-ddl", "image.sql", "--dbt-dir", "dbt", "--dry-run")
    assert done.returncode == 0, done.stderr
    headers = [line for line in done.stdout.splitlines() if line.startswith("--- ")]
    assert headers == [
        "--- would write dbt/models/staging/base/base_product_photo.yml",
        "--- would write dbt/models/staging/base/base_product_photo.sql",
        "--- would write dbt/models/staging/stg_product_photo.sql",
        "--- would append to dbt/models/sources.yml",
        "--- would write bi-console.toml",
    ]
    assert "      - name: product_photo_cdc\n" in done.stdout and 'name = "product_photo"\n' in done.stdout
    assert not (where / "bi-console.toml").exists()
    assert not (where / "dbt" / "models" / "staging" / "stg_product_photo.sql").exists()
    assert (where / "dbt" / "models" / "sources.yml").read_text() == sources_before


def test_usage_errors_exit_2_with_one_line(operator):
    where, run = operator
    cases = {
        ("table", "add", "x", "--dbt-dir", "dbt"): "give exactly one of --from-ddl FILE and --from-topic TOPIC",
        ("table", "add", "x", "--from-ddl", "image.sql", "--from-topic", "t"): "give exactly one of",
        ("table", "add", "x", "--from-ddl", "missing.sql", "--dbt-dir", "dbt"): "--from-ddl missing.sql: no such file",
        ("table", "add", "Bad-Name", "--from-ddl", "image.sql"): "table name='Bad-Name' is not a plain SQL identifier",
        ("table", "add", "Image", "--from-ddl", "image.sql"): "table name 'Image': use lower case",
    }
    for args, message in cases.items():
        done = run(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert len(done.stderr.splitlines()) == 1 and message in done.stderr, (args, done.stderr)
    assert not (where / "bi-console.toml").exists()


def test_a_link_table_is_keyed_by_both_columns(operator):
    where, run = operator
    done = run("table", "add", "product_stock", "--from-ddl", "link.sql", "--dbt-dir", "dbt")
    assert done.returncode == 0, done.stderr
    assert "product_stock: 3 columns, key ProductID, StorageID" in done.stderr
    assert 'key_columns = ["ProductID", "StorageID"]\n' in (where / "bi-console.toml").read_text()
    table = next(t for t in load_file_config(where / "bi-console.toml").tables if t.name == "product_stock")
    assert table.key_columns == ["ProductID", "StorageID"]
    assert load_contract(where / "dbt", "product_stock").key_names == ["product_id", "storage_id"]


def test_an_entry_the_config_would_refuse_is_not_written(tmp_path):
    path = tmp_path / "bi-console.toml"
    with pytest.raises(Exception, match="bi-console.toml: not valid TOML"):
        with_table_entry("theme = ", '[[tables]]\nname = "x"\n', path)
    with pytest.raises(Exception, match="bi-console.toml: the new \\[\\[tables\\]\\] entry would not load"):
        with_table_entry("", '[[tables]]\nname = "x"\n', path)  # no topic, no relations


def test_the_entry_goes_to_the_config_file_in_force(operator):
    # No ./bi-console.toml: the XDG one is the operator's file, and the entry goes there.
    where, run = operator
    xdg = where / "xdg" / "bi-console" / "bi-console.toml"
    xdg.parent.mkdir(parents=True)
    xdg.write_text('theme = "nord"\n')
    done = run("table", "add", "product_photo", "--from-ddl", "image.sql", "--dbt-dir", "dbt")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str(xdg)
    assert not (where / "bi-console.toml").exists()
    assert [t.name for t in load_file_config(xdg).tables] == DEFAULT_TABLES + ["product_photo"]
