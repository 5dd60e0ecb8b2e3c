"""Connections to the analytics database, with failures that name the setting to fix."""

from __future__ import annotations

from typing import Any

import psycopg2
from psycopg2.extensions import connection, cursor

from pipeline.config import Settings


def one_row(cur: cursor) -> tuple[Any, ...]:
    """The row of a statement that always returns one (an aggregate, a catalog lookup)."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("the statement returned no row")
    return row


class ServiceUnreachable(Exception):
    """A service cannot be reached or refuses us. The message names the setting."""


def explain_pg_error(
    exc: psycopg2.OperationalError, host: str, port: int, user: str, prefix: str = "PG", role: str | None = None
) -> str:
    """One line naming the setting to fix. `role` is the prefix of the user and password
    settings when they differ from the server's (the reader: BI_PG_READER_*)."""
    role = role or prefix
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "password authentication failed" in text or "no password supplied" in text:
        return f"BI_{role}_PASSWORD: PostgreSQL at {host}:{port} refused the password of user {user!r}"
    if "does not exist" in text and "database" in text:
        return f"BI_{prefix}_DATABASE: {text}"
    if "role" in text and "does not exist" in text:
        return f"BI_{role}_USER: {text}"
    return f"BI_{prefix}_PORT={port} (BI_{prefix}_HOST={host}): cannot connect to PostgreSQL: {text}"


def connect(settings: Settings, **overrides: Any) -> connection:
    dsn = {**settings.pg_dsn(), **overrides}
    try:
        conn: connection = psycopg2.connect(**dsn)
        return conn
    except psycopg2.OperationalError as exc:
        raise ServiceUnreachable(explain_pg_error(exc, dsn["host"], dsn["port"], dsn["user"])) from None


def connect_source(settings: Settings, *, timeout_seconds: float | None = None) -> connection:
    """As the CDC source's user. `timeout_seconds` bounds the connection attempt, for callers
    that only explain another failure and must not wait long on a source that is down."""
    dsn = settings.source_dsn()
    if timeout_seconds is not None:
        dsn = {**dsn, "connect_timeout": max(1, round(timeout_seconds))}
    try:
        conn: connection = psycopg2.connect(**dsn)
        return conn
    except psycopg2.OperationalError as exc:
        raise ServiceUnreachable(explain_pg_error(exc, dsn["host"], dsn["port"], dsn["user"], "SOURCE")) from None


def connect_reader(settings: Settings) -> connection:
    """As the read-only BI role (what Superset connects as)."""
    dsn = settings.pg_dsn(user=settings.pg_reader_user, password=settings.pg_reader_password)
    try:
        conn: connection = psycopg2.connect(**dsn)
        return conn
    except psycopg2.OperationalError as exc:
        text = explain_pg_error(exc, dsn["host"], dsn["port"], dsn["user"], role="PG_READER")
        raise ServiceUnreachable(text) from None
