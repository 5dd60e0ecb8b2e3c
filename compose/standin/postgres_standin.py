"""Stand-in for the postgres image: Debian's PostgreSQL 15, initialised and bootstrapped by
the embedded stack's own code (pipeline/runtime/pgserver.py: the analytics owner, the
read-only reader, the demo source database with logical decoding), listening on the
compose network. After the bootstrap it runs the SQL files mounted in INITDB (the
postgres image's initdb scripts that are idempotent, such as Superset's metadata
database) as the superuser. Runs as PID 1 and stops the server with a fast shutdown on SIGINT/SIGTERM."""

import signal
import subprocess
import sys
from pathlib import Path

from pipeline.config import load_settings
from pipeline.runtime import pgserver
from pipeline.runtime.supervisor import wait_until

READY = Path("/run/bi-console-postgres.ready")
INITDB = Path("/opt/bi-console/initdb")
NETWORK_RULE = "host all all 0.0.0.0/0 scram-sha-256\n"


def main() -> int:
    READY.unlink(missing_ok=True)
    settings = load_settings(env_file=None)
    server = pgserver.EmbeddedPostgres(settings, Path("/var/lib/bi-console/postgres"))
    argv, user = server.prepare(lambda line: print(line, flush=True))
    # The embedded stack listens on 127.0.0.1 only; here the peers are other containers.
    argv = ["listen_addresses=*" if arg.startswith("listen_addresses=") else arg for arg in argv]
    hba = server.pgdata / "pg_hba.conf"
    if NETWORK_RULE not in hba.read_text():
        with hba.open("a") as f:
            f.write("# compose network peers (bi-console stand-in)\n" + NETWORK_RULE)
    postgres = subprocess.Popen(argv, user=user)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: postgres.send_signal(signal.SIGINT))
    if not wait_until(lambda: postgres.poll() is None and server.ready(), timeout=60):
        print("postgres stand-in: the server did not become ready", flush=True)
        postgres.kill()
        return 1
    server.bootstrap(lambda line: print(line, flush=True))
    for script in sorted(INITDB.glob("*.sql")):
        ran = subprocess.run(
            [
                "psql",
                "-X",
                "-q",
                "-h",
                str(server.socket_dir),
                "-p",
                str(settings.pg_port),
                "-U",
                pgserver.SUPERUSER,
                "-d",
                settings.pg_database,
                "-v",
                f"owner={settings.pg_user}",
                "-f",
                str(script),
            ],
            capture_output=True,
            text=True,
        )
        if ran.returncode:
            print(f"postgres stand-in: {script.name} failed: {ran.stderr.strip()}", flush=True)
            postgres.send_signal(signal.SIGINT)
            postgres.wait()
            return 1
        print(f"postgres stand-in: ran {script.name}", flush=True)
    READY.touch()
    print("postgres stand-in: ready", flush=True)
    return postgres.wait()


if __name__ == "__main__":
    sys.exit(main())
