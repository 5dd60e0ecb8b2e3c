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
{% macro incremental_changes(model_sql, changed_keys=none) -%}
{%- if is_incremental() -%}
    {%- set target_columns = adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
    {%- set model_columns = get_columns_in_query(model_sql) | map('lower') | list -%}
    {%- set key = config.get('unique_key') -%}
    {%- if target_columns == model_columns and var('hot_path', false) and changed_keys is not none %}
{#- The hot path: only the keys `changed_keys` names (those staging changed since this
    table's newest row), so a run costs what changed, not the whole table. Columns that
    move with the calendar (days since ...) catch up on the next full pass. #}
select changed.* from (
    select * from ({{ model_sql }}) as model_rows where model_rows.{{ key }} in ({{ changed_keys }})
    except
    select * from {{ this }} as current_rows where current_rows.{{ key }} in ({{ changed_keys }})
) as changed
    {%- elif target_columns == model_columns %}
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

{% macro delete_vanished_keys(target, source, key, condition='true', gone_on_hot_path=none) -%}
{%- if not is_incremental() -%}
select 1 as nothing_to_delete_after_a_full_build
{%- elif var('hot_path', false) and gone_on_hot_path is not none -%}
{#- The hot path: only the keys `gone_on_hot_path` says left (e.g. became deleted); keys
    that vanished from the source table altogether wait for the full pass. #}
delete from {{ target }} as t
where t.{{ key }} in ({{ gone_on_hot_path }})
{%- else -%}
delete from {{ target }} as t
where not exists (
    select 1 from {{ source }} as s
    where s.{{ key }} = t.{{ key }} and ({{ condition }})
)
{%- endif -%}
{%- endmacro %}
