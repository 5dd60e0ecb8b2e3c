"""`bi-console --check`: the checks for people (a table), machines (`--json`) and CI
(`--junit`). Data on stdout, diagnostics on stderr.

Exit codes: 0 all passed (warnings allowed unless --strict), 1 a check failed,
2 usage or configuration error, 3 a service is unreachable.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from pipeline.checks.model import Check
from pipeline.checks.monitoring import run_checks
from pipeline.config import ConfigError, Settings
from pipeline.config.security import redact

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def junit_xml(results: list[Check], strict: bool) -> bytes:
    failures = [r for r in results if r.status == "fail" or (strict and r.status == "warn")]
    suite = ET.Element(
        "testsuite",
        name="bi-console-check",
        tests=str(len(results)),
        failures=str(len(failures)),
        errors="0",
        time=f"{sum(r.duration for r in results):.3f}",
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    for r in results:
        case = ET.SubElement(
            suite, "testcase", classname=f"bi-console.{r.category}", name=r.name, time=f"{r.duration:.3f}"
        )
        if r in failures:
            ET.SubElement(case, "failure", message=r.evidence[:500], type=r.status).text = r.evidence
        elif r.status == "warn":
            ET.SubElement(case, "system-out").text = f"warning: {r.evidence}"
    return ET.tostring(ET.ElementTree(suite).getroot(), encoding="utf-8", xml_declaration=True)


def table(results: list[Check]) -> str:
    width = max((len(r.name) for r in results), default=10)
    mark = {"pass": "✓", "warn": "!", "fail": "✗", "skip": "·"}
    lines = [f"  {'CHECK':{width}}  STATUS  EVIDENCE"]
    lines += [f"{mark[r.status]} {r.name:{width}}  {r.status:6}  {r.evidence}" for r in results]
    return "\n".join(lines)


def exit_code(results: list[Check], strict: bool) -> int:
    if any(r.service and r.status == "fail" for r in results):
        return EXIT_UNREACHABLE
    if any(r.status == "fail" or (strict and r.status == "warn") for r in results):
        return EXIT_FAILED
    return EXIT_OK


def run_check_command(settings: Settings, *, as_json: bool, junit: str | None, refresh: str, strict: bool) -> int:
    secrets = settings.secret_values()

    def err(line: str) -> None:
        print(redact(line, secrets), file=sys.stderr, flush=True)

    refresh_result, refresh_unreachable = None, False
    if refresh != "none":
        from pipeline.orchestration.refresh import RefreshLocked, run_refresh

        try:
            run = run_refresh(settings, mode=refresh, steps=["ingest", "load", "transform"])
        except (RefreshLocked, ConfigError) as exc:
            err(f"bi-console: {exc}")
            return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
        refresh_result = Check(
            "refresh",
            "pass" if run.outcome == "ok" else "fail",
            run.error or f"{refresh} refresh in {run.duration:.1f}s",
            category="refresh",
            duration=run.duration,
        )
        if run.outcome != "ok":
            err(f"bi-console: refresh failed at {run.failed_step}: {run.error}")
        refresh_unreachable = run.unreachable
    results = run_checks(settings, log=lambda line: err(f"  {line}"))
    if refresh_result:
        results.insert(0, refresh_result)
    for r in results:
        r.evidence = redact(r.evidence, secrets)
    code = EXIT_UNREACHABLE if refresh_unreachable else exit_code(results, strict)
    if as_json:
        print(json.dumps({"exit_code": code, "strict": strict, "checks": [r.as_dict() for r in results]}, indent=2))
    else:
        print(table(results))
    if junit:
        with open(junit, "wb") as fh:
            fh.write(junit_xml(results, strict))
    for r in results:  # last on stderr, one line each: the probe's evidence names the setting to fix
        if r.service and r.status == "fail":
            err(f"bi-console: {r.service} unreachable: {r.evidence}")
    if code != EXIT_OK and settings.alert_webhook_url:
        from pipeline.checks.alerts import send_alert

        try:
            status = send_alert(settings.alert_webhook_url, results)
            err(f"alert sent to the webhook (HTTP {status})")
        except Exception as exc:
            err(f"bi-console: the alert webhook could not be reached: {type(exc).__name__}")
    return code
