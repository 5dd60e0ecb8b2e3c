"""What a cdc start that times out names: the transactions its replication slot waits on
(`pgserver.open_write_transactions`), read from a real PostgreSQL."""

from __future__ import annotations

import pytest

from pipeline.runtime.pgserver import open_write_transactions
from tests.support.net import free_port
from tests.support.postgres import start_cluster
from tests.support.settings import make_settings


@pytest.fixture(scope="module")
def server():
    cluster = start_cluster(superuser="concord", prefix="bi-open-xact-pg-")
    try:
        yield cluster
    finally:
        cluster.stop(mode="immediate")


def test_names_a_transaction_holding_a_transaction_id_and_only_that_one(server, tmp_path):
    settings = make_settings(tmp_path, source_port=server.port, source_database="postgres", source_user="concord")
    writer = server.connect()
    reader = server.connect()
    try:
        writer.cursor().execute("SET application_name = 'load-step'")
        writer.commit()
        reader.cursor().execute("SELECT 1")  # open, but it holds no transaction id
        assert open_write_transactions(settings) == []

        writer.cursor().execute("CREATE TEMP TABLE held (x int); INSERT INTO held VALUES (1)")
        waiting_on = open_write_transactions(settings)
        assert len(waiting_on) == 1, waiting_on
        assert f"pid {writer.get_backend_pid()} (load-step, database postgres, idle in transaction" in waiting_on[0]

        writer.commit()
        assert open_write_transactions(settings) == []
    finally:
        writer.close()
        reader.close()


def test_a_source_that_does_not_answer_gives_no_names_in_seconds(tmp_path):
    settings = make_settings(tmp_path, source_port=free_port(), source_user="concord")
    assert open_write_transactions(settings) == []
