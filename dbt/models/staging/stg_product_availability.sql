{#-
  stg_product_availability: the staging relation of ConcordDb.dbo.ProductAvailability, one row per key, deletes kept.
  A view of base_product_availability, which the staging macros build from its source contract
  (base/base_product_availability.yml, written by `bi-console table add`).
-#}
{{ config(materialized='view') }}

select * from {{ ref('base_product_availability') }}
