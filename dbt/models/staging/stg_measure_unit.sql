{#-
  stg_measure_unit: latest state of every measure unit in bronze, typed and
  snake_cased, plus CDC metadata. Same macros as stg_product.
-#}
{{ config(materialized='view') }}

{% set events_sql = cdc_events(source('bronze', 'measure_unit_cdc'), key_column='ID') %}

with latest as (
    {{ latest_event_per_key(events_sql) }}
)

select
    {{ decode_bigint(cdc_col('ID')) }} as measure_unit_id,
    {{ decode_guid(cdc_col('NetUID')) }} as net_uid,
    {{ decode_timestamp(cdc_col('Created')) }} as created,
    {{ decode_timestamp(cdc_col('Updated')) }} as updated,
    (coalesce({{ decode_bool(cdc_col('Deleted')) }}, false) or cdc_operation = 'd') as deleted,
    {{ decode_text(cdc_col('Name')) }} as name,
    {{ decode_text(cdc_col('NamePL')) }} as name_pl,
    {{ decode_text(cdc_col('NameUA')) }} as name_ua,
    cdc_operation,
    source_timestamp,
    is_snapshot,
    kafka_offset,
    ingested_at
from latest
