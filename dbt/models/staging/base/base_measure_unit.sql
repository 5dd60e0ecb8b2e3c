{#-
  base_measure_unit: latest state of every measure unit in bronze, typed and
  snake_cased, plus CDC metadata. Same macros as base_product.

  A table kept incrementally: an incremental run re-ranks only the keys with events
  stored since the newest one it holds (over all their events), so stg_measure_unit and the
  marts read one row per key instead of re-decoding every event of bronze.
-#}
{{ config(
    materialized='incremental',
    unique_key='measure_unit_id',
    incremental_strategy='delete+insert',
    on_schema_change='sync_all_columns',
    indexes=[{'columns': ['measure_unit_id'], 'unique': True}],
    post_hook=["{{ delete_keys_gone_from_bronze(this, source('bronze', 'measure_unit_cdc'), 'measure_unit_id::text') }}"]
) }}

with latest as (
    {{ cdc_latest_events(source('bronze', 'measure_unit_cdc'), changed_since=cdc_changed_since(this)) }}
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
