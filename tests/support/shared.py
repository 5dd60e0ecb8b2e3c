"""The team's shared folder (runbook, data contract), which some tests compare with.

It sits beside the checkout (`../shared`); BI_SHARED_DIR names another place, and a clone
made elsewhere on this machine (a CI rehearsal in /tmp) finds it at `/work/shared`. A test
that needs it fails naming every place looked at, never skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import REPO


def shared_file(relative: str) -> Path:
    places = [Path(os.environ["BI_SHARED_DIR"])] if os.environ.get("BI_SHARED_DIR") else []
    places += [REPO.parent / "shared", Path("/work/shared")]
    for place in places:
        if (place / relative).is_file():
            return place / relative
    pytest.fail(f"shared/{relative} not found in {', '.join(map(str, places))}: set BI_SHARED_DIR to the shared folder")
