"""The Debezium engine's replication slot is named by BI_CDC_SLOT_NAME: slots are per server,
so a second pipeline capturing from the same PostgreSQL server needs a name of its own."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError
from pipeline.runtime.cdc_engine import debezium_properties
from tests.support.settings import make_settings


def test_the_slot_keeps_its_released_name_by_default(tmp_path):
    assert debezium_properties(make_settings(tmp_path), tmp_path)["slot.name"] == "bi_console_cdc"


def test_the_slot_is_named_by_the_setting(tmp_path):
    settings = make_settings(tmp_path, cdc_slot_name="bi_console_cdc_second")
    assert debezium_properties(settings, tmp_path)["slot.name"] == "bi_console_cdc_second"


def test_a_slot_name_that_is_not_an_identifier_is_refused_naming_the_variable(tmp_path):
    with pytest.raises(ConfigError, match=r"BI_CDC_SLOT_NAME='x; DROP' is not a plain SQL identifier"):
        make_settings(tmp_path, cdc_slot_name="x; DROP")
