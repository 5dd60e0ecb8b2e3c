{#-
  Contract rule: weight_category is 'Missing' for no weight or a weight of 0,
  'Light (<1kg)' below 1 kg, 'Medium (1-10kg)' from 1 to 10 kg inclusive (so exactly 10 kg
  is Medium), 'Heavy (>10kg)' above. Each bucket is a closed range here, so a weight that
  fits none (a negative one) is reported too: no bucket of the contract describes it.
  Returns the rows that break the rule.
-#}
select product_id, weight, weight_category
from {{ ref('dim_product') }}
where weight_category is distinct from (
    case when weight is null or weight = 0 then 'Missing'
         when weight > 0 and weight < 1 then 'Light (<1kg)'
         when weight >= 1 and weight <= 10 then 'Medium (1-10kg)'
         when weight > 10 then 'Heavy (>10kg)'
    end)
