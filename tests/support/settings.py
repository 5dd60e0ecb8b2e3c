"""The one settings factory of the tests."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from pipeline.config import DEFAULT_CONFIG, Settings, load_settings
from tests.support.net import free_port


def make_settings(data_dir: Path | str, *, own_ports: bool = False, **overrides: Any) -> Settings:
    """Settings for a test: the embedded runtime, the shipped config file, every secret
    generated. With `own_ports` each service gets a free 127.0.0.1 port, so a stack started
    with them never meets another one. `overrides` win over all of it."""
    values: dict[str, Any] = dict(
        data_dir=str(data_dir),
        config_file=str(DEFAULT_CONFIG),
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
