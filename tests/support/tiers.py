"""A tier's marker from its directory: CI and the README select tiers with `-m`, and a
test put in stack/ must not escape `-m "not stack"` by a forgotten mark."""

from __future__ import annotations

from pathlib import Path

import pytest


def mark_tier(items: list[pytest.Item], conftest_file: str, marker: pytest.MarkDecorator) -> None:
    # The hook of every conftest sees the whole session's items, so each marks only its own.
    directory = Path(conftest_file).resolve().parent
    for item in items:
        if directory in item.path.resolve().parents:
            item.add_marker(marker)
