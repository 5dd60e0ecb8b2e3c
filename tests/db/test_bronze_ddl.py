"""The bronze DDL is written once (pipeline/stores/bronze.py): compose's initdb holds its
rendering, and a database made by that rendering equals one the migrations made."""

from __future__ import annotations

from psycopg2 import sql

from pipeline.config import DEFAULT_CONFIG, load_file_config
from pipeline.stores import bronze
from tests.support import REPO
from tests.support.dbt import connect, fresh_settings

INITDB = REPO / "compose" / "postgres" / "initdb" / "10-bi-console.sql"

CATALOG = {
    "columns": "SELECT table_schema, table_name, ordinal_position, column_name, data_type, is_nullable,"
    " column_default, is_generated, generation_expression FROM information_schema.columns"
    " WHERE table_schema = ANY(%(schemas)s) ORDER BY 1, 2, 3",
    "constraints": "SELECT n.nspname, c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
    " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
    " WHERE n.nspname = ANY(%(schemas)s) ORDER BY 1, 2, 3",
    "indexes": "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes"
    " WHERE schemaname = ANY(%(schemas)s) ORDER BY 1, 2, 3",
    "storage": "SELECT n.nspname, c.relname, a.attname, a.attstorage FROM pg_attribute a"
    " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = ANY(%(schemas)s) AND c.relkind = 'r' AND a.attnum > 0 ORDER BY 1, 2, 3",
}


def _generated_section(text: str) -> str:
    return text.split(bronze.GENERATED_BEGIN + "\n", 1)[1].split(bronze.GENERATED_END, 1)[0]


def _catalog(settings) -> dict:
    schemas = [settings.file.bronze_schema, settings.file.meta_schema]
    with connect(settings) as conn, conn.cursor() as cur:
        out = {}
        for name, query in CATALOG.items():
            cur.execute(query, {"schemas": schemas})
            out[name] = cur.fetchall()
    return out


def test_compose_initdb_holds_the_generated_bronze_ddl():
    text = INITDB.read_text()
    expected = bronze.with_generated_section(text, load_file_config(DEFAULT_CONFIG))
    assert text == expected, f"regenerate it: python -m pipeline.stores.bronze {INITDB.relative_to(INITDB.parents[3])}"
    section = _generated_section(text)
    for table in load_file_config(DEFAULT_CONFIG).tables:
        assert f"CREATE TABLE IF NOT EXISTS bronze.{table.bronze_table} (" in section


def test_initdb_bronze_equals_the_migrated_one(tmp_path):
    migrated = fresh_settings("bronze_ddl_migrated", tmp_path / "a")  # ensure_bronze per table
    scripted = fresh_settings("bronze_ddl_scripted", tmp_path / "b")
    with connect(scripted) as conn, conn.cursor() as cur:
        for schema in (scripted.file.bronze_schema, scripted.file.meta_schema):
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        cur.execute(_generated_section(INITDB.read_text()))
    expected, got = _catalog(migrated), _catalog(scripted)
    assert expected["columns"], "the migration created no bronze tables"
    for part in CATALOG:
        assert got[part] == expected[part], part
    # A migration run on the scripted database finds nothing to change.
    with connect(scripted) as conn, conn.cursor() as cur:
        for table in scripted.tables:
            bronze.ensure_bronze(cur, scripted.file, table)
    assert _catalog(scripted) == expected


def test_a_composite_key_ranks_on_a_json_array_of_its_columns(tmp_path):
    """A link table's events carry their key in several columns; bronze's record_key holds all
    of them as a JSON array (from the row, else from the Kafka key), so two images of one product stay two keys."""
    settings = fresh_settings("bronze_ddl_composite", tmp_path)
    link = settings.file.tables[0].model_copy(
        update={"name": "product_image", "bronze_table": "product_image_cdc", "key_columns": ["ProductID", "ImageID"]}
    )
    events = [
        # (kafka_key, cdc_payload) and the record_key bronze must give it, written out by hand
        (
            '{"ProductID": 7807552, "ImageID": 3}',
            '{"op": "c", "after": {"ProductID": 7807552, "ImageID": 3}}',
            "[7807552, 3]",
        ),
        (
            '{"ProductID": 7807552, "ImageID": 4}',
            '{"op": "d", "before": {"ProductID": 7807552, "ImageID": 4}}',
            "[7807552, 4]",
        ),
        ('{"ProductID": 7807552, "ImageID": 4}', None, "[7807552, 4]"),  # the tombstone: from the Kafka key
        ('{"ProductID": 1, "ImageID": 2}', '{"op": "c", "after": {"ProductID": 1}}', "[1, 2]"),
    ]
    with connect(settings) as conn, conn.cursor() as cur:
        bronze.ensure_bronze(cur, settings.file, link)
        for offset, (key, payload, _) in enumerate(events):
            cur.execute(
                "INSERT INTO bronze.product_image_cdc (kafka_topic, kafka_partition, kafka_offset, kafka_timestamp,"
                " kafka_key, cdc_payload, batch_file) VALUES ('t', 0, %s, 0, %s, %s, 'b')",
                (offset, key, payload),
            )
        cur.execute("SELECT record_key FROM bronze.product_image_cdc ORDER BY kafka_offset")
        assert [r[0] for r in cur.fetchall()] == [expected for _, _, expected in events]
