"""compose/postgres/initdb/20-superset-metadata.sql, on a real PostgreSQL server, run both
ways it runs: by the postgres image's entrypoint after 10-bi-console.sql (which creates
the same database there), and by the stand-in on every start, as a superuser naming the
owner (compose/standin/postgres_standin.py)."""

from __future__ import annotations

from tests.db.test_compose_postgres_init import psql, server  # noqa: F401 - the fixture
from tests.support import REPO

METADATA_SQL = REPO / "compose" / "postgres" / "initdb" / "20-superset-metadata.sql"


def run_metadata_sql(server, user: str, *variables: str):  # noqa: F811
    argv = ["psql", "-X", "-q", "-h", server.socket_dir, "-p", str(server.port), "-U", user, "-d", "analytics"]
    for variable in variables:
        argv += ["-v", variable]
    return server.run([*argv, "-f", METADATA_SQL], check=False)


def owner_of_superset(server) -> str:  # noqa: F811
    return psql(
        server, "analytics", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'superset'"
    ).stdout.strip()


def test_after_the_image_init_script_it_changes_nothing(server):  # noqa: F811
    assert owner_of_superset(server) == "analytics"  # made by 10-bi-console.sql
    ran = run_metadata_sql(server, "analytics")
    assert ran.returncode == 0, ran.stderr
    assert owner_of_superset(server) == "analytics"
    assert psql(server, "bi_reader", "SELECT 1", database="superset").returncode != 0


def test_as_the_standin_runs_it_it_creates_the_database_once_for_the_owner(server):  # noqa: F811
    assert psql(server, "analytics", "DROP DATABASE superset").returncode == 0
    assert psql(server, "analytics", "CREATE ROLE metadata_owner LOGIN").returncode == 0
    try:
        for _ in range(2):  # every start of the stand-in
            ran = run_metadata_sql(server, "analytics", "owner=metadata_owner")
            assert ran.returncode == 0, ran.stderr
            assert owner_of_superset(server) == "metadata_owner"
        assert psql(server, "metadata_owner", "SELECT 1", database="superset").returncode == 0
        denied = psql(server, "bi_reader", "SELECT 1", database="superset")
        assert denied.returncode != 0 and "permission denied for database" in denied.stderr
    finally:
        psql(server, "analytics", "DROP DATABASE IF EXISTS superset")
        run_metadata_sql(server, "analytics")  # back as the entrypoint left it
        psql(server, "analytics", "DROP ROLE IF EXISTS metadata_owner")
