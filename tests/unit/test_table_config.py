"""A table's key in the configuration: `key_columns`, one column or several, and the
one-column `key_column` of earlier config files."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_file_config

TABLE = """
[[tables]]
name = "product_image"
source_table = "ProductImage"
topic = "cord.ConcordDb.dbo.ProductImage"
raw_prefix = "product_image/raw"
bronze_table = "product_image_cdc"
dbt_selector = "base_product_image"
staging_relation = "stg_product_image"
marts_relation = "stg_product_image"
"""


def _load(tmp_path, key_lines: str):
    config = tmp_path / "bi-console.toml"
    config.write_text(TABLE + key_lines)
    return load_file_config(config).tables[0]


def test_a_link_table_names_every_key_column_in_order(tmp_path):
    assert _load(tmp_path, 'key_columns = ["ProductID", "ImageID"]\n').key_columns == ["ProductID", "ImageID"]


def test_an_earlier_config_file_with_key_column_still_reads(tmp_path):
    assert _load(tmp_path, 'key_column = "MeasureUnitID"\n').key_columns == ["MeasureUnitID"]


def test_without_a_key_the_key_is_id(tmp_path):
    assert _load(tmp_path, "").key_columns == ["ID"]


@pytest.mark.parametrize(
    "key_lines, message",
    [
        ('key_column = "ID"\nkey_columns = ["ID"]\n', "key_columns or key_column, not both"),
        ('key_columns = ["ProductID", "ProductID"]\n', "names a column twice"),
        (
            'key_columns = ["ProductID", "ImageID; DROP TABLE x"]\n',
            "tables.key_columns='ImageID; DROP TABLE x' is not a plain SQL identifier",
        ),
        ("key_columns = []\n", "key_columns"),
    ],
)
def test_a_wrong_key_is_refused_naming_the_setting(tmp_path, key_lines, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _load(tmp_path, key_lines)
