{#-
  stg_product_image: the staging relation of ConcordDb.dbo.ProductImage, one row per key, deletes kept.
  A view of base_product_image, which the staging macros build from its source contract
  (base/base_product_image.yml, written by `bi-console table add`).
-#}
{{ config(materialized='view') }}

select * from {{ ref('base_product_image') }}
