"""Superset's REST API as a client: login, CSRF, JSON calls, one-line errors, Rison.

Superset reaches PostgreSQL with the read-only role (BI_PG_READER_*), never with the
pipeline's owner role; the client itself only speaks HTTP.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from pipeline.config import Settings
from pipeline.stores.db import ServiceUnreachable

LOGIN_TIMEOUT = 30.0
DATA_TIMEOUT = 180.0


class SupersetApiError(Exception):
    """A Superset API call failed. The message is one line: method, URL, status, reason."""

    def __init__(self, message: str, *, status: int | None = None, url: str = ""):
        super().__init__(message)
        self.status = status
        self.url = url


class SupersetUnreachable(SupersetApiError, ServiceUnreachable):
    """Superset did not answer at all (refused, timed out): the refresh marks it unreachable."""


# --------------------------------------------------------------------------- rison


def rison(value: Any) -> str:
    """Encode a value as Rison, the query-string notation of Superset's list endpoints."""
    if value is None:
        return "!n"
    if value is True:
        return "!t"
    if value is False:
        return "!f"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("!", "!!").replace("'", "!'") + "'"
    if isinstance(value, dict):
        return "(" + ",".join(f"{k}:{rison(v)}" for k, v in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        return "!(" + ",".join(rison(v) for v in value) + ")"
    raise TypeError(f"cannot encode {type(value).__name__} as rison")


# --------------------------------------------------------------------------- client


class SupersetClient:
    """Bearer token from /security/login plus the CSRF token and its session cookie,
    which Superset requires on every write when WTF_CSRF_ENABLED is on."""

    def __init__(self, base_url: str, username: str, password: str, *, timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, follow_redirects=False)
        self._csrf: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SupersetClient:
        if not settings.superset_password:
            raise SupersetApiError("BI_SUPERSET_PASSWORD is not set; run `bi-console init`")
        return cls(settings.superset_url, settings.superset_user, settings.superset_password)

    def __enter__(self) -> SupersetClient:
        self.login()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- auth

    def login(self) -> None:
        body = self._request(
            "POST",
            "/api/v1/security/login",
            json={
                "username": self._username,
                "password": self._password,
                "provider": "db",
                "refresh": False,
            },
            auth=False,
            timeout=LOGIN_TIMEOUT,
        )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise SupersetApiError(f"POST {self.base_url}/api/v1/security/login: no access_token in the answer")
        self._http.headers["Authorization"] = f"Bearer {token}"
        csrf = self._request("GET", "/api/v1/security/csrf_token/", csrf=False)
        self._csrf = (csrf or {}).get("result")
        if not self._csrf:
            raise SupersetApiError(f"GET {self.base_url}/api/v1/security/csrf_token/: no token in the answer")
        self._http.headers["X-CSRFToken"] = self._csrf
        self._http.headers["Referer"] = self.base_url + "/"

    # -- transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        auth: bool = True,
        csrf: bool = True,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        url = self.base_url + path
        try:
            response = self._http.request(method, path, timeout=timeout or httpx.USE_CLIENT_DEFAULT, **kwargs)
        except httpx.TimeoutException:
            raise SupersetUnreachable(f"{method} {url}: timed out", url=url) from None
        except httpx.HTTPError as exc:
            raise SupersetUnreachable(f"{method} {url}: {type(exc).__name__}: {exc}".splitlines()[0], url=url) from None
        if response.status_code >= 400:
            raise SupersetApiError(
                f"{method} {url} -> {response.status_code}: {_reason(response)}", status=response.status_code, url=url
            )
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def get(self, path: str, **kwargs: Any) -> Any:
        return self._request("GET", path, **kwargs)

    def post(self, path: str, payload: Any = None, **kwargs: Any) -> Any:
        return self._request("POST", path, json=payload, **kwargs)

    def put(self, path: str, payload: Any = None, **kwargs: Any) -> Any:
        return self._request("PUT", path, json=payload, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self._request("DELETE", path, **kwargs)

    def find(self, resource: str, column: str, value: Any, *, page_size: int = 100) -> list[dict[str, Any]]:
        """Rows of /api/v1/<resource>/ whose <column> equals value (all pages)."""
        rows: list[dict[str, Any]] = []
        page = 0
        while True:
            q = rison({"filters": [{"col": column, "opr": "eq", "value": value}], "page": page, "page_size": page_size})
            body = self.get(f"/api/v1/{resource}/", params={"q": q})
            batch = body.get("result", [])
            rows.extend(batch)
            if len(batch) < page_size or len(rows) >= body.get("count", 0):
                return rows
            page += 1

    def chart_data(self, chart_id: int, *, force: bool = False) -> dict[str, Any]:
        """The chart's saved query run through the cache (force=True bypasses and refills it)."""
        params = {"format": "json", "type": "full"}
        if force:  # Superset reads any non-empty value as true, so "false" must not be sent
            params["force"] = "true"
        body = self.get(f"/api/v1/chart/{chart_id}/data/", params=params, timeout=DATA_TIMEOUT)
        results = (body or {}).get("result") or []
        if not results:
            raise SupersetApiError(f"GET {self.base_url}/api/v1/chart/{chart_id}/data/: empty result")
        for result in results:
            if result.get("error"):
                raise SupersetApiError(f"GET {self.base_url}/api/v1/chart/{chart_id}/data/: {result['error']}")
        first: dict[str, Any] = results[0]
        return first


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        title = re.search(r"<title>(.*?)</title>", response.text, re.S | re.I)
        text = " ".join((title.group(1) if title else response.text).split())
        return text[:200] or response.reason_phrase
    message: Any = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("msg") or body.get("error")
        if not message and body.get("errors"):
            first = body["errors"][0]
            message = first.get("message") if isinstance(first, dict) else first
    text = message if isinstance(message, str) else json.dumps(message if message is not None else body)
    return " ".join(text.split())[:300]
