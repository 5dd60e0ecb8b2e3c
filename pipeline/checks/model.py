"""The one result type of every check: `--check`, the Troubleshoot panels, the Quality and
Connector views and the BI staleness diagnosis all report `Check`s.

A rule (pipeline/checks/rules.py) judges what a probe (pipeline/checks/probes.py) read and
returns a `Verdict`; the caller names it and files it under a category.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

STATUSES = ("pass", "warn", "fail", "skip")
# The Troubleshoot panels colour by severity: red for an error, yellow for a warning.
_SEVERITY = {"pass": "info", "warn": "warning", "fail": "error", "skip": "skipped"}


class Verdict(NamedTuple):
    status: str
    evidence: str
    fix: str = ""


@dataclass
class Check:
    name: str
    status: str  # pass | warn | fail | skip (could not run: an earlier check failed)
    evidence: str
    fix: str = ""  # what to do about it; empty once it passes
    category: str = ""
    service: str | None = None  # set on service checks: a failure there means "unreachable"
    duration: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:  # a bool here is a caller of the old (name, ok, ...) form
            raise ValueError(f"check {self.name!r}: status {self.status!r} is not one of {', '.join(STATUSES)}")
        if self.status == "pass":
            self.fix = ""

    @property
    def ok(self) -> bool | None:
        """True when it passed, None when it could not run."""
        return True if self.status == "pass" else None if self.status == "skip" else False

    @property
    def severity(self) -> str:
        return _SEVERITY[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def skipped(name: str, reason: str, category: str = "") -> Check:
    return Check(name, "skip", f"not checked: {reason}", category=category)


def judged(name: str, verdict: Verdict, category: str = "", service: str | None = None) -> Check:
    return Check(name, verdict.status, verdict.evidence, verdict.fix, category, service)


def measure(name: str, category: str, body: Callable[[], Verdict], service: str | None = None) -> Check:
    """Run a probe and its rule; a check that cannot run is a failed check, with the reason."""
    started = time.monotonic()
    try:
        verdict = body()
    except Exception as exc:
        verdict = Verdict("fail", f"{type(exc).__name__}: {first_line(exc) if str(exc).strip() else ''}")
    check = judged(name, verdict, category, service)
    check.duration = time.monotonic() - started
    return check
