"""The business-rule dbt tests of dim_product (dbt/tests/ and the relationships test) on real
PostgreSQL: the marts match hand-written golden rows for the edge cases of each rule, every
dbt test passes on them, and each rule test fails, by name and alone, once the marts break it."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline.steps.transform import DbtProject
from tests.support.dbt import event_factory, execute, fresh_settings, load_events, query, read_events

pytestmark = pytest.mark.timeout(600)

SUPPLIER = "assert_dim_product_supplier_name_is_vendor_prefix"
MULTILINGUAL = "assert_dim_product_multilingual_status_follows_names"
WEIGHT = "assert_dim_product_weight_category_matches_weight"
DAYS = "assert_dim_product_days_since_match_source_timestamps"
MEASURE_UNIT = "relationships_dim_product_measure_unit_id__measure_unit_id__ref_dim_measure_unit_"
RULE_TESTS = {SUPPLIER, MULTILINGUAL, WEIGHT, DAYS, MEASURE_UNIT}
SELECT = "base_product stg_product dim_product"

# Source column overrides of each product (on make_events.product_row's defaults: names in
# all three languages, weight 0.35, Created 2023-11-14 22:13:20.123, Updated 2023-11-14
# 22:13:20.123456789, measure unit 1), each an edge of a rule.
PRODUCTS = {
    3001: dict(VendorCode="SEM1-100"),
    3002: dict(VendorCode="", NamePL="", NameUA="UA 3002", Weight=0.0),
    3003: dict(VendorCode="    ", NamePL="  ", NameUA=None, Weight=10.0),
    3004: dict(VendorCode=" SABO-7 ", NameUA="   ", Weight=10.001),
    3005: dict(VendorCode="AB", Weight=1.0),
    3006: dict(VendorCode=None, NamePL=None, NameUA=None, Weight=None),
    3007: dict(VendorCode="YP-1", Weight=0.999),
    3008: dict(
        VendorCode="ABC ",
        Weight=9.999,
        Created=1704067199999,  # 2023-12-31 23:59:59.999, the last ms of a day
        Updated=1709208000000000000,
    ),  # 2024-02-29 12:00:00 (epoch ns)
}

# What the contract says dim_product holds for them, written out by hand.
GOLDEN = [
    # product_id, supplier_name, multilingual_status, weight_category
    (3001, "SEM1", "Complete", "Light (<1kg)"),
    (3002, "Unknown", "Partial", "Missing"),
    (3003, "Unknown", "Missing", "Medium (1-10kg)"),
    (3004, "SABO", "Partial", "Heavy (>10kg)"),
    (3005, "Unknown", "Complete", "Medium (1-10kg)"),
    (3006, "Unknown", "Missing", "Missing"),
    (3007, "YP-1", "Complete", "Light (<1kg)"),
    (3008, "Unknown", "Complete", "Medium (1-10kg)"),
]
CREATED_DAY = {pid: date(2023, 11, 14) for pid in PRODUCTS} | {3008: date(2023, 12, 31)}
UPDATED_DAY = {pid: date(2023, 11, 14) for pid in PRODUCTS} | {3008: date(2024, 2, 29)}


def product_events(ev, offsets_from: int, rows: dict[int, dict], op: str = "c") -> list[dict]:
    out = []
    for n, (pid, over) in enumerate(rows.items()):
        row = ev.product_row(pid, **over)
        lsn = f"{offsets_from + n + 1:08X}:00000001:0003"
        source = ev.sqlserver_source(lsn, lsn, 1, 1700000000000 + n)
        before, after = (row, None) if op == "d" else (None, row)
        out.append(ev.record(offsets_from + n, {"ID": pid}, ev.env(op, before, after, source)))
    return out


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    settings = fresh_settings("bi_dbt_rules", tmp_path_factory.mktemp("data"))
    ev = event_factory()
    load_events(settings, "measure_unit", read_events("measure_unit_sqlserver.jsonl"))  # unit 1 active, 2 deleted
    load_events(settings, "product", product_events(ev, 0, PRODUCTS))
    project = DbtProject(settings)
    result = project.run(None, full_refresh=True)
    assert result.success, result.error or result.output[-3000:]
    return settings, project, ev


def failing(result) -> dict[str, int | None]:
    return {n.name: n.failures for n in result.failed}


def test_rule_columns_equal_golden_rows(rules):
    settings = rules[0]
    rows = query(
        settings,
        """select product_id, supplier_name, multilingual_status, weight_category,
        measure_unit_id, days_since_created, days_since_updated from marts.dim_product order by product_id""",
    )
    assert [
        (r["product_id"], r["supplier_name"], r["multilingual_status"], r["weight_category"]) for r in rows
    ] == GOLDEN
    assert {r["measure_unit_id"] for r in rows} == {1}
    today = query(settings, "select current_date as d")[0]["d"]
    assert {r["product_id"]: (r["days_since_created"], r["days_since_updated"]) for r in rows} == {
        pid: ((today - CREATED_DAY[pid]).days, (today - UPDATED_DAY[pid]).days) for pid in PRODUCTS
    }


def test_every_dbt_test_passes_on_good_data(rules):
    _, project, _ = rules
    result = project.test("dim_product")
    assert result.success, [(n.name, n.status, n.message) for n in result.failed]
    statuses = {n.name: n.status for n in result.nodes}
    assert {name: statuses.get(name) for name in RULE_TESTS} == {name: "pass" for name in RULE_TESTS}


BREAKS = [
    # (the rule test that must fail, how the marts break it, why it is a break)
    (SUPPLIER, "supplier_name = '    ' where product_id = 3003", "a blank code's 'prefix' (the old model's output)"),
    (SUPPLIER, "supplier_name = ' SAB' where product_id = 3004", "a prefix taken before trimming"),
    (SUPPLIER, "supplier_name = 'Unknown' where product_id = 3007", "a 4-character code called Unknown"),
    (SUPPLIER, "supplier_name = 'AB' where product_id = 3005", "a prefix shorter than 4"),
    (MULTILINGUAL, "multilingual_status = 'Complete' where product_id = 3002", "an empty Polish name counted"),
    (MULTILINGUAL, "multilingual_status = 'Partial' where product_id = 3003", "a blank Polish name counted"),
    (MULTILINGUAL, "multilingual_status = 'Partial' where product_id = 3001", "both names present"),
    (WEIGHT, "weight_category = 'Light (<1kg)' where product_id = 3002", "weight 0 is Missing"),
    (WEIGHT, "weight_category = 'Heavy (>10kg)' where product_id = 3003", "exactly 10 kg is Medium"),
    (WEIGHT, "weight_category = 'Medium (1-10kg)' where product_id = 3004", "10.001 kg is Heavy"),
    (WEIGHT, "weight_category = 'Light (<1kg)' where product_id = 3005", "exactly 1 kg is Medium"),
    (WEIGHT, "weight_category = 'Medium (1-10kg)' where product_id = 3007", "0.999 kg is Light"),
    (DAYS, "days_since_updated = days_since_updated + 1 where product_id = 3008", "a day-old build"),
    (DAYS, "days_since_created = days_since_updated where product_id = 3008", "the wrong timestamp"),
]


@pytest.mark.parametrize(
    ("rule", "change", "why"), BREAKS, ids=[f"{b[0].removeprefix('assert_dim_product_')}: {b[2]}" for b in BREAKS]
)
def test_rule_test_fails_alone_on_a_broken_row(rules, rule, change, why):
    settings, project, _ = rules
    assert execute(settings, f"update marts.dim_product set {change}") == 1
    try:
        broken = project.test("dim_product")
        assert failing(broken) == {rule: 1}, why
    finally:
        # An incremental run rewrites the rows that differ from the model: the marts are whole again.
        restored = project.run("dim_product")
        assert restored.success, restored.error
    assert project.test(rule).success


def test_relationships_test_fails_on_a_product_of_a_deleted_measure_unit(rules):
    settings, project, ev = rules
    orphan = {3999: dict(VendorCode="SEM1-999", MeasureUnitID=2)}  # unit 2 is deleted at the source
    load_events(settings, "product", product_events(ev, 100, orphan))
    assert project.run(SELECT).success
    assert query(settings, "select measure_unit_id from marts.dim_product where product_id = 3999") == [
        {"measure_unit_id": 2}
    ]
    result = project.test("dim_product")
    assert failing(result) == {MEASURE_UNIT: 1}

    load_events(settings, "product", product_events(ev, 200, orphan, op="d"))
    assert project.run(SELECT).success
    assert project.test("dim_product").success
