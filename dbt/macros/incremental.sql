{#-
  Incremental marts that stay equal to a full rebuild.

  incremental_changes(model_sql, key): on an incremental run, only the rows of
  model_sql that are new or differ from the current table (a set difference over
  every column, so changed computed columns are picked up too); with
  incremental_strategy='delete+insert' and unique_key=key they replace the old rows.
  When the table's columns no longer match the model's, every row is selected.
  On a full refresh / first run it is model_sql unchanged.

  delete_vanished_keys(target, source, key, condition): a post-hook that removes
  the rows whose key no longer has a row in `source` satisfying `condition`
  (e.g. products that became deleted), which delete+insert alone cannot do.
-#}
{% macro incremental_changes(model_sql) -%}
{%- if is_incremental() -%}
    {%- set target_columns = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
    {%- set model_columns = get_columns_in_query(model_sql) | map('lower') | list -%}
    {%- if target_columns == model_columns %}
select changed.* from (
    select * from ({{ model_sql }}) as model_rows
    except
    select * from {{ this }}
) as changed
    {%- else %}
{{ model_sql }}
    {%- endif -%}
{%- else %}
{{ model_sql }}
{%- endif -%}
{%- endmacro %}

{% macro delete_vanished_keys(target, source, key, condition='true') -%}
{%- if not is_incremental() -%}
select 1 as nothing_to_delete_after_a_full_build
{%- else -%}
delete from {{ target }} as t
where not exists (
    select 1 from {{ source }} as s
    where s.{{ key }} = t.{{ key }} and ({{ condition }})
)
{%- endif -%}
{%- endmacro %}
