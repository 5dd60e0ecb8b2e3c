{#-
  stg_product: the contract's staging relation, a view (the data contract names its kind).
  The typing, renaming and deduplication are in base_product, a table kept incrementally,
  so a read of this view is a scan of one row per key, not a decode of every event.
-#}
{{ config(materialized='view') }}

select * from {{ ref('base_product') }}
