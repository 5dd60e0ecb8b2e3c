{#-
  days_since_created / days_since_updated are whole calendar days from the source's Created /
  Updated to today. Measured here from the day boundaries of the timestamps, so a mart
  built on an earlier day (stale day counts) or a wrong column fails. Returns the rows
  that break it.
-#}
select product_id, created, days_since_created, updated, days_since_updated
from {{ ref('dim_product') }}
where days_since_created is distinct from
          extract(day from date_trunc('day', localtimestamp) - date_trunc('day', created))::integer
   or days_since_updated is distinct from
          extract(day from date_trunc('day', localtimestamp) - date_trunc('day', updated))::integer
