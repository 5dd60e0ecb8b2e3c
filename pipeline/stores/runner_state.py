"""The continuous runner's heartbeat: one row in the meta schema, written every few seconds.

It lives in the analytics database, not in a file, so that `--check` reads the same row
wherever the runner runs (this host, a compose service, a systemd unit elsewhere). Its age is
computed by the database's clock, so two hosts' clocks never disagree about it."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection

from pipeline.config import Settings
from pipeline.stores.db import connect

RUNNER_NAME = "continuous"


def _table(settings: Settings) -> sql.Composed:
    return sql.SQL("{}.runner_heartbeat").format(sql.Identifier(settings.file.meta_schema))


def ensure_heartbeat_table(conn: connection, settings: Settings) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(settings.file.meta_schema)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, pid integer NOT NULL, host text NOT NULL, "
                "started_at timestamptz NOT NULL, beat_at timestamptz NOT NULL, state text NOT NULL, "
                "detail jsonb NOT NULL DEFAULT '{{}}')"
            ).format(_table(settings))
        )


def write_heartbeat(
    conn: connection, settings: Settings, started_at: float, state: str, detail: dict[str, Any]
) -> None:
    """Upsert the runner's row: state is running, paused or stopped."""
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (name, pid, host, started_at, beat_at, state, detail) "
                "VALUES (%s, %s, %s, to_timestamp(%s), now(), %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET pid = excluded.pid, host = excluded.host, "
                "started_at = excluded.started_at, beat_at = now(), state = excluded.state, detail = excluded.detail"
            ).format(_table(settings)),
            (RUNNER_NAME, os.getpid(), socket.gethostname(), started_at, state, json.dumps(detail, default=str)),
        )


@dataclass
class Heartbeat:
    pid: int
    host: str
    started_at: str
    beat_at: str
    age_seconds: float  # by the database's clock
    state: str
    detail: dict[str, Any] = field(default_factory=dict)


def read_heartbeat(settings: Settings) -> Heartbeat | None:
    """The runner's last heartbeat, None when no runner ever ran against this database."""
    conn = connect(settings)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s)", (f"{settings.file.meta_schema}.runner_heartbeat",))
            row = cur.fetchone()
            if row is None or row[0] is None:
                return None
            cur.execute(
                sql.SQL(
                    "SELECT pid, host, started_at::text, beat_at::text, "
                    "extract(epoch FROM now() - beat_at)::float8, state, detail FROM {} WHERE name = %s"
                ).format(_table(settings)),
                (RUNNER_NAME,),
            )
            found = cur.fetchone()
    finally:
        conn.close()
    if found is None:
        return None
    pid, host, started_at, beat_at, age, state, detail = found
    return Heartbeat(int(pid), str(host), str(started_at), str(beat_at), float(age), str(state), dict(detail or {}))
