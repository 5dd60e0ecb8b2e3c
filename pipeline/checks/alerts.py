"""Alerts: a Slack-compatible JSON message to a webhook when checks fail."""

from __future__ import annotations

import socket
from typing import Any

import httpx

from pipeline.checks.model import Check


def alert_message(results: list[Check], *, source: str | None = None) -> dict[str, Any]:
    failing = [r for r in results if r.status != "pass"]
    host = source or socket.gethostname()
    title = f"bi-console: {sum(r.status == 'fail' for r in failing)} check(s) failed on {host}"
    lines = [f"{'✗' if r.status == 'fail' else '!'} {r.name}: {r.evidence}" for r in failing]
    return {
        "text": title + "\n" + "\n".join(lines),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "\n".join(f"`{r.name}` *{r.status}*: {r.evidence}" for r in failing)[:2900],
                },
            },
        ],
        "checks": [r.as_dict() for r in failing],
    }


def send_alert(url: str, results: list[Check], timeout: float = 10.0) -> int:
    """POST the message; returns the HTTP status. Raises on a network error."""
    response = httpx.post(url, json=alert_message(results), timeout=timeout)
    return response.status_code
