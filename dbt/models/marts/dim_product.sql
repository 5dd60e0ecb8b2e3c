{#-
  dim_product: the BI product dimension. Active products only (deleted = false),
  about 30 columns, with the computed columns dashboards rely on (data contract):
    supplier_name        first 4 characters of vendor_code (trimmed); 'Unknown' when missing, blank or shorter
    multilingual_status  'Complete' (name_pl and name_ua present), 'Partial' (one), 'Missing'
    weight_category      'Missing' (null or 0), 'Light (<1kg)', 'Medium (1-10kg)', 'Heavy (>10kg)'
    days_since_created / days_since_updated   whole days up to current_date
    last_modified_in_source  the source's Updated column
    ingested_timestamp       when the product's latest event reached bronze
    source_timestamp         when the source committed that event (Debezium source.ts_ms):
                             the freshness check compares it with the source's latest change
  Incremental: only new or changed rows are rewritten (delete+insert on product_id),
  and products that became deleted or vanished from staging are removed by the
  post-hook, so the table always equals a full rebuild.
-#}
{{ config(
    materialized='incremental',
    unique_key='product_id',
    incremental_strategy='delete+insert',
    on_schema_change='sync_all_columns',
    post_hook=["{{ delete_vanished_keys(this, ref('stg_product'), 'product_id', 's.deleted = false',
                 gone_on_hot_path='select product_id from ' ~ ref('stg_product') ~ ' where deleted') }}"]
) }}

{% set model_sql %}
select
    product_id,
    net_uid,
    name,
    name_pl,
    name_ua,
    vendor_code,
    {#- A blank code is a missing one; surrounding spaces are not part of the prefix. #}
    case when length(btrim(coalesce(vendor_code, ''))) < 4 then 'Unknown'
         else left(btrim(vendor_code), 4) end as supplier_name,
    case when nullif(trim(name_pl), '') is not null and nullif(trim(name_ua), '') is not null then 'Complete'
         when nullif(trim(name_pl), '') is not null or nullif(trim(name_ua), '') is not null then 'Partial'
         else 'Missing' end as multilingual_status,
    description,
    size,
    weight,
    case when weight is null or weight = 0 then 'Missing'
         when weight < 1 then 'Light (<1kg)'
         when weight <= 10 then 'Medium (1-10kg)'
         else 'Heavy (>10kg)' end as weight_category,
    volume,
    image,
    main_original_number,
    measure_unit_id,
    ucgfea,
    standard,
    is_for_sale,
    is_for_web,
    is_for_zero_sale,
    has_analogue,
    has_image,
    has_component,
    source_amg_code,
    source_fenix_code,
    created,
    updated,
    (current_date - created::date) as days_since_created,
    (current_date - updated::date) as days_since_updated,
    updated as last_modified_in_source,
    ingested_at as ingested_timestamp,
    source_timestamp
from {{ ref('stg_product') }}
where deleted = false
{% endset %}

{#- The hot path's changed keys: staging rows newer than this table's newest (a deleted one
    too: its key's old row must go). -#}
{% set changed_keys %}
select product_id from {{ ref('stg_product') }}
where ingested_at > (select coalesce(max(ingested_timestamp), '-infinity'::timestamptz) from {{ this }})
{% endset %}

{{ incremental_changes(model_sql, changed_keys=changed_keys) }}
