{#-
  base_product: the latest state of every product seen in bronze, typed and snake_cased.
  49 source columns + CDC metadata = 54 columns. Hard deletes (op 'd') are kept,
  with the values of `before` and deleted = true. Only typing, renaming and
  deduplication happen here; BI logic lives in the marts.

  A table kept incrementally: an incremental run re-ranks only the keys with events
  stored since the newest one it holds (over all their events), so stg_product and the
  marts read one row per key instead of re-decoding every event of bronze.
-#}
{{ config(
    materialized='incremental',
    unique_key='product_id',
    incremental_strategy='delete+insert',
    on_schema_change='sync_all_columns',
    indexes=[{'columns': ['product_id'], 'unique': True}],
    post_hook=["{{ delete_keys_gone_from_bronze(this, source('bronze', 'product_cdc'), 'product_id::text') }}"]
) }}

with latest as (
    {{ cdc_latest_events(source('bronze', 'product_cdc'), changed_since=cdc_changed_since(this)) }}
)

select
    {{ decode_bigint(cdc_col('ID')) }} as product_id,
    {{ decode_guid(cdc_col('NetUID')) }} as net_uid,
    {{ decode_timestamp(cdc_col('Created')) }} as created,
    {{ decode_timestamp(cdc_col('Updated')) }} as updated,
    (coalesce({{ decode_bool(cdc_col('Deleted')) }}, false) or cdc_operation = 'd') as deleted,
    {{ decode_text(cdc_col('Name')) }} as name,
    {{ decode_text(cdc_col('VendorCode')) }} as vendor_code,
    {{ decode_text(cdc_col('Description')) }} as description,
    {{ decode_text(cdc_col('Size')) }} as size,
    {{ decode_float(cdc_col('Weight')) }} as weight,
    {{ decode_text(cdc_col('Volume')) }} as volume,
    {{ decode_text(cdc_col('Image')) }} as image,
    {{ decode_text(cdc_col('MainOriginalNumber')) }} as main_original_number,
    {{ decode_bigint(cdc_col('MeasureUnitID')) }} as measure_unit_id,
    {{ decode_text(cdc_col('Top')) }} as top,
    {{ decode_text(cdc_col('NamePL')) }} as name_pl,
    {{ decode_text(cdc_col('DescriptionPL')) }} as description_pl,
    {{ decode_text(cdc_col('NotesPL')) }} as notes_pl,
    {{ decode_text(cdc_col('SynonymsPL')) }} as synonyms_pl,
    {{ decode_text(cdc_col('NameUA')) }} as name_ua,
    {{ decode_text(cdc_col('DescriptionUA')) }} as description_ua,
    {{ decode_text(cdc_col('NotesUA')) }} as notes_ua,
    {{ decode_text(cdc_col('SynonymsUA')) }} as synonyms_ua,
    {{ decode_text(cdc_col('SearchName')) }} as search_name,
    {{ decode_text(cdc_col('SearchDescription')) }} as search_description,
    {{ decode_text(cdc_col('SearchSize')) }} as search_size,
    {{ decode_text(cdc_col('SearchVendorCode')) }} as search_vendor_code,
    {{ decode_text(cdc_col('SearchNamePL')) }} as search_name_pl,
    {{ decode_text(cdc_col('SearchDescriptionPL')) }} as search_description_pl,
    {{ decode_text(cdc_col('SearchSynonymsPL')) }} as search_synonyms_pl,
    {{ decode_text(cdc_col('SearchNameUA')) }} as search_name_ua,
    {{ decode_text(cdc_col('SearchDescriptionUA')) }} as search_description_ua,
    {{ decode_text(cdc_col('SearchSynonymsUA')) }} as search_synonyms_ua,
    {{ decode_bool(cdc_col('HasAnalogue')) }} as has_analogue,
    {{ decode_bool(cdc_col('HasImage')) }} as has_image,
    {{ decode_bool(cdc_col('IsForSale')) }} as is_for_sale,
    {{ decode_bool(cdc_col('IsForWeb')) }} as is_for_web,
    {{ decode_bool(cdc_col('IsForZeroSale')) }} as is_for_zero_sale,
    {{ decode_bool(cdc_col('HasComponent')) }} as has_component,
    {{ decode_text(cdc_col('UCGFEA')) }} as ucgfea,
    {{ decode_text(cdc_col('Standard')) }} as standard,
    {{ decode_text(cdc_col('OrderStandard')) }} as order_standard,
    {{ decode_text(cdc_col('PackingStandard')) }} as packing_standard,
    {{ decode_binary(cdc_col('SourceAmgID')) }} as source_amg_id,
    {{ decode_binary(cdc_col('SourceFenixID')) }} as source_fenix_id,
    {{ decode_binary(cdc_col('ParentAmgID')) }} as parent_amg_id,
    {{ decode_binary(cdc_col('ParentFenixID')) }} as parent_fenix_id,
    {{ decode_bigint(cdc_col('SourceAmgCode')) }} as source_amg_code,
    {{ decode_bigint(cdc_col('SourceFenixCode')) }} as source_fenix_code,
    cdc_operation,
    source_timestamp,
    is_snapshot,
    kafka_offset,
    ingested_at
from latest
