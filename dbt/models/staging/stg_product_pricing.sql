{#-
  stg_product_pricing: the staging relation of ConcordDb.dbo.ProductPricing, one row per key, deletes kept.
  A view of base_product_pricing, which the staging macros build from its source contract
  (base/base_product_pricing.yml, written by `bi-console table add`).
-#}
{{ config(materialized='view') }}

select * from {{ ref('base_product_pricing') }}
