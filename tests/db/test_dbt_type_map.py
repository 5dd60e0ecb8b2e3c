"""The contract type map (dbt/macros/type_map.sql) and composite keys, on real PostgreSQL.

A copy of the dbt project gets hand-written contracts: one column of every SQL Server type,
the decimals again in decimal.handling.mode=precise, and a link table keyed by
(ProductID, ImageID). Their bronze tables hold hand-written Debezium events, schema-wrapped
and bare; the expected PostgreSQL types and values below are written by hand."""

from __future__ import annotations

import base64
import shutil
from datetime import date, datetime, time, timezone
from pathlib import Path

import pytest
import yaml

from pipeline.config import TableConfig
from pipeline.steps.transform import DEFAULT_PROJECT_DIR, DbtProject
from pipeline.stores.bronze import ensure_event_table
from tests.support.dbt import connect, execute, fresh_settings, load_events, query

pytestmark = pytest.mark.timeout(600)

# source column, SQL Server type, staging name, PostgreSQL type (information_schema)
TYPES = [
    ("ID", "bigint", "type_probe_id", "bigint"),
    ("Flag", "bit", "flag", "boolean"),
    ("Tiny", "tinyint", "tiny", "smallint"),
    ("Small", "smallint", "small", "smallint"),
    ("Regular", "int", "regular", "integer"),
    ("Price", "decimal(18,2)", "price", "numeric"),
    ("Rate", "numeric(10,4)", "rate", "numeric"),
    ("Amount", "money", "amount", "numeric"),
    ("Fee", "smallmoney", "fee", "numeric"),
    ("Ratio", "float", "ratio", "double precision"),
    ("Factor", "real", "factor", "real"),
    ("Day", "date", "day", "date"),
    ("TimeMs", "time(3)", "time_ms", "time without time zone"),
    ("TimeUs", "time(6)", "time_us", "time without time zone"),
    ("TimeNs", "time", "time_ns", "time without time zone"),
    ("Stamp", "datetime", "stamp", "timestamp without time zone"),
    ("SmallStamp", "smalldatetime", "small_stamp", "timestamp without time zone"),
    ("Stamp2Ms", "datetime2(3)", "stamp2_ms", "timestamp without time zone"),
    ("Stamp2Us", "datetime2(6)", "stamp2_us", "timestamp without time zone"),
    ("Stamp2Ns", "datetime2(7)", "stamp2_ns", "timestamp without time zone"),
    ("Zoned", "datetimeoffset(7)", "zoned", "timestamp with time zone"),
    ("NetUID", "uniqueidentifier", "net_uid", "text"),
    ("Code", "char(4)", "code", "text"),
    ("Label", "varchar(20)", "label", "text"),
    ("Short", "nchar(3)", "short", "text"),
    ("Title", "nvarchar(max)", "title", "text"),
    ("Notes", "text", "notes", "text"),
    ("Remarks", "ntext", "remarks", "text"),
    ("Doc", "xml", "doc", "text"),
    ("Fixed", "binary(4)", "fixed", "bytea"),
    ("Blob", "varbinary(max)", "blob", "bytea"),
    ("Picture", "image", "picture", "bytea"),
    ("Version", "rowversion", "version", "bytea"),
    ("OldVersion", "timestamp", "old_version", "bytea"),
]
CDC_COLUMNS = [
    ("cdc_operation", "text"),
    ("source_timestamp", "timestamp with time zone"),
    ("is_snapshot", "boolean"),
    ("kafka_offset", "bigint"),
    ("ingested_at", "timestamp with time zone"),
]

# Row 1 as the SQL Server connector writes it (schemas on), row 2 (schemas off) with the
# decimals as JSON numbers (decimal.handling.mode=double) and the edges, row 3 all null.
ROW_1 = {
    "ID": 1,
    "Flag": True,
    "Tiny": 255,
    "Small": -32768,
    "Regular": 2147483647,
    "Price": "12345678.90",
    "Rate": "-0.0001",
    "Amount": "922337203685477.5807",
    "Fee": "-214748.3648",
    "Ratio": 0.1,
    "Factor": 1.5,
    "Day": 19675,
    "TimeMs": 45296789,
    "TimeUs": 45296789012,
    "TimeNs": 45296789012345,
    "Stamp": 1700000000123,
    "SmallStamp": 1700000040000,
    "Stamp2Ms": 1700000000123,
    "Stamp2Us": 1700000000123456,
    "Stamp2Ns": 1700000000123456789,
    "Zoned": "2023-11-14T22:13:20.1234567+02:00",
    "NetUID": "6F9619FF-8B86-D011-B42D-00C04FC964FF",
    "Code": "ab  ",
    "Label": "varchar",
    "Short": "Жук",
    "Title": "Пневмоподушка",
    "Notes": "text",
    "Remarks": "ntext ü",
    "Doc": '<a b="1"/>',
    "Fixed": "AAEC/w==",
    "Blob": "3q2+7w==",
    "Picture": "iVBORw==",
    "Version": "AAAAAAAAB9E=",
    "OldVersion": "AAAAAAAAAAE=",
}
ROW_2 = {
    "ID": 2,
    "Flag": False,
    "Tiny": 0,
    "Small": 0,
    "Regular": -1,
    "Price": 12.5,
    "Rate": 0,
    "Amount": -1.25,
    "Fee": 0.0001,
    "Ratio": -1e300,
    "Factor": -0.25,
    "Day": -1,
    "TimeMs": 0,
    "TimeUs": 86399999999,
    "TimeNs": 1,
    "Stamp": -1000,
    "SmallStamp": 0,
    "Stamp2Ms": 1600000000001,
    "Stamp2Us": 1600000000000001,
    "Stamp2Ns": -1000000000000000000,
    "Zoned": "2024-02-29T23:59:59Z",
    "NetUID": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "Code": "",
    "Label": "",
    "Short": None,
    "Title": "",
    "Notes": None,
    "Remarks": None,
    "Doc": None,
    "Fixed": "",
    "Blob": None,
    "Picture": None,
    "Version": None,
    "OldVersion": None,
}
ROW_3 = {column: None for column, *_ in TYPES} | {"ID": 3}

EXPECTED = {
    1: {
        "flag": True,
        "tiny": 255,
        "small": -32768,
        "regular": 2147483647,
        "price": "12345678.90",
        "rate": "-0.0001",
        "amount": "922337203685477.5807",
        "fee": "-214748.3648",
        "ratio": 0.1,
        "factor": 1.5,
        "day": date(2023, 11, 14),
        "time_ms": time(12, 34, 56, 789000),
        "time_us": time(12, 34, 56, 789012),
        "time_ns": time(12, 34, 56, 789012),
        "stamp": datetime(2023, 11, 14, 22, 13, 20, 123000),
        "small_stamp": datetime(2023, 11, 14, 22, 14),
        "stamp2_ms": datetime(2023, 11, 14, 22, 13, 20, 123000),
        "stamp2_us": datetime(2023, 11, 14, 22, 13, 20, 123456),
        "stamp2_ns": datetime(2023, 11, 14, 22, 13, 20, 123456),
        "zoned": datetime(2023, 11, 14, 20, 13, 20, 123456, tzinfo=timezone.utc),
        "net_uid": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
        "code": "ab  ",
        "label": "varchar",
        "short": "Жук",
        "title": "Пневмоподушка",
        "notes": "text",
        "remarks": "ntext ü",
        "doc": '<a b="1"/>',
        "fixed": b"\x00\x01\x02\xff",
        "blob": b"\xde\xad\xbe\xef",
        "picture": b"\x89PNG",
        "version": b"\x00\x00\x00\x00\x00\x00\x07\xd1",
        "old_version": b"\x00\x00\x00\x00\x00\x00\x00\x01",
    },
    2: {
        "flag": False,
        "tiny": 0,
        "small": 0,
        "regular": -1,
        "price": "12.5",
        "rate": "0",
        "amount": "-1.25",
        "fee": "0.0001",
        "ratio": -1e300,
        "factor": -0.25,
        "day": date(1969, 12, 31),
        "time_ms": time(0, 0),
        "time_us": time(23, 59, 59, 999999),
        "time_ns": time(0, 0),
        "stamp": datetime(1969, 12, 31, 23, 59, 59),
        "small_stamp": datetime(1970, 1, 1),
        "stamp2_ms": datetime(2020, 9, 13, 12, 26, 40, 1000),
        "stamp2_us": datetime(2020, 9, 13, 12, 26, 40, 1),
        "stamp2_ns": datetime(1938, 4, 24, 22, 13, 20),
        "zoned": datetime(2024, 2, 29, 23, 59, 59, tzinfo=timezone.utc),
        "net_uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "code": "",
        "label": "",
        "short": None,
        "title": "",
        "notes": None,
        "remarks": None,
        "doc": None,
        "fixed": b"",
        "blob": None,
        "picture": None,
        "version": None,
        "old_version": None,
    },
    3: {name: None for _, _, name, _ in TYPES[1:]},
}

# decimal.handling.mode=precise: base64 of the unscaled value (big-endian two's complement).
PRECISE_TYPES = [
    ("ID", "bigint", "type_probe_precise_id"),
    ("Price", "decimal(18,2)", "price"),
    ("Amount", "money", "amount"),
    ("Fee", "smallmoney", "fee"),
    ("Huge", "numeric(38,0)", "huge"),
]


def unscaled(value: int, length: int) -> str:
    return base64.b64encode(value.to_bytes(length, "big", signed=True)).decode()


PRECISE_ROWS = [
    {
        "ID": 1,
        "Price": unscaled(1234590, 3),
        "Amount": unscaled(-12345, 2),
        "Fee": unscaled(0, 1),
        "Huge": unscaled(10**37, 16),
    },
    {"ID": 2, "Price": unscaled(-1, 1), "Amount": unscaled(2**63 - 1, 8), "Fee": unscaled(-(2**31), 4), "Huge": None},
]
PRECISE_EXPECTED = {
    1: ("12345.90", "-1.2345", "0.0000", "10000000000000000000000000000000000000"),
    2: ("-0.01", "922337203685477.5807", "-214748.3648", None),
}

LINK = [
    ("ProductID", "bigint", "product_id"),
    ("ImageID", "bigint", "image_id"),
    ("Deleted", "bit", "deleted"),
    ("Caption", "nvarchar(200)", "caption"),
]

# A key whose staging values are not bronze's record_key text (a GUID lowercased, a date
# from its day number): the keys gone from bronze are matched on the decoded values.
PERIOD = [
    ("NetUID", "uniqueidentifier", "net_uid"),
    ("ValidFrom", "date", "valid_from"),
    ("Price", "decimal(18,2)", "price"),
]


def contract(model: str, bronze: str, key: list[str], columns: list[tuple], **extra) -> dict:
    return {
        "version": 2,
        "models": [
            {
                "name": model,
                "description": f"Probe of the contract staging: {model}.",
                "config": {
                    "meta": {
                        "source_contract": {
                            "source": f"ConcordDb.dbo.{model}",
                            "bronze_table": bronze,
                            "key_columns": key,
                            **extra,
                        }
                    }
                },
                "columns": [
                    {
                        "name": name,
                        "description": f"Source {source} ({source_type}).",
                        "meta": {"source_column": source, "source_type": source_type, "nullable": source not in key},
                    }
                    for source, source_type, name, *_ in columns
                ],
            }
        ],
    }


PROBES = {
    "base_type_probe": ("type_probe_cdc", ["ID"], TYPES, {}),
    "base_type_probe_precise": ("type_probe_precise_cdc", ["ID"], PRECISE_TYPES, {"decimal_handling_mode": "precise"}),
    "base_image_link": ("image_link_cdc", ["ProductID", "ImageID"], LINK, {}),
    "base_price_period": ("price_period_cdc", ["NetUID", "ValidFrom"], PERIOD, {}),
}


def probe_project(tmp: Path) -> Path:
    project = tmp / "dbt"
    shutil.copytree(DEFAULT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    sources_file = project / "models" / "sources.yml"
    sources = yaml.safe_load(sources_file.read_text(encoding="utf-8"))
    for model, (bronze, key, columns, extra) in PROBES.items():
        sources["sources"][0]["tables"].append({"name": bronze})
        base = project / "models" / "staging" / "base"
        (base / f"{model}.yml").write_text(
            yaml.safe_dump(contract(model, bronze, key, columns, **extra)), encoding="utf-8"
        )
        (base / f"{model}.sql").write_text("{{ cdc_staging() }}\n", encoding="utf-8")
    sources_file.write_text(yaml.safe_dump(sources, allow_unicode=True), encoding="utf-8")
    return project


def source(lsn: int, snapshot: str = "false") -> dict:
    position = f"{lsn:08x}:00000001:0003"
    return {
        "connector": "sqlserver",
        "ts_ms": 1700000000000 + lsn,
        "snapshot": snapshot,
        "commit_lsn": position,
        "change_lsn": position,
        "event_serial_no": 1,
    }


def event(topic: str, offset: int, key: dict, op: str, before, after, *, schema: dict | None = None) -> dict:
    value = {"before": before, "after": after, "source": source(offset + 1), "op": op, "ts_ms": 1700000000500}
    if schema is not None:
        value = {"schema": schema, "payload": value}
        key = {"schema": {"type": "struct", "fields": [{"field": k, "type": "int64"} for k in key]}, "payload": key}
    return {
        "topic": topic,
        "partition": 0,
        "offset": offset,
        "timestamp": 1700000100000 + offset,
        "key": key,
        "value": value,
    }


# A value schema as the JSON converter wraps it (its content is not read by staging).
SCHEMA = {"type": "struct", "name": "cord.ConcordDb.dbo.TypeProbe.Envelope", "fields": []}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    settings = fresh_settings("bi_dbt_type_map", tmp_path_factory.mktemp("data"))
    with connect(settings) as conn, conn.cursor() as cur:
        for model, (bronze, key, *_) in PROBES.items():
            table = TableConfig(
                name=model.removeprefix("base_"),
                source_table=model,
                key_columns=key,
                topic=f"cord.{model}",
                raw_prefix=f"{model}/raw",
                bronze_table=bronze,
                dbt_selector=model,
                staging_relation=model,
                marts_relation=model,
            )
            ensure_event_table(cur, settings.file, table, bronze)
    topic = "cord.ConcordDb.dbo.TypeProbe"
    load_events(
        settings,
        "",
        [
            event(topic, 0, {"ID": 1}, "r", None, ROW_1, schema=SCHEMA),
            event(topic, 1, {"ID": 2}, "c", None, ROW_2),
            event(topic, 2, {"ID": 3}, "c", None, ROW_3, schema=SCHEMA),
        ],
        bronze_table="type_probe_cdc",
    )
    load_events(
        settings,
        "",
        [
            event(topic, 0, {"ID": 1}, "c", None, PRECISE_ROWS[0], schema=SCHEMA),
            event(topic, 1, {"ID": 2}, "c", None, PRECISE_ROWS[1]),
        ],
        bronze_table="type_probe_precise_cdc",
    )
    project = DbtProject(settings, project_dir=probe_project(tmp_path_factory.mktemp("project")))
    result = project.run(" ".join(PROBES), full_refresh=True)
    assert result.success, result.error or result.output[-3000:]
    return settings, project


def staged_columns(settings, relation: str) -> list[tuple[str, str]]:
    return [
        (r["column_name"], r["data_type"])
        for r in query(
            settings,
            "select column_name, data_type from information_schema.columns"
            " where table_schema = 'staging_staging' and table_name = %s order by ordinal_position",
            (relation,),
        )
    ]


def test_every_sql_server_type_has_its_postgres_type(built):
    settings, _ = built
    assert staged_columns(settings, "base_type_probe") == [(name, pg) for _, _, name, pg in TYPES] + CDC_COLUMNS


def test_every_encoding_decodes_to_the_hand_written_value(built):
    settings, _ = built
    found = {r["type_probe_id"]: r for r in query(settings, "select * from staging_staging.base_type_probe")}
    assert sorted(found) == [1, 2, 3]
    numeric = {"price", "rate", "amount", "fee"}
    for key, expected in EXPECTED.items():
        row = found[key]
        for name, value in expected.items():
            got = row[name]
            if isinstance(got, memoryview):
                got = bytes(got)
            if name in numeric and got is not None:
                got = str(got)  # the scale too: 12345678.90, not 12345678.9
            assert got == value, (key, name, got, value)


def test_precise_decimals_decode_with_the_contract_scale(built):
    settings, _ = built
    found = query(settings, "select * from staging_staging.base_type_probe_precise order by 1")
    got = {
        r["type_probe_precise_id"]: tuple(
            None if r[c] is None else str(r[c]) for c in ("price", "amount", "fee", "huge")
        )
        for r in found
    }
    assert got == PRECISE_EXPECTED
    assert {t for _, t in staged_columns(settings, "base_type_probe_precise")[1:5]} == {"numeric"}


def test_a_table_without_a_deleted_column_has_no_deleted_column(built):
    settings, _ = built
    assert "deleted" not in dict(staged_columns(settings, "base_type_probe"))


def link_rows(settings) -> list[tuple]:
    return [
        (r["product_id"], r["image_id"], r["caption"], r["deleted"], r["cdc_operation"])
        for r in query(settings, "select * from staging_staging.base_image_link order by product_id, image_id")
    ]


def link(product_id: int, image_id: int, caption: str, deleted: bool = False) -> dict:
    return {"ProductID": product_id, "ImageID": image_id, "Deleted": deleted, "Caption": caption}


LINK_TOPIC = "cord.ConcordDb.dbo.ProductImage"


def test_composite_key_updates_and_deletes(built):
    settings, project = built
    first = [
        event(LINK_TOPIC, 0, {"ProductID": 1, "ImageID": 10}, "c", None, link(1, 10, "front"), schema=SCHEMA),
        event(LINK_TOPIC, 1, {"ProductID": 1, "ImageID": 11}, "c", None, link(1, 11, "side")),
        event(LINK_TOPIC, 2, {"ProductID": 2, "ImageID": 10}, "c", None, link(2, 10, "shared")),
        event(LINK_TOPIC, 3, {"ProductID": 1, "ImageID": 10}, "u", link(1, 10, "front"), link(1, 10, "front v2")),
        event(LINK_TOPIC, 4, {"ProductID": 1, "ImageID": 11}, "d", link(1, 11, "side"), None),
        {"topic": LINK_TOPIC, "partition": 0, "offset": 5, "key": {"ProductID": 1, "ImageID": 11}, "value": None},
        event(LINK_TOPIC, 6, {"ProductID": 3, "ImageID": 12}, "c", None, link(3, 12, "soft")),
        event(LINK_TOPIC, 7, {"ProductID": 3, "ImageID": 12}, "u", link(3, 12, "soft"), link(3, 12, "soft", True)),
    ]
    load_events(
        settings, "", first, bronze_table="image_link_cdc", ingested_at=datetime(2025, 1, 1, tzinfo=timezone.utc)
    )
    result = project.run("base_image_link", full_refresh=True)
    assert result.success, result.error or result.output[-3000:]
    assert link_rows(settings) == [
        (1, 10, "front v2", False, "u"),
        (1, 11, "side", True, "d"),
        (2, 10, "shared", False, "c"),
        (3, 12, "soft", True, "u"),
    ]
    index = query(
        settings,
        "select pg_get_indexdef(indexrelid) as d from pg_index where indrelid = 'staging_staging.base_image_link'::regclass",
    )
    assert [r["d"].split(" USING ")[1] for r in index] == ["btree (product_id, image_id)"]

    # Incremental: (2, 10) changes, (1, 10)'s events leave bronze, (2, 11) is new; the other
    # keys with ProductID 1 or 2 stay as they were.
    later = datetime(2025, 1, 2, tzinfo=timezone.utc)
    second = [
        event(LINK_TOPIC, 8, {"ProductID": 2, "ImageID": 10}, "u", link(2, 10, "shared"), link(2, 10, "shared v2")),
        event(LINK_TOPIC, 9, {"ProductID": 2, "ImageID": 11}, "c", None, link(2, 11, "new"), schema=SCHEMA),
    ]
    load_events(settings, "", second, bronze_table="image_link_cdc", ingested_at=later)
    execute(settings, "delete from bronze.image_link_cdc where kafka_offset in (0, 3)")
    result = project.run("base_image_link")
    assert result.success, result.error or result.output[-3000:]
    assert link_rows(settings) == [
        (1, 11, "side", True, "d"),
        (2, 10, "shared v2", False, "u"),
        (2, 11, "new", False, "c"),
        (3, 12, "soft", True, "u"),
    ]
    assert (
        query(settings, "select count(*) as n from staging_staging.base_image_link where ingested_at = %s", (later,))[
            0
        ]["n"]
        == 2
    )


def test_an_unknown_sql_server_type_fails_naming_the_column(built, tmp_path):
    settings, _ = built
    project_dir = probe_project(tmp_path)
    (project_dir / "models" / "staging" / "base" / "base_type_probe.yml").write_text(
        yaml.safe_dump(
            contract("base_type_probe", "type_probe_cdc", ["ID"], [*TYPES, ("Shape", "geography", "shape", "")])
        ),
        encoding="utf-8",
    )
    result = DbtProject(settings, project_dir=project_dir).run("base_type_probe")
    assert not result.success
    assert "column shape has SQL Server type geography" in (result.error or "") + result.output


def test_composite_key_of_a_guid_and_a_date(built):
    settings, project = built
    topic = "cord.ConcordDb.dbo.PricePeriod"
    guid = "6F9619FF-8B86-D011-B42D-00C04FC964FF"

    def period(day: int, price: str) -> dict:
        return {"NetUID": guid, "ValidFrom": day, "Price": price}

    first = [
        event(topic, 0, {"NetUID": guid, "ValidFrom": 19675}, "c", None, period(19675, "10.00")),
        event(topic, 1, {"NetUID": guid, "ValidFrom": 19676}, "c", None, period(19676, "11.00"), schema=SCHEMA),
        event(topic, 2, {"NetUID": guid, "ValidFrom": 19675}, "u", period(19675, "10.00"), period(19675, "9.50")),
    ]
    load_events(
        settings, "", first, bronze_table="price_period_cdc", ingested_at=datetime(2025, 1, 1, tzinfo=timezone.utc)
    )
    assert project.run("base_price_period", full_refresh=True).success

    def periods() -> list[tuple]:
        return [
            (r["net_uid"], r["valid_from"], str(r["price"]))
            for r in query(settings, "select * from staging_staging.base_price_period order by valid_from")
        ]

    lowered = guid.lower()
    assert periods() == [(lowered, date(2023, 11, 14), "9.50"), (lowered, date(2023, 11, 15), "11.00")]
    execute(settings, "delete from bronze.price_period_cdc where kafka_offset = 1")
    later = [event(topic, 3, {"NetUID": guid, "ValidFrom": 19675}, "u", period(19675, "9.50"), period(19675, "9.00"))]
    load_events(
        settings, "", later, bronze_table="price_period_cdc", ingested_at=datetime(2025, 1, 2, tzinfo=timezone.utc)
    )
    result = project.run("base_price_period")
    assert result.success, result.error or result.output[-3000:]
    assert periods() == [(lowered, date(2023, 11, 14), "9.00")]


def test_the_contract_suite_expects_the_types_staging_builds(built):
    """The default suite's type map (pipeline/steps/contract_suite.py) and the macros'
    (dbt/macros/type_map.sql) are two copies of one map: the suite must expect, for every
    SQL Server type, the type the staging relation really has."""
    from pipeline.steps.contract_suite import staging_type

    settings, _ = built
    staged = dict(staged_columns(settings, "base_type_probe"))
    for _, sql_type, name, _ in TYPES:
        assert staging_type(sql_type).lower() == staged[name], (sql_type, staging_type(sql_type), staged[name])
