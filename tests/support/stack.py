"""The embedded stack for the tests: real PostgreSQL, tansu, moto and Debezium on free
ports in a temporary data directory, with generated secrets."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.config import Settings
from tests.support import REPO
from tests.support.settings import make_settings


def write_env(settings: Settings, path: Path) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in settings.to_env().items()))
    return path


def table_rows(stack, relation: str, exclude: tuple[str, ...] = ()) -> list[tuple]:
    """Every row of `relation` as text, columns in table order less `exclude`: two states of a
    layer compare equal only when every value is."""
    schema, name = relation.split(".")
    columns = [
        r[0]
        for r in stack.psql(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position",
            (schema, name),
        )
        if r[0] not in exclude
    ]
    assert columns, relation
    select = ", ".join(f'"{c}"::text' for c in columns)
    return stack.psql(f"SELECT {select} FROM {relation} ORDER BY 1, 2, 3")


@dataclass
class StackHandle:
    settings: Settings
    runtime: object
    env_file: Path
    _seeded: dict = field(default_factory=dict)

    def cli(
        self,
        *args: str,
        timeout: float = 600,
        check: bool = False,
        env: dict | None = None,
        env_file: Path | None = None,
    ):
        """Run `bi-console --env-file ... ARGS` as a separate process, as an operator would."""
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", "--env-file", str(env_file or self.env_file), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            env={k: v for k, v in {**os.environ, **(env or {})}.items() if not k.startswith("BI_")} | (env or {}),
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"bi-console {' '.join(args)} exited {result.returncode}\n{result.stderr[-3000:]}"
                f"{self.service_log_tails()}"
            )
        return result

    def service_log_tails(self, lines: int = 60) -> str:
        """The end of the cdc and broker logs: the fixture removes the stack's directory, and
        with it the only evidence of why events did not arrive."""
        tails = []
        for service in ("cdc", "kafka"):
            try:
                tail = list(self.runtime.logs(service, tail=lines))
            except Exception as exc:
                tail = [f"(could not read: {exc})"]
            tails.append(f"\n--- last {lines} lines of the {service} log ---\n" + "\n".join(tail))
        return "".join(tails)

    def seeded(self) -> dict:
        """`demo seed` once per session, waiting until every event reached Kafka."""
        if not self._seeded:
            result = self.cli("demo", "seed", check=True)
            import json

            self._seeded.update(json.loads(result.stdout.strip().splitlines()[-1]))
        return self._seeded

    @contextlib.contextmanager
    def source_refusing_logins(self):
        """The CDC source as an outage looks to Debezium: its role may not log in and its
        sessions are cut, while the analytics database (the same server here) keeps serving."""
        from pipeline.runtime import pgserver

        server = pgserver.EmbeddedPostgres(self.settings, self.runtime.state_dir("postgres"))
        user = self.settings.source_user

        def admin(query: str) -> None:
            conn = server.admin_connect()
            conn.autocommit = True
            try:
                conn.cursor().execute(query)
            finally:
                conn.close()

        admin(f'ALTER ROLE "{user}" NOLOGIN')
        try:
            admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}'")
            yield
        finally:
            admin(f'ALTER ROLE "{user}" LOGIN')

    def wait_connector(self, predicate, timeout: float, what: str):
        """The connector status once predicate(status) holds; the cdc log tail if it never does."""
        deadline = time.monotonic() + timeout
        status = self.runtime.connector_status()
        while not predicate(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"connector never {what} in {timeout:.0f}s: {status}{self.service_log_tails()}")
            time.sleep(0.5)
            status = self.runtime.connector_status()
        return status

    def psql(self, query: str, params=None) -> list[tuple]:
        from pipeline.stores.db import connect

        conn = connect(self.settings)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> StackHandle:
    """A stack per test module, so that one module's changes never shift another's figures."""
    from pipeline.runtime.embedded import EmbeddedRuntime

    # Not under pytest's own temp dir: every new pytest session resets that tree to 0700,
    # which would cut PostgreSQL (running as its own system user) off from its data.
    root = Path(tempfile.mkdtemp(prefix="bi-console-stack-"))
    settings = make_settings(root / "data", own_ports=True)
    runtime = EmbeddedRuntime(settings)
    started = time.monotonic()
    try:
        runtime.up(log=lambda line: print(line, file=sys.stderr))
    except Exception:
        runtime.down(log=lambda line: None)
        raise
    print(f"stack up in {time.monotonic() - started:.1f}s", file=sys.stderr)
    handle = StackHandle(settings=settings, runtime=runtime, env_file=write_env(settings, root / ".env"))
    yield handle
    runtime.down(log=lambda line: None)
    shutil.rmtree(root, ignore_errors=True)
