"""Superset's provisioning over the whole shipped config (five tables), without a real Superset:
`provision()` runs against an in-memory stand-in of the REST endpoints it calls, and the datasets
it creates are held to what validation covers (each table's suites or source contract), not to
a hand-written list. The real-Superset tier (tests/superset) provisions two tables."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pipeline.steps.contract_suite import suite_names
from pipeline.superset import provision as provisioning
from pipeline.superset.dashboards import DASHBOARDS
from tests.support.settings import make_settings

SHIPPED = ["product", "measure_unit", "product_pricing", "product_availability", "product_image"]


class InMemorySuperset:
    """The endpoints provision() calls: list-find, get, post and put of databases, datasets,
    dashboards and charts, each object by id. A dataset's columns are every column a managed
    chart needs, so every chart is made."""

    RESOURCES = ("database", "dataset", "dashboard", "chart")

    def __init__(self) -> None:
        self.objects: dict[str, dict[int, dict[str, Any]]] = {r: {} for r in self.RESOURCES}
        self.created: list[tuple[str, dict[str, Any]]] = []
        self.next_id = 1
        self.base_url = "http://superset.invalid"

    def __enter__(self) -> InMemorySuperset:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _path(self, path: str) -> tuple[str, int | None, str | None]:
        match = re.fullmatch(r"/api/v1/(\w+)/(?:(\d+)/?(\w+)?)?", path)
        assert match, path
        resource, number, tail = match.groups()
        assert resource in self.RESOURCES, path
        return resource, int(number) if number else None, tail

    def find(self, resource: str, column: str, value: Any, **_: Any) -> list[dict[str, Any]]:
        return [dict(o) for o in self.objects[resource].values() if o.get(column) == value]

    def get(self, path: str, **_: Any) -> Any:
        resource, number, tail = self._path(path)
        if resource == "dashboard" and tail == "charts":
            charts = self.objects["chart"].values()
            return {"result": [c for c in charts if number in [d["id"] for d in c["dashboards"]]]}
        assert number is not None and tail is None, path
        found = dict(self.objects[resource][number])
        if resource == "dataset":
            found["columns"] = [
                {"column_name": c} for spec in DASHBOARDS for chart in spec.charts for c in chart.requires
            ]
        return {"result": found}

    def post(self, path: str, payload: Any = None, **_: Any) -> Any:
        resource, number, _tail = self._path(path)
        assert number is None, path
        row = {**payload, "id": self.next_id}
        self.next_id += 1
        if resource == "dataset":
            row["database"] = {"id": payload["database"]}
        if resource == "chart":
            row["dashboards"] = [{"id": d} for d in payload.get("dashboards", [])]
        self.objects[resource][row["id"]] = row
        self.created.append((resource, row))
        return {"id": row["id"]}

    def put(self, path: str, payload: Any = None, **_: Any) -> Any:
        resource, number, tail = self._path(path)
        assert number in self.objects[resource], path
        if tail is None and payload:
            update = dict(payload)
            if resource == "chart":
                update["dashboards"] = [{"id": d} for d in payload.get("dashboards", [])]
            self.objects[resource][number].update(update)
        return {}


@pytest.fixture
def superset(monkeypatch):
    server = InMemorySuperset()
    monkeypatch.setattr(provisioning.SupersetClient, "from_settings", classmethod(lambda cls, settings: server))
    return server


def test_with_the_five_shipped_tables_every_validated_tables_datasets_are_provisioned(tmp_path, superset):
    settings = make_settings(tmp_path / "data", tables=None)  # the shipped config, every table
    assert [t.name for t in settings.tables] == SHIPPED
    validated = [t for t in settings.tables if suite_names(t, settings.dbt_project_dir)]
    assert [t.name for t in validated] == SHIPPED  # each is covered: by its suites or its contract's
    wanted = set()
    for table in validated:
        wanted.add(f"{settings.file.staging_schema}.{table.staging_relation}")
        if table.marts_relation is not None:
            wanted.add(f"{settings.file.marts_schema}.{table.marts_relation}")

    first = provisioning.provision(settings)

    assert set(first["datasets"]) == wanted and first["missing"] == []
    assert len(wanted) == 7  # two marts (product, measure_unit) and five staging relations
    made = {f"{row['schema']}.{row['table_name']}" for resource, row in superset.created if resource == "dataset"}
    assert made == wanted
    assert [d["title"] for d in first["dashboards"]] == [spec.title for spec in DASHBOARDS]
    product = first["datasets"][f"{settings.file.marts_schema}.dim_product"]
    assert {c["datasource_id"] for c in superset.objects["chart"].values()} == {product}

    created = len(superset.created)
    second = provisioning.provision(settings)
    assert second["datasets"] == first["datasets"] and len(superset.created) == created  # nothing made twice


def test_a_configured_table_no_check_covers_gets_no_dataset(tmp_path, superset):
    settings = make_settings(tmp_path / "data", tables=None)
    unchecked = settings.table("product_image").model_copy(
        update={"name": "product_photo", "staging_relation": "stg_product_photo", "suites": []}
    )
    settings.file.tables.append(unchecked)  # no suites, no source contract of its own
    assert "product_photo" in [t.name for t in settings.tables]
    assert suite_names(unchecked, settings.dbt_project_dir) == []

    datasets = provisioning.provision(settings)["datasets"]
    assert f"{settings.file.staging_schema}.stg_product_photo" not in datasets
    assert f"{settings.file.staging_schema}.stg_product_image" in datasets
