"""Source contracts: names, the SQL Server DDL parser, the Debezium schema reader and the
agreed YAML file. Expected values are written by hand from the DDL and the format note."""

from __future__ import annotations

import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from pipeline.config.contracts import (
    ContractColumn,
    ContractError,
    SourceContract,
    contract_from_ddl,
    contract_from_topic,
    contract_path,
    find_contract,
    load_contract,
    render_contract,
    snake_case,
    write_contract,
)
from tests.support.shared import shared_file

# The 49 staging names of ConcordDb.dbo.Product, in source order, as the hand-written
# base_product model names them.
PRODUCT_NAMES = [
    "product_id", "net_uid", "created", "updated", "deleted", "name", "vendor_code", "description",
    "size", "weight", "volume", "image", "main_original_number", "measure_unit_id", "top", "name_pl",
    "description_pl", "notes_pl", "synonyms_pl", "name_ua", "description_ua", "notes_ua", "synonyms_ua",
    "search_name", "search_description", "search_size", "search_vendor_code", "search_name_pl",
    "search_description_pl", "search_synonyms_pl", "search_name_ua", "search_description_ua",
    "search_synonyms_ua", "has_analogue", "has_image", "is_for_sale", "is_for_web", "is_for_zero_sale",
    "has_component", "ucgfea", "standard", "order_standard", "packing_standard", "source_amg_id",
    "source_fenix_id", "parent_amg_id", "parent_fenix_id", "source_amg_code", "source_fenix_code",
]  # fmt: skip


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("NetUID", "net_uid"),
        ("MeasureUnitID", "measure_unit_id"),
        ("NamePL", "name_pl"),
        ("SearchNameUA", "search_name_ua"),
        ("HasAnalogue", "has_analogue"),
        ("UCGFEA", "ucgfea"),
        ("SourceAmgID", "source_amg_id"),
        ("ID", "product_id"),
        ("Top", "top"),
        ("Valid From", "valid_from"),
        ("2ndName", "c_2nd_name"),
    ],
)
def test_snake_case(source, expected):
    assert snake_case(source, "product") == expected


def test_product_ddl_gives_49_columns_keyed_by_id():
    contract = contract_from_ddl(shared_file("contract/concord_product.sqlserver.sql").read_text(), "product")
    assert contract.source == "ConcordDb.dbo.Product"
    assert contract.bronze_table == "product_cdc"
    assert contract.key_columns == ["ID"] and contract.key_names == ["product_id"]
    assert len(contract.columns) == 49
    assert [c.name for c in contract.columns] == PRODUCT_NAMES
    by_source = {c.source_column: c for c in contract.columns}
    expected = {
        "ID": ("bigint", False),
        "NetUID": ("uniqueidentifier", False),
        "Created": ("datetime", False),
        "Deleted": ("bit", False),
        "Name": ("nvarchar(500)", False),
        "Description": ("nvarchar(max)", True),
        "Weight": ("float", True),
        "Top": ("nvarchar(10)", True),
        "HasAnalogue": ("bit", False),
        "SourceAmgID": ("varbinary(16)", True),
        "SourceFenixCode": ("bigint", True),
    }
    assert {k: (by_source[k].source_type, by_source[k].nullable) for k in expected} == expected
    # A trailing comment on the column's line documents it.
    assert by_source["VendorCode"].description == "first 4 characters: supplier prefix"
    assert by_source["Weight"].description == "kg"
    assert by_source["Name"].description is None  # the section comment above it is not its own


LINK_DDL = """
-- ProductAvailability: one row per product and storage.
CREATE TABLE [ConcordDb].[dbo].[ProductAvailability] (
    [ProductID]   bigint            NOT NULL,
    [StorageID]   int               NOT NULL,
    [Amount]      decimal(18, 2)    NOT NULL CONSTRAINT DF_PA_Amount DEFAULT (0),
    [Price]       money             NULL,   -- per unit
    [Small]       smallmoney        NULL,
    [Checked]     datetime2(7)      NOT NULL,
    [CheckedAt]   datetimeoffset(3) NULL,
    [Ratio]       numeric(5)        NULL,
    [Code]        char(4)           NULL,
    [Blob]        image             NULL,
    [Version]     rowversion        NOT NULL,
    [Old]         timestamp         NULL,
    [Notes]       ntext             NULL,
    [Doc]         xml               NULL,
    [Half]        real              NULL,
    [Tiny]        tinyint           NULL,
    [At]          time(3)           NULL,
    CONSTRAINT PK_ProductAvailability PRIMARY KEY CLUSTERED ([ProductID] ASC, [StorageID] ASC)
);
GO
EXEC sys.sp_cdc_enable_table @source_schema = N'dbo', @source_name = N'ProductAvailability', @role_name = NULL;
"""


def test_a_table_level_composite_key_and_the_types_as_written():
    contract = contract_from_ddl(LINK_DDL, "product_availability")
    assert contract.source == "ConcordDb.dbo.ProductAvailability"
    assert contract.key_columns == ["ProductID", "StorageID"]
    assert contract.key_names == ["product_id", "storage_id"]
    assert [(c.source_column, c.source_type, c.nullable) for c in contract.columns] == [
        ("ProductID", "bigint", False),
        ("StorageID", "int", False),
        ("Amount", "decimal(18,2)", False),
        ("Price", "money", True),
        ("Small", "smallmoney", True),
        ("Checked", "datetime2(7)", False),
        ("CheckedAt", "datetimeoffset(3)", True),
        ("Ratio", "numeric(5)", True),
        ("Code", "char(4)", True),
        ("Blob", "image", True),
        ("Version", "rowversion", False),
        ("Old", "timestamp", True),
        ("Notes", "ntext", True),
        ("Doc", "xml", True),
        ("Half", "real", True),
        ("Tiny", "tinyint", True),
        ("At", "time(3)", True),
    ]
    assert contract.column("Price").description == "per unit"


@pytest.mark.parametrize(
    ("ddl", "keys"),
    [
        ("CREATE TABLE t (A int NOT NULL, B int NOT NULL, PRIMARY KEY (B, A))", ["B", "A"]),
        ("CREATE TABLE t (A int NOT NULL, B int, CONSTRAINT PK_t PRIMARY KEY NONCLUSTERED (A DESC))", ["A"]),
        ("CREATE TABLE t (A int PRIMARY KEY NONCLUSTERED, B int)", ["A"]),
        ("create table t (a uniqueidentifier primary key clustered, b int)", ["a"]),
    ],
)
def test_primary_key_forms(ddl, keys):
    contract = contract_from_ddl(ddl, "t")
    assert contract.key_columns == keys
    assert all(not c.nullable for c in contract.columns if c.source_column in keys)


@pytest.mark.parametrize(
    ("ddl", "message"),
    [
        ("CREATE TABLE t (A int, B int)", "declares no PRIMARY KEY"),
        ("SELECT 1", "has no CREATE TABLE"),
        ("CREATE TABLE t (A int PRIMARY KEY, B int", "'t': the DDL is not SQL Server SQL"),
        ("CREATE TABLE t (A int, CONSTRAINT PK PRIMARY KEY (Z))", "PRIMARY KEY names Z"),
    ],
)
def test_a_ddl_that_is_not_a_contract_is_refused_naming_the_table(ddl, message):
    with pytest.raises(ContractError, match=message):
        contract_from_ddl(ddl, "t")


def _field(name, type_, optional=True, semantic=None, **parameters):
    out = {"type": type_, "optional": optional, "field": name}
    if semantic:
        out["name"] = semantic
    if parameters:
        # connect_decimal_precision -> connect.decimal.precision, __debezium_... -> __debezium.source...
        out["parameters"] = {
            ("__" if k.startswith("__") else "") + k.lstrip("_").replace("_", "."): str(v)
            for k, v in parameters.items()
        }
    return out


def _envelope(fields):
    row = {"type": "struct", "fields": fields, "optional": True, "name": "cord.ConcordDb.dbo.ProductPricing.Value"}
    return {
        "type": "struct",
        "name": "cord.ConcordDb.dbo.ProductPricing.Envelope",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {"type": "struct", "fields": [], "optional": False, "name": "io.debezium.connector.sqlserver.Source", "field": "source"},
            {"type": "string", "optional": False, "field": "op"},
        ],
    }  # fmt: skip


KEY_SCHEMA = {
    "type": "struct",
    "name": "cord.ConcordDb.dbo.ProductPricing.Key",
    "fields": [
        {"type": "int64", "optional": False, "field": "ProductID"},
        {"type": "int32", "optional": False, "field": "PricingID"},
    ],
}


def test_a_topic_schema_gives_the_types_it_can_and_says_where_it_guessed():
    schema = _envelope(
        [
            _field("ProductID", "int64", optional=False),
            _field("PricingID", "int32", optional=False),
            _field("Price", "bytes", semantic="org.apache.kafka.connect.data.Decimal", scale=2, connect_decimal_precision=18),
            _field("ListPrice", "bytes", semantic="org.apache.kafka.connect.data.Decimal", scale=4, connect_decimal_precision=19),
            _field("ValidFrom", "int64", optional=False, semantic="io.debezium.time.NanoTimestamp"),
            _field("Created", "int64", semantic="io.debezium.time.Timestamp"),
            _field("ChangedAt", "string", semantic="io.debezium.time.ZonedTimestamp"),
            _field("Day", "int32", semantic="io.debezium.time.Date"),
            _field("NetUID", "string", semantic="io.debezium.data.Uuid"),
            _field("Deleted", "boolean", optional=False),
            _field("Note", "string"),
            _field("Small", "int16"),
            _field("Ratio", "double"),  # the JSON converter's name of FLOAT64
            _field("Half", "float"),  # and of FLOAT32
        ]
    )  # fmt: skip
    contract = contract_from_topic(
        schema, "product_pricing", topic="cord.ConcordDb.dbo.ProductPricing", key_schema=KEY_SCHEMA
    )
    assert contract.source == "ConcordDb.dbo.ProductPricing"
    assert contract.bronze_table == "product_pricing_cdc"
    assert contract.key_columns == ["ProductID", "PricingID"]
    got = {c.source_column: (c.source_type, c.nullable, c.note is not None) for c in contract.columns}
    assert got == {
        "ProductID": ("bigint", False, False),
        "PricingID": ("int", False, False),
        "Price": ("decimal(18,2)", True, True),  # numeric(18,2) looks the same
        "ListPrice": ("decimal(19,4)", True, True),  # money looks the same
        "ValidFrom": ("datetime2(7)", False, False),
        "Created": ("datetime", True, True),  # smalldatetime, datetime2(0..3) look the same
        "ChangedAt": ("datetimeoffset(7)", True, True),
        "Day": ("date", True, False),
        "NetUID": ("uniqueidentifier", True, False),
        "Deleted": ("bit", False, False),
        "Note": ("nvarchar(max)", True, True),
        "Small": ("smallint", True, True),
        "Ratio": ("float", True, True),
        "Half": ("real", True, False),
    }
    assert "money" in contract.column("ListPrice").note
    assert contract.column("Price").note.startswith("guessed from the topic's schema: ")
    assert contract.note.startswith("read from the Debezium schema of topic cord.ConcordDb.dbo.ProductPricing; 7 of 14")


def test_source_type_parameters_make_every_type_exact():
    schema = _envelope(
        [
            _field("ID", "int64", optional=False, __debezium_source_column_type="BIGINT"),
            _field("Name", "string", __debezium_source_column_type="NVARCHAR", __debezium_source_column_length=500),
            _field("Notes", "string", __debezium_source_column_type="NVARCHAR", __debezium_source_column_length=2147483647),
            _field("Code", "string", __debezium_source_column_type="CHAR", __debezium_source_column_length=4),
            _field("Price", "bytes", semantic="org.apache.kafka.connect.data.Decimal", scale=4, __debezium_source_column_type="MONEY", __debezium_source_column_length=19, __debezium_source_column_scale=4),
            _field("Amount", "bytes", semantic="org.apache.kafka.connect.data.Decimal", scale=2, __debezium_source_column_type="DECIMAL", __debezium_source_column_length=18, __debezium_source_column_scale=2),
            _field("At", "int64", semantic="io.debezium.time.Timestamp", __debezium_source_column_type="DATETIME2", __debezium_source_column_length=23, __debezium_source_column_scale=3),
            _field("Seen", "int64", semantic="io.debezium.time.Timestamp", __debezium_source_column_type="SMALLDATETIME"),
        ]
    )  # fmt: skip
    contract = contract_from_topic(schema, "t", topic="cord.ConcordDb.dbo.T", key_columns=["ID"])
    assert [(c.source_column, c.source_type, c.note) for c in contract.columns] == [
        ("ID", "bigint", None),
        ("Name", "nvarchar(500)", None),
        ("Notes", "nvarchar(max)", None),
        ("Code", "char(4)", None),
        ("Price", "money", None),
        ("Amount", "decimal(18,2)", None),
        ("At", "datetime2(3)", None),
        ("Seen", "smalldatetime", None),
    ]
    assert contract.note == "read from the Debezium schema of topic cord.ConcordDb.dbo.T"


def test_a_topic_schema_without_a_row_or_a_key_is_refused():
    with pytest.raises(ContractError, match="not a Debezium envelope"):
        contract_from_topic({"type": "struct", "fields": []}, "t", topic="x", key_columns=["ID"])
    with pytest.raises(ContractError, match="no key schema"):
        contract_from_topic(_envelope([_field("ID", "int64")]), "t", topic="x")
    with pytest.raises(ContractError, match="ID2 are not fields"):
        contract_from_topic(_envelope([_field("ID", "int64")]), "t", topic="x", key_columns=["ID2"])


SMALL = SourceContract(
    source="ConcordDb.dbo.ProductPricing",
    bronze_table="product_pricing_cdc",
    key_columns=["ProductID", "PricingID"],
    columns=[
        ContractColumn("ProductID", "product_id", "bigint", False),
        ContractColumn("PricingID", "pricing_id", "int", False),
        ContractColumn("Price", "price", "decimal(18,2)", True, description="Net price: VAT excluded."),
        ContractColumn("On", "on", "bit", True, note="guessed"),
    ],
)

# The agreed layout (notes/contract-format.md), written out by hand.
SMALL_YAML = textwrap.dedent(
    """\
    version: 2
    models:
      - name: base_product_pricing
        description: "The latest state of every row of ConcordDb.dbo.ProductPricing, typed and snake_cased from its source contract (this file); hard deletes are kept."
        config:
          meta:
            source_contract:
              source: ConcordDb.dbo.ProductPricing
              bronze_table: product_pricing_cdc
              key_columns: [ProductID, PricingID]
        columns:
          - name: product_id
            description: "ProductID (bigint) at the source."
            meta:
              source_column: ProductID
              source_type: bigint
              nullable: false
            data_tests: [not_null]
          - name: pricing_id
            description: "PricingID (int) at the source."
            meta:
              source_column: PricingID
              source_type: int
              nullable: false
            data_tests: [not_null]
          - name: price
            description: "Net price: VAT excluded."
            meta:
              source_column: Price
              source_type: decimal(18,2)
              nullable: true
          - name: "on"
            description: "On (bit) at the source."
            meta:
              source_column: "On"
              source_type: bit
              nullable: true
              note: "guessed"
    """
)


def test_the_file_is_the_agreed_yaml_and_reads_back(tmp_path):
    assert render_contract("product_pricing", SMALL) == SMALL_YAML
    path = write_contract(tmp_path, "product_pricing", SMALL)
    assert path == tmp_path / "models" / "staging" / "base" / "base_product_pricing.yml"
    reread = load_contract(tmp_path, "product_pricing")
    assert reread.columns[2] == SMALL.columns[2]
    described = [
        replace(c, description=c.description or f"{c.source_column} ({c.source_type}) at the source.")
        for c in SMALL.columns
    ]
    assert reread == replace(SMALL, columns=described, description=reread.description)
    assert reread.description.startswith("The latest state of every row of ConcordDb.dbo.ProductPricing")
    data = yaml.safe_load(path.read_text())
    column = data["models"][0]["columns"][3]
    assert column["name"] == "on" and column["meta"]["source_column"] == "On"  # not YAML's boolean
    with pytest.raises(ContractError, match="exists"):
        write_contract(tmp_path, "product_pricing", SMALL)


def test_a_product_contract_round_trips(tmp_path):
    contract = contract_from_ddl(shared_file("contract/concord_product.sqlserver.sql").read_text(), "product")
    write_contract(tmp_path, "product", contract)
    reread = load_contract(tmp_path, "product")
    assert (reread.source, reread.bronze_table, reread.key_columns) == ("ConcordDb.dbo.Product", "product_cdc", ["ID"])
    fields = [(c.source_column, c.name, c.source_type, c.nullable) for c in reread.columns]
    assert fields == [(c.source_column, c.name, c.source_type, c.nullable) for c in contract.columns]
    assert reread.column("Weight").description == "kg"  # the DDL's comment
    assert reread.column("Size").description == "Size (nvarchar(100)) at the source."  # none: a default


def test_reading_a_missing_or_broken_contract_names_the_file(tmp_path):
    assert find_contract(tmp_path, "nothing") is None
    with pytest.raises(ContractError, match="base_nothing.yml does not exist"):
        load_contract(tmp_path, "nothing")
    path = contract_path(tmp_path, "broken")
    path.parent.mkdir(parents=True)
    path.write_text("version: 2\nmodels:\n  - name: base_broken\n    columns: []\n")
    with pytest.raises(ContractError, match=r"base_broken.yml: model base_broken has no config.meta.source_contract"):
        load_contract(tmp_path, "broken")
    path.write_text(
        SMALL_YAML.replace("base_product_pricing", "base_broken").replace(
            "key_columns: [ProductID, PricingID]", "key_columns: [Nope]"
        )
    )
    with pytest.raises(ContractError, match="key column.s. Nope are not among its columns"):
        load_contract(tmp_path, "broken")


def test_dbt_column_meta_under_config_is_read_too(tmp_path):
    # dbt 1.10 moves a column's meta under `config:`; the dbt side's macro reads both places.
    text = SMALL_YAML.replace(
        "            meta:\n              source_column: Price",
        "            config:\n              meta:\n                source_column: Price",
    ).replace(
        "              source_type: decimal(18,2)\n              nullable: true",
        "                source_type: decimal(18,2)\n                nullable: true",
    )
    path = contract_path(tmp_path, "product_pricing")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert load_contract(tmp_path, "product_pricing").column("Price").source_type == "decimal(18,2)"


DEMO_DDL = Path(__file__).resolve().parents[2] / "pipeline" / "demo" / "ddl"


def test_the_demo_tables_ddl():
    # The demo's next Concord tables (pipeline/demo/ddl/), written out by hand from their DDL.
    pricing = contract_from_ddl((DEMO_DDL / "ProductPricing.sql").read_text(), "product_pricing")
    assert (pricing.source, pricing.key_columns) == ("ConcordDb.dbo.ProductPricing", ["ID"])
    assert [(c.name, c.source_type, c.nullable) for c in pricing.columns] == [
        ("product_pricing_id", "bigint", False),
        ("net_uid", "uniqueidentifier", False),
        ("created", "datetime", False),
        ("updated", "datetime", False),
        ("deleted", "bit", False),
        ("product_id", "bigint", False),
        ("pricing_type_id", "int", False),
        ("price", "decimal(18,2)", False),
        ("price_with_vat", "money", True),
        ("discount", "smallmoney", True),
        ("currency_code", "char(3)", False),
        ("valid_from", "date", False),
    ]
    availability = contract_from_ddl((DEMO_DDL / "ProductAvailability.sql").read_text(), "product_availability")
    assert availability.key_columns == ["ID"]
    types = {c.source_column: c.source_type for c in availability.columns}
    assert (types["ReservedAmount"], types["LastCountedAt"], types["ExpectedAt"]) == (
        "smallint",
        "datetime2(7)",
        "datetimeoffset(7)",
    )
    image = contract_from_ddl((DEMO_DDL / "ProductImage.sql").read_text(), "product_image")
    assert image.key_columns == ["ProductID", "ImageID"] and image.key_names == ["product_id", "image_id"]
    assert [(c.source_column, c.source_type, c.nullable) for c in image.columns][:6] == [
        ("ProductID", "bigint", False),
        ("ImageID", "bigint", False),
        ("SortOrder", "tinyint", False),
        ("IsMain", "bit", False),
        ("ImageUrl", "nvarchar(500)", True),
        ("Checksum", "binary(16)", True),
    ]


def test_ddl_as_management_studio_scripts_it():
    # "Script Table as > CREATE To": brackets everywhere, SET options, COLLATE, WITH (...) ON [PRIMARY], GO.
    ddl = textwrap.dedent(
        """\
        SET ANSI_NULLS ON
        GO
        SET QUOTED_IDENTIFIER ON
        GO
        CREATE TABLE [dbo].[Storage](
            [ID] [bigint] IDENTITY(1,1) NOT NULL,
            [Name] [nvarchar](max) COLLATE Cyrillic_General_CI_AS NULL,
            [Capacity] [decimal] (18, 4) NULL,
         CONSTRAINT [PK_Storage] PRIMARY KEY CLUSTERED
        (
            [ID] ASC
        )WITH (PAD_INDEX = OFF, STATISTICS_NORECOMPUTE = OFF) ON [PRIMARY]
        ) ON [PRIMARY] TEXTIMAGE_ON [PRIMARY]
        GO
        """
    )
    contract = contract_from_ddl(ddl, "storage")
    assert contract.source == "ConcordDb.dbo.Storage" and contract.key_columns == ["ID"]
    assert [(c.name, c.source_type, c.nullable) for c in contract.columns] == [
        ("storage_id", "bigint", False),
        ("name", "nvarchar(max)", True),
        ("capacity", "decimal(18,4)", True),
    ]


def test_computed_columns_are_left_out_and_unreadable_syntax_is_named():
    contract = contract_from_ddl("CREATE TABLE t (A int PRIMARY KEY, B AS (A + 1) PERSISTED, C bit)", "t")
    assert [c.source_column for c in contract.columns] == ["A", "C"]  # CDC captures a computed column as NULL
    with pytest.raises(ContractError, match="'t': sqlglot could not read its CREATE TABLE"):
        contract_from_ddl("CREATE TABLE t (A int PRIMARY KEY) FOOBAR_ON [X]", "t")
