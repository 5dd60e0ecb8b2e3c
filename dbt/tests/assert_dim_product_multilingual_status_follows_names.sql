{#-
  Contract rule: multilingual_status is 'Complete' when the product has both translations of
  its base name (name_pl and name_ua), 'Partial' with one, 'Missing' with none. An empty or
  blank translation is no translation. Counted, not re-derived with the model's CASE.
  Returns the rows that break it.
-#}
with counted as (
    select product_id, name, name_pl, name_ua, multilingual_status,
           (case when coalesce(btrim(name_pl), '') <> '' then 1 else 0 end)
         + (case when coalesce(btrim(name_ua), '') <> '' then 1 else 0 end) as translations
    from {{ ref('dim_product') }}
)
select product_id, name, name_pl, name_ua, multilingual_status, translations
from counted
where multilingual_status is distinct from (array['Missing', 'Partial', 'Complete'])[translations + 1]
