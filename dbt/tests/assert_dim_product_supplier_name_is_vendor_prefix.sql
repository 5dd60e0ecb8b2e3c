{#-
  Contract rule: supplier_name is the first 4 characters of vendor_code, 'Unknown' when the
  code is missing or shorter. A code that is empty or only spaces is a missing code, and the
  spaces around a code are not part of its prefix. Stated as properties of the output (a
  prefix of exactly 4 characters that starts the trimmed code; Unknown exactly when no such
  prefix exists) rather than as a copy of the model's CASE. Returns the rows that break it.
-#}
select product_id, vendor_code, supplier_name
from {{ ref('dim_product') }}
where supplier_name is null
   or (supplier_name = 'Unknown') <> (length(btrim(coalesce(vendor_code, ''))) < 4)
   or (supplier_name <> 'Unknown'
       and (length(supplier_name) <> 4 or position(supplier_name in btrim(vendor_code)) <> 1))
