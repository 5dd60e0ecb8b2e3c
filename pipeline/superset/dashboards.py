"""The dashboards bi-console manages, as data: charts, their metrics and their layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------- dashboard specs


def _metric(label: str, sql: str) -> dict[str, Any]:
    return {
        "expressionType": "SQL",
        "sqlExpression": sql,
        "label": label,
        "hasCustomLabel": True,
        "optionName": f"metric_{label}",
    }


COUNT = _metric("product_count", "COUNT(*)")


@dataclass(frozen=True)
class ChartSpec:
    """One chart of a managed dashboard. `requires` are the columns it needs in the dataset."""

    key: str
    title: str
    viz_type: str  # table | pie | big_number_total
    metrics: tuple[dict[str, Any], ...]
    groupby: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    optional_flags: tuple[str, ...] = ()  # boolean columns counted when present (table of flags)


@dataclass(frozen=True)
class DashboardSpec:
    title: str
    slug: str
    table: str  # TableConfig.name whose marts dataset the charts read
    charts: tuple[ChartSpec, ...] = field(default_factory=tuple)


FLAG_COLUMNS = ("is_for_sale", "is_for_web", "is_for_zero_sale", "has_analogue", "has_image", "has_component")

# The runbook's validation queries as charts on marts.<product marts relation>.
# Column names are the data contract's (shared/contract/README.md).
PRODUCT_CATALOG = DashboardSpec(
    title="Product Catalog",
    slug="product-catalog",
    table="product",
    charts=(
        ChartSpec("active", "Product Catalog: Active products", "big_number_total", (COUNT,)),
        ChartSpec(
            "supplier",
            "Product Catalog: Supplier distribution",
            "table",
            (COUNT, _metric("percentage", "ROUND(100.0 * COUNT(*) / SUM(COUNT(*)) OVER (), 2)")),
            groupby=("supplier_name",),
            requires=("supplier_name",),
        ),
        ChartSpec(
            "multilingual",
            "Product Catalog: Multilingual coverage",
            "pie",
            (COUNT,),
            groupby=("multilingual_status",),
            requires=("multilingual_status",),
        ),
        ChartSpec("flags", "Product Catalog: Business flags", "table", (COUNT,), optional_flags=FLAG_COLUMNS),
        ChartSpec(
            "freshness",
            "Product Catalog: Data freshness",
            "table",
            (
                _metric("latest_source_update", "MAX(last_modified_in_source)"),
                _metric("latest_ingest", "MAX(ingested_timestamp)"),
                _metric(
                    "data_age_minutes",
                    "ROUND(CAST(EXTRACT(EPOCH FROM (CURRENT_TIMESTAMP - MAX(ingested_timestamp))) / 60 AS numeric), 1)",
                ),
                COUNT,
            ),
            requires=("last_modified_in_source", "ingested_timestamp"),
        ),
    ),
)

DASHBOARDS: tuple[DashboardSpec, ...] = (PRODUCT_CATALOG,)


def _chart_metrics(spec: ChartSpec, columns: set[str]) -> list[dict[str, Any]]:
    metrics = list(spec.metrics)
    for flag in spec.optional_flags:
        if flag in columns:
            metrics.append(_metric(flag, f"SUM(CASE WHEN {flag} THEN 1 ELSE 0 END)"))
    return metrics


def chart_definition(spec: ChartSpec, dataset_id: int, columns: set[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(form_data, query_context) for a chart: the saved query_context is what
    GET /api/v1/chart/<id>/data runs, so it must be stored with the chart."""
    metrics = _chart_metrics(spec, columns)
    datasource = f"{dataset_id}__table"
    groupby = list(spec.groupby)
    if spec.viz_type == "big_number_total":
        form_data = {
            "viz_type": spec.viz_type,
            "datasource": datasource,
            "metric": metrics[0],
            "adhoc_filters": [],
            "header_font_size": 0.4,
            "subheader_font_size": 0.15,
            "y_axis_format": "SMART_NUMBER",
            "time_format": "smart_date",
        }
    elif spec.viz_type == "pie":
        form_data = {
            "viz_type": spec.viz_type,
            "datasource": datasource,
            "groupby": groupby,
            "metric": metrics[0],
            "adhoc_filters": [],
            "row_limit": 100,
            "sort_by_metric": True,
            "color_scheme": "supersetColors",
            "show_labels": True,
            "label_type": "key_value_percent",
            "show_legend": True,
            "legendType": "scroll",
            "legendOrientation": "top",
            "number_format": "SMART_NUMBER",
            "labels_outside": True,
            "outerRadius": 70,
            "innerRadius": 30,
            "donut": False,
        }
    else:
        form_data = {
            "viz_type": "table",
            "datasource": datasource,
            "query_mode": "aggregate",
            "groupby": groupby,
            "metrics": metrics,
            "all_columns": [],
            "percent_metrics": [],
            "adhoc_filters": [],
            "order_by_cols": [],
            "row_limit": 1000,
            "server_page_length": 10,
            "order_desc": True,
            "table_timestamp_format": "smart_date",
            "show_cell_bars": True,
            "color_pn": True,
        }
    query = {
        "columns": groupby,
        "metrics": metrics,
        "orderby": [[metrics[0], False]] if groupby else [],
        "row_limit": 1000,
        "filters": [],
        "extras": {"having": "", "where": ""},
        "annotation_layers": [],
        "series_limit": 0,
        "order_desc": True,
        "url_params": {},
        "custom_params": {},
        "custom_form_data": {},
    }
    query_context = {
        "datasource": {"id": dataset_id, "type": "table"},
        "force": False,
        "queries": [query],
        "form_data": form_data,
        "result_format": "json",
        "result_type": "full",
    }
    return form_data, query_context
