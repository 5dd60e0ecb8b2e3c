"""The operator's config file (`bi-console.toml`) as text: where it is, and a `[[tables]]`
entry added to it without touching what is already there (comments included).

A top-level key of the operator's file replaces the default's (load_file_config), so a file
that has no `tables` yet gets the default tables copied in before the new one: adding a
table never drops the ones the defaults configured.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.config import DEFAULT_CONFIG, ConfigError, FileConfig, Settings, config_file_candidates


def operator_config_file(settings: Settings) -> Path:
    """The file load_file_config reads (BI_CONFIG_FILE, else ./bi-console.toml, else the XDG
    one), or ./bi-console.toml when there is none yet."""
    candidates = config_file_candidates(settings.config_file)
    return next((c for c in candidates if c.is_file()), candidates[0])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string


def render_table_entry(fields: dict[str, Any], comment: str) -> str:
    lines = [f"# {line}" for line in comment.splitlines()]
    lines.append("[[tables]]")
    lines += [f"{key} = {_toml_value(value)}" for key, value in fields.items() if value is not None]
    return "\n".join(lines) + "\n"


def _default_tables_text() -> str:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    start = text.index("[[tables]]")
    return (
        "# The default tables (pipeline/config/default_config.toml), copied here by `bi-console table add`:\n"
        "# a `tables` key in this file replaces the defaults' list, so it holds every table.\n" + text[start:]
    )


def with_table_entry(current: str | None, entry: str, path: Path) -> tuple[str, str]:
    """(the file's new text, the text added to it). Refuses a file that is not valid TOML or a
    result the config would refuse, naming the file; the caller checks for a duplicate name."""
    text = current or ""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}); fix it before adding a table") from None
    added = ""
    if "tables" not in data:
        added += ("\n" if text.strip() else "") + _default_tables_text()
    added += "\n" + entry
    if text and not text.endswith("\n"):
        added = "\n" + added
    new_text = text + added
    merged = tomllib.loads(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    try:
        merged.update(tomllib.loads(new_text))
        FileConfig.model_validate(merged)
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigError(
            f"{path}: the new [[tables]] entry would not load ({' '.join(str(exc).split())[:300]})"
        ) from None
    return new_text, added
