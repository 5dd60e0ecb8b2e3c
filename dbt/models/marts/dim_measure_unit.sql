{#-
  dim_measure_unit: active measure units (deleted = false) for BI. Incremental the
  same way as dim_product (shared macros).
  source_timestamp: when the source committed the latest event (source.ts_ms).
-#}
{{ config(
    materialized='incremental',
    unique_key='measure_unit_id',
    incremental_strategy='delete+insert',
    on_schema_change='sync_all_columns',
    post_hook=["{{ delete_vanished_keys(this, ref('stg_measure_unit'), 'measure_unit_id', 's.deleted = false') }}"]
) }}

{% set model_sql %}
select
    measure_unit_id,
    net_uid,
    name,
    name_pl,
    name_ua,
    created,
    updated,
    updated as last_modified_in_source,
    ingested_at as ingested_timestamp,
    source_timestamp
from {{ ref('stg_measure_unit') }}
where deleted = false
{% endset %}

{{ incremental_changes(model_sql) }}
