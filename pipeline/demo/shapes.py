"""What the demo tables' rows look like: the one place that knows the values of dbo.Product,
dbo.MeasureUnit and the three tables Concord queues next (names of pneumatic suspension
parts in three languages, the production profile's supplier prefixes, the demo's size and
its deliberate edge cases; prices, stock and images derived from the product id).

The columns are not declared here: dbo.Product's come from the data contract's DDL
(pipeline/demo/contract/concord_product.sqlserver.sql, a verbatim copy of the contract),
ProductPricing's, ProductAvailability's and ProductImage's from pipeline/demo/ddl/.
Every value is a function of the product id, so the demo seed, the bench producer and
the test fixtures build the same row for the same id.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipeline.demo.rows import TableModel, parse_sqlserver_ddl

# Package data, so an installed bi-console (the compose images) seeds the demo too.
CONTRACT_DDL = Path(__file__).resolve().parent / "contract" / "concord_product.sqlserver.sql"
# The SQL Server DDL of the demo's further tables, one file each, named as the source table.
DDL_DIR = Path(__file__).resolve().parent / "ddl"

# dbo.MeasureUnit has no contract file; its DDL as SQL Server would declare it.
MEASURE_UNIT_DDL = """
CREATE TABLE dbo.MeasureUnit (
    ID        bigint           NOT NULL CONSTRAINT PK_MeasureUnit PRIMARY KEY,
    NetUID    uniqueidentifier NOT NULL,
    Created   datetime         NOT NULL,
    Updated   datetime         NOT NULL,
    Deleted   bit              NOT NULL CONSTRAINT DF_MeasureUnit_Deleted DEFAULT 0,
    Name      nvarchar(100)    NOT NULL,
    NamePL    nvarchar(100)    NULL,
    NameUA    nvarchar(100)    NULL
);
"""

_MODELS: dict[str, TableModel] = {}


def product_model() -> TableModel:
    if "product" not in _MODELS:
        _MODELS["product"] = parse_sqlserver_ddl(CONTRACT_DDL.read_text(encoding="utf-8"))
    return _MODELS["product"]


def measure_unit_model() -> TableModel:
    if "measure_unit" not in _MODELS:
        _MODELS["measure_unit"] = parse_sqlserver_ddl(MEASURE_UNIT_DDL)
    return _MODELS["measure_unit"]


def ddl_model(source_table: str) -> TableModel:
    """The column model of a table whose DDL is pipeline/demo/ddl/<source_table>.sql."""
    if source_table not in _MODELS:
        _MODELS[source_table] = parse_sqlserver_ddl((DDL_DIR / f"{source_table}.sql").read_text(encoding="utf-8"))
    return _MODELS[source_table]


# -- the production profile (contract README) and the demo's figures --------------------------
# Supplier prefixes of the 115 production products.
SUPPLIER_PREFIXES = [
    ("SEM1", 50),
    ("SABO", 41),
    ("WBR0", 6),
    ("YP-1", 4),
    ("", 2),
    ("0340", 2),
    ("YP-6", 2),
    ("RL35", 1),
    ("9025", 1),
    ("4213", 1),
    ("BPW0", 1),
    ("SAF1", 1),
    ("MB-9", 1),
    ("KLM2", 1),
    ("TRW1", 1),
]
PREFIX_CYCLE = [prefix for prefix, count in SUPPLIER_PREFIXES for _ in range(count)]
ACTIVE_PRODUCTS = 115
SOFT_DELETED = 8
HARD_DELETED = 7
TARGET_EVENTS = 31_970  # the runbook's product topic
HAS_ANALOGUE = 77
RANDOM_IDS = range(7_800_000, 7_899_999)
BASE_TIME = datetime(2025, 10, 1, 8, 0, 0)

# (Russian, Polish, Ukrainian) names of pneumatic suspension and chassis parts.
PART_NAMES = [
    ("Пневмоподушка", "Resor pneumatyczny", "Пневмоподушка"),
    ("Пневмоподушка кабины", "Miech kabiny", "Пневмоподушка кабіни"),
    ("Пневморессора", "Poduszka powietrzna", "Пневморесора"),
    ("Втулка стабилизатора", "Tuleja stabilizatora", "Втулка стабілізатора"),
    ("Клапан уровня пола", "Zawór poziomujący", "Клапан рівня підлоги"),
    ("Сайлентблок", "Tuleja metalowo-gumowa", "Сайлентблок"),
    ("Амортизатор кабины", "Amortyzator kabiny", "Амортизатор кабіни"),
    ("Тормозная камера", "Siłownik hamulcowy", "Гальмівна камера"),
]
VEHICLES = [
    "MAN TGA",
    "DAF XF105",
    "Scania R",
    "Volvo FH",
    "Mercedes Actros",
    "Iveco Stralis",
    "Renault Magnum",
    "SAF Intra",
    "BPW ECO Plus",
    "Schmitz Cargobull",
]

# (ID, Name, NamePL, NameUA)
MEASURE_UNITS = [
    (1, "шт", "szt", "шт"),
    (2, "кг", "kg", "кг"),
    (3, "м", "m", "м"),
    (4, "л", "l", "л"),
    (5, "комплект", "komplet", "комплект"),
    (6, "пара", "para", "пара"),
    (7, "упаковка", "opakowanie", "упаковка"),
]

# Products the demo seeds besides the profile-shaped ones, one per rule of dim_product
# (dbt/models/marts/dim_product.sql), so that the marts hold every category and the
# end-to-end tests can compare them with hand-written rows. They stay active and take
# their prefixes out of SUPPLIER_PREFIXES, so the supplier distribution is unchanged.
CASES: dict[int, dict[str, Any]] = {
    7_960_001: {"VendorCode": "SEM1-P1", "NameUA": None, "HasAnalogue": True},  # Partial: no Ukrainian name
    7_960_002: {"VendorCode": "SABO-P2", "NamePL": "   ", "HasAnalogue": True},  # Partial: blank Polish name
    7_960_003: {"VendorCode": "SEM1-M3", "NamePL": None, "NameUA": "", "HasAnalogue": True},  # Missing
    7_960_004: {"VendorCode": "WBR0-W4", "Weight": 4.2, "HasAnalogue": True},  # Medium
    7_960_005: {"VendorCode": "YP-1-W5", "Weight": 10.0, "HasAnalogue": False},  # Medium: exactly 10 kg
    7_960_006: {"VendorCode": "SABO-W6", "Weight": 12.5, "HasAnalogue": False},  # Heavy
    7_960_007: {"VendorCode": "0340-W7", "Weight": 0.0, "HasAnalogue": False},  # Missing weight: zero
    7_960_008: {"VendorCode": "", "Weight": None, "HasAnalogue": False},  # Missing weight: null
    7_960_009: {"VendorCode": "YP-6-S9", "IsForSale": True, "HasAnalogue": True},  # for sale
    7_960_010: {"VendorCode": "SEM1-N10", "IsForWeb": False, "HasAnalogue": False},  # not for web
}


def _digest(product_id: int, salt: bytes) -> bytes:
    return hashlib.blake2b(salt + product_id.to_bytes(8, "big"), digest_size=16).digest()


def net_uid(product_id: int, salt: bytes = b"net") -> str:
    return str(uuid.UUID(bytes=_digest(product_id, salt), version=4))


def product_row(
    product_id: int, created: datetime, updated: datetime | None = None, *, prefix: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """A dbo.Product row shaped like production (Light, Complete, for web, not for sale),
    every value derived from the id; `overrides` set columns by name."""
    ru, pl, ua = PART_NAMES[product_id % len(PART_NAMES)]
    vehicle = VEHICLES[(product_id // 7) % len(VEHICLES)]
    model = f"{product_id % 9 + 1}{'ABCDEKMNPT'[product_id % 10]}{100 + product_id % 900}"
    if prefix is None:
        prefix = PREFIX_CYCLE[product_id % len(PREFIX_CYCLE)]
    vendor = f"{prefix}{10000 + product_id % 90000}" if prefix else ""
    stroke = 150 + product_id % 250
    original = str(1000000 + product_id)
    name = f"{ru} {model}"
    description = (
        f"{ru} для подвески {vehicle}, модель {model}. Оригинальный номер {original}, "
        f"рабочее давление 8 бар, ход {stroke} мм, поставляется в сборе с креплениями."
    )
    description_pl = (
        f"{pl} do zawieszenia {vehicle}, model {model}. Numer oryginalny {original}, "
        f"ciśnienie robocze 8 bar, skok {stroke} mm, dostarczany z mocowaniami."
    )
    description_ua = (
        f"{ua} для підвіски {vehicle}, модель {model}. Оригінальний номер {original}, "
        f"робочий тиск 8 бар, хід {stroke} мм, постачається в зборі з кріпленнями."
    )
    size = f"{stroke}x{150 + (product_id // 3) % 250}"
    row = {
        "ID": product_id,
        "NetUID": net_uid(product_id),
        "Created": created,
        "Updated": updated or created,
        "Deleted": False,
        "Name": name,
        "VendorCode": vendor,
        "Description": description,
        "Size": size,
        "Weight": round(0.05 + (product_id % 300) / 1000, 3),  # the profile's maximum is 0.35 kg
        "Volume": None,
        "Image": None,
        "MainOriginalNumber": original,
        "MeasureUnitID": 1 + product_id % 7,
        "Top": ("", "TOP", None)[product_id % 3],
        "NamePL": f"{pl} {model}",
        "DescriptionPL": description_pl,
        "NotesPL": None,
        "SynonymsPL": f"{pl.lower()}, {vehicle.lower()}",
        "NameUA": f"{ua} {model}",
        "DescriptionUA": description_ua,
        "NotesUA": None,
        "SynonymsUA": f"{ua.lower()}, {vehicle.lower()}",
        "SearchName": name.lower(),
        "SearchDescription": description.lower(),
        "SearchSize": size,
        "SearchVendorCode": vendor.lower(),
        "SearchNamePL": f"{pl} {model}".lower(),
        "SearchDescriptionPL": None,
        "SearchSynonymsPL": None,
        "SearchNameUA": f"{ua} {model}".lower(),
        "SearchDescriptionUA": None,
        "SearchSynonymsUA": None,
        "HasAnalogue": product_id % 3 != 0,
        "HasImage": False,
        "IsForSale": False,
        "IsForWeb": True,
        "IsForZeroSale": False,
        "HasComponent": False,
        "UCGFEA": "8708801000",
        "Standard": None,
        "OrderStandard": None,
        "PackingStandard": None,
        "SourceAmgID": _digest(product_id, b"amg"),
        "SourceFenixID": None,
        "ParentAmgID": _digest(product_id // 10, b"amg-parent"),
        "ParentFenixID": None,
        "SourceAmgCode": 100000 + product_id % 900000,
        "SourceFenixCode": None,
    }
    unknown = set(overrides) - set(row)
    if unknown:
        raise KeyError(f"dbo.Product has no column {sorted(unknown)}")
    row.update(overrides)
    for column, searched in (
        ("VendorCode", "SearchVendorCode"),
        ("NamePL", "SearchNamePL"),
        ("NameUA", "SearchNameUA"),
    ):
        if column in overrides and searched not in overrides:
            row[searched] = overrides[column].lower() if overrides[column] is not None else None
    return row


def product_edit(revision: int) -> dict[str, Any]:
    """The columns one edit of the demo's change history sets (texts only: no computed column moves)."""
    rev = f"rev {revision}"
    return {
        "Description": f"Описание {rev}",
        "DescriptionPL": f"Opis {rev}",
        "SearchDescription": f"описание {rev}",
        "NotesUA": f"Примітка {rev}",
    }


def product_change(revision: int, weight: float) -> dict[str, Any]:
    """The columns one of `demo changes`' edits sets."""
    return {"Weight": weight, "Description": f"Описание изм. {revision}"}


def measure_unit_rows() -> list[dict[str, Any]]:
    created = BASE_TIME - timedelta(days=2000)
    return [
        {
            "ID": unit_id,
            "NetUID": net_uid(unit_id, b"measure-unit"),
            "Created": created,
            "Updated": created,
            "Deleted": False,
            "Name": ru,
            "NamePL": pl,
            "NameUA": ua,
        }
        for unit_id, ru, pl, ua in MEASURE_UNITS
    ]


# -- the tables Concord queues next: prices, stock, images -------------------------------------
STORAGES = (1, 2)  # every product is stocked in two storages
CURRENCY = "PLN"
VAT = Decimal("1.23")


def pricing_row(pricing_id: int, product_id: int, created: datetime) -> dict[str, Any]:
    """dbo.ProductPricing: the product's retail price, in decimal(18,2) and with VAT in money."""
    price = Decimal(150 + product_id % 850) + Decimal(product_id % 100) / 100
    return {
        "ID": pricing_id,
        "NetUID": net_uid(pricing_id, b"pricing"),
        "Created": created,
        "Updated": created,
        "Deleted": False,
        "ProductID": product_id,
        "PricingTypeID": 1,
        "Price": price,
        "PriceWithVat": (price * VAT).quantize(Decimal("0.0001")),
        "Discount": Decimal("5.0000") if product_id % 4 == 0 else None,
        "CurrencyCode": CURRENCY,
        "ValidFrom": date(2025, 1, 1) + timedelta(days=product_id % 200),
    }


def availability_row(availability_id: int, product_id: int, storage_id: int, created: datetime) -> dict[str, Any]:
    """dbo.ProductAvailability: stock in one storage; the count's time in datetime2(7), the
    next delivery's in datetimeoffset (the storages are in +01:00 and +02:00)."""
    offset = timezone(timedelta(hours=storage_id))
    return {
        "ID": availability_id,
        "NetUID": net_uid(availability_id, b"availability"),
        "Created": created,
        "Updated": created,
        "Deleted": False,
        "ProductID": product_id,
        "StorageID": storage_id,
        "Amount": (product_id * storage_id) % 40,
        "ReservedAmount": product_id % 3 or None,
        "LastCountedAt": created + timedelta(hours=6, microseconds=product_id % 1_000_000),
        "ExpectedAt": datetime(2025, 10, 10, 9, 30, tzinfo=offset) + timedelta(days=product_id % 14)
        if product_id % 5
        else None,
    }


def image_row(product_id: int, image_id: int, sort_order: int, created: datetime) -> dict[str, Any]:
    """dbo.ProductImage: one link of the product to an image, keyed by both ids."""
    return {
        "ProductID": product_id,
        "ImageID": image_id,
        "SortOrder": sort_order,
        "IsMain": sort_order == 1,
        "ImageUrl": f"https://img.concord.example/products/{product_id}/{image_id}.jpg",
        "Checksum": _digest(image_id, b"image"),
        "Created": created,
        "Updated": created,
        "Deleted": False,
    }


def images_of(product_id: int) -> int:
    """How many images a product has: 1 to 3."""
    return 1 + product_id % 3
