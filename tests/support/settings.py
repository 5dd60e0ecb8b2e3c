"""The one settings factory of the tests."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import DEFAULT_CONFIG, Settings, load_settings
from tests.support.net import free_port

# The shipped config's tables the tests run on unless they ask for others: Product and
# MeasureUnit. The three queued tables (pricing, availability, images) add ~9 s to every
# refresh of a stack test; tests/stack/test_next_tables.py carries the whole shipped config.
TEST_TABLES = ("product", "measure_unit")


def shipped_config_with(tables: Sequence[str], directory: Path) -> Path:
    """The shipped config file with only `tables`' [[tables]] entries (each with its
    sub-tables), written into `directory`: every other setting stays the shipped one."""
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    head, *entries = re.split(r"(?m)^(?=\[\[tables\]\]\s*$)", text)
    kept = [e for e in entries if re.search(r'(?m)^name = "([^"]+)"', e).group(1) in tables]
    missing = set(tables) - {re.search(r'(?m)^name = "([^"]+)"', e).group(1) for e in kept}
    assert not missing, f"the shipped config has no table {sorted(missing)}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bi-console.{'-'.join(tables)}.toml"
    path.write_text(head + "".join(kept), encoding="utf-8")
    return path


def make_settings(
    data_dir: Path | str, *, own_ports: bool = False, tables: Sequence[str] | None = TEST_TABLES, **overrides: Any
) -> Settings:
    """Settings for a test: the embedded runtime, the shipped config file (with only `tables`'
    entries; None keeps all of them), every secret generated. With `own_ports` each service
    gets a free 127.0.0.1 port, so a stack started with them never meets another one.
    `overrides` win over all of it."""
    config_file = DEFAULT_CONFIG if tables is None else shipped_config_with(tables, Path(data_dir).parent)
    values: dict[str, Any] = dict(
        data_dir=str(data_dir),
        config_file=str(config_file),
        runtime="embedded",
        pg_password=secrets.token_urlsafe(18),
        pg_reader_password=secrets.token_urlsafe(18),
        source_password=secrets.token_urlsafe(18),
        s3_access_key=secrets.token_urlsafe(12),
        s3_secret_key=secrets.token_urlsafe(18),
        superset_password=secrets.token_urlsafe(18),
        superset_secret_key=secrets.token_urlsafe(48),
    )
    if own_ports:
        pg_port = free_port()
        values.update(
            pg_port=pg_port,
            source_port=pg_port,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            s3_endpoint=f"http://127.0.0.1:{free_port()}",
            superset_url=f"http://127.0.0.1:{free_port()}",
        )
    values.update(overrides)
    return load_settings(env_file=None, **values)
