{#-
  Staging models generated from their source contract (models/staging/base/base_<table>.yml,
  format in dbt/README.md). A model file is `{{ cdc_staging() }}`; dbt_project.yml gives every
  model of staging/base the incremental materialization, the `cdc_staging` strategy (its
  unique key from the contract) and the post-hooks (the unique index, the keys gone from
  bronze), so nothing table-specific is written twice.

  dbt renders a model's SQL (and its hooks) at parse time, first before it applies the
  property file and once more after, so the contract is whole only at run time
  (`execute`): at parse time these macros return placeholders, and cdc_contract() declares
  the bronze source once it sees it (the model's parent in the DAG). Incremental configs
  that dbt reads as plain values (unique_key, indexes) cannot come from the contract for
  that reason; the strategy and the hooks below compute them from it when they run.
-#}

{#- A column's contract (meta), wherever dbt keeps it: top-level `meta` or `config.meta`. -#}
{% macro _cdc_column_meta(column) -%}
{%- set meta = {} -%}
{%- if column.config is defined and column.config and column.config.meta -%}
    {%- do meta.update(column.config.meta) -%}
{%- endif -%}
{%- if column.meta -%}
    {%- do meta.update(column.meta) -%}
{%- endif -%}
{{ return(meta) }}
{%- endmacro %}

{#-
  The calling model's source contract, checked:
    {source, bronze_table, key_columns, deleted_column, decimal_handling_mode,
     columns: [{name, source_column, source_type, nullable}], key_fields: [the key columns, as columns]}
  None at parse time. A missing or wrong entry is a compiler error naming the model and the key.
-#}
{% macro cdc_contract(node=none) -%}
{%- set node = node if node is not none else model -%}
{%- set found = node.config.meta.get('source_contract') if node.config.meta else none -%}
{%- if not execute -%}
    {#- Parse time: the property file may not be applied yet. When it is, the bronze table is
        declared, so the source is the model's parent in the DAG. -#}
    {%- if found and found.get('bronze_table') -%}
        {%- do source('bronze', found.bronze_table) -%}
    {%- endif -%}
    {{ return(none) }}
{%- endif -%}
{%- if not found -%}
    {{ exceptions.raise_compiler_error(node.name ~ ": no config.meta.source_contract in its property file (dbt/README.md has the format)") }}
{%- endif -%}
{%- for required in ['bronze_table', 'key_columns'] -%}
    {%- if not found.get(required) -%}
        {{ exceptions.raise_compiler_error(node.name ~ ": source_contract has no " ~ required) }}
    {%- endif -%}
{%- endfor -%}
{%- set key_columns = [found.key_columns] if found.key_columns is string else found.key_columns | list -%}
{%- set mode = found.get('decimal_handling_mode', 'string') -%}
{%- if mode not in ['string', 'precise', 'double'] -%}
    {{ exceptions.raise_compiler_error(node.name ~ ": source_contract.decimal_handling_mode is " ~ mode ~ "; it is string, precise or double") }}
{%- endif -%}
{%- set columns = [] -%}
{%- for column in node.columns.values() -%}
    {%- set meta = _cdc_column_meta(column) -%}
    {%- if meta.get('source_column') -%}
        {%- if not meta.get('source_type') -%}
            {{ exceptions.raise_compiler_error(node.name ~ ": column " ~ column.name ~ " has a source_column and no source_type") }}
        {%- endif -%}
        {%- do columns.append({'name': column.name, 'source_column': meta.source_column,
                               'source_type': meta.source_type, 'nullable': meta.get('nullable', true)}) -%}
    {%- endif -%}
{%- endfor -%}
{%- set keys = [] -%}
{%- for key in key_columns -%}
    {%- set matching = columns | selectattr('source_column', 'equalto', key) | list -%}
    {%- if not matching -%}
        {{ exceptions.raise_compiler_error(node.name ~ ": key column " ~ key ~ " is not one of its columns' source_column") }}
    {%- endif -%}
    {%- do keys.append(matching[0]) -%}
{%- endfor -%}
{%- set deleted_column = found.get('deleted_column', 'Deleted') -%}
{{ return({
    'source': found.get('source'),
    'bronze_table': found.bronze_table,
    'key_columns': key_columns,
    'key_fields': keys,
    'deleted_column': deleted_column if columns | selectattr('source_column', 'equalto', deleted_column) | list else none,
    'decimal_handling_mode': mode,
    'columns': columns,
}) }}
{%- endmacro %}

{#- The whole base model of the calling model's contract. -#}
{% macro cdc_staging() -%}
{%- set contract = cdc_contract() -%}
{%- if contract is none -%}
select 1 as parsed_before_its_contract_is_read
{%- else -%}
{%- set bronze = source('bronze', contract.bronze_table) -%}
with latest as (
    {{ cdc_latest_events(bronze, changed_since=cdc_changed_since(this)) }}
)

select
{%- for column in contract.columns %}
    {%- if column.source_column == contract.deleted_column %}
    (coalesce({{ cdc_decode(cdc_col(column.source_column), column.source_type, contract, column.name) }}, false) or cdc_operation = 'd') as {{ adapter.quote(column.name) }},
    {%- else %}
    {{ cdc_decode(cdc_col(column.source_column), column.source_type, contract, column.name) }} as {{ adapter.quote(column.name) }},
    {%- endif %}
{%- endfor %}
    cdc_operation,
    source_timestamp,
    is_snapshot,
    kafka_offset,
    ingested_at
{#- Last, where on_schema_change appends a column to the table: a full build and an
    incremental one then hold the columns in the same order. -#}
{%- for source_column, name in cdc_columns_beyond_contract(bronze, contract) %},
    {{ decode_text(cdc_col(source_column)) }} as {{ adapter.quote(name) }}
{%- endfor %}
{%- set retyped = cdc_retyped_guards(contract) %}
{%- if retyped %}
{#- OFFSET 0: the guard is judged on the winners only, never pushed below their ranking. #}
from (select * from latest offset 0) as latest
where (case
{%- for guard in retyped %}
    when {{ guard.condition }} then {{ guard.error }}
{%- endfor %}
end) is null
{%- else %}
from latest
{%- endif %}
{%- endif -%}
{%- endmacro %}

{#-
  Schema evolution, a retyped column: for each contract column whose decoder reads only
  some JSON kinds, {condition, error}: the condition that the winner's value is of another
  kind, and an expression that stops this model with a message naming the table, the
  column, its contract type and what arrives instead, at run time, as a database error of
  this model alone: the other tables' models still build. (PostgreSQL has no RAISE in plain
  SQL: the message is the input of a cast that cannot succeed, so the error reads
  `invalid input syntax for type integer: "<the message>"`.) The kinds are those the
  decoders read (macros/cdc.sql); `--check`'s schema:<table> judges the same events by
  pipeline/config/contracts.py.
-#}
{% macro cdc_retyped_guards(contract) -%}
{%- set readable = {
    'bool': ['boolean', 'number', 'string'],
    'smallint': ['number'], 'integer': ['number'], 'bigint': ['number'],
    'real': ['number'], 'float': ['number'],
    'numeric': ['number', 'string', 'object'],
    'date': ['number', 'string'], 'time': ['number', 'string'], 'timestamp': ['number', 'string'],
    'offset_timestamp': ['string', 'number'],
    'guid': ['string'], 'binary': ['string'],
} -%}
{%- set guards = [] -%}
{%- for column in contract.columns -%}
    {%- set kinds = readable.get(_cdc_type_entry(column.source_type, column.name)[0]) -%}
    {%- if kinds -%}
        {%- set x = cdc_col(column.source_column) -%}
        {%- set told = (model.name ~ ': column ' ~ column.source_column ~ ' of ' ~ (contract.source or contract.bronze_table)
            ~ ' is retyped at the source: its contract says ' ~ column.source_type ~ ', it arrives as ') | replace("'", "''") -%}
        {%- do guards.append({
            'condition': "coalesce(jsonb_typeof(" ~ x ~ "), 'null') not in ('null', '" ~ kinds | join("', '") ~ "')",
            'error': "('" ~ told ~ "' || jsonb_typeof(" ~ x ~ ") || ' ' || left(" ~ x ~ "::text, 60) || ' (key ' || record_key"
                ~ " || '); write its new type into the contract and run a full refresh')::integer",
        }) -%}
    {%- endif -%}
{%- endfor -%}
{{ return(guards) }}
{%- endmacro %}

{#- The staging names of the calling model's key, in key order. -#}
{% macro cdc_staging_key_names() -%}
{%- set contract = cdc_contract() -%}
{{ return(contract.key_fields | map(attribute='name') | list if contract is not none else []) }}
{%- endmacro %}

{#-
  The `cdc_staging` incremental strategy (dbt calls get_incremental_<strategy>_sql):
  delete+insert on the contract's key.
-#}
{% macro get_incremental_cdc_staging_sql(arg_dict) -%}
{%- set keys = cdc_staging_key_names() -%}
{%- set args = dict(arg_dict) -%}
{%- do args.update({'unique_key': keys[0] if keys | length == 1 else keys}) -%}
{{ return(get_incremental_delete_insert_sql(args)) }}
{%- endmacro %}

{#-
  Post-hook: the unique index on the key, created when the table has none (a new table, or
  the one a full refresh swapped in); PostgreSQL names it, so the index of the table being
  replaced keeps its own name until that table is dropped.
-#}
{% macro cdc_staging_key_index() -%}
{%- set keys = cdc_staging_key_names() -%}
{%- if not keys -%}
select 1 as parsed_before_its_contract_is_read
{%- else -%}
do $cdc_staging_key_index$
begin
    if not exists (
        select 1 from pg_index as i
        where i.indrelid = '{{ this }}'::regclass
          and i.indisunique
          and array(
                select a.attname::text
                from unnest(i.indkey::smallint[]) with ordinality as k(attnum, position)
                join pg_attribute as a on a.attrelid = i.indrelid and a.attnum = k.attnum
                order by k.position
              ) = array[{% for key in keys %}'{{ key }}'{{ ", " if not loop.last }}{% endfor %}]::text[]
    ) then
        create unique index on {{ this }} ({{ keys | join(', ') }});
    end if;
end
$cdc_staging_key_index$
{%- endif -%}
{%- endmacro %}

{#-
  The condition that bronze row `b` is an event of staging row `t`'s key, on bronze's indexed
  record_key: a single key column's text (integers, strings; GUIDs arrive uppercase from
  SQL Server, lowercase from the PostgreSQL demo source), or, for several, the JSON array of
  their values (pipeline/stores/bronze.py), when each is an integer, a string or a bit. None
  for a key whose staging value does not give back the event's text (a decimal, a time).
-#}
{% macro _cdc_record_key_matches(key_fields) -%}
{%- set integers = ['tinyint', 'smallint', 'int', 'integer', 'bigint'] -%}
{%- set strings = ['char', 'varchar', 'nchar', 'nvarchar', 'text', 'ntext', 'sysname'] -%}
{%- set bases = [] -%}
{%- set names = [] -%}
{%- for field in key_fields -%}
    {%- do bases.append(cdc_type_parts(field.source_type).base) -%}
    {%- do names.append('t.' ~ field.name) -%}
{%- endfor -%}
{%- if names | length == 1 and bases[0] in integers -%}
    {{ return("b.record_key = (" ~ names[0] ~ ")::text") }}
{%- elif names | length == 1 and bases[0] in strings -%}
    {{ return("b.record_key = " ~ names[0]) }}
{%- elif names | length == 1 and bases[0] == 'uniqueidentifier' -%}
    {{ return("b.record_key in (" ~ names[0] ~ ", upper(" ~ names[0] ~ "))") }}
{%- elif names | length > 1 and bases | reject('in', integers + strings + ['bit']) | list | length == 0 -%}
    {{ return("b.record_key = jsonb_build_array(" ~ names | join(', ') ~ ")::text") }}
{%- endif -%}
{{ return(none) }}
{%- endmacro %}

{#-
  Post-hook: remove the rows whose key no longer has any state-carrying event in bronze.
  Where the key's staging values give back bronze's record_key (_cdc_record_key_matches),
  each row probes bronze's record_key index (delete_keys_gone_from_bronze); any other key
  is matched on the key values of every event, decoded as the model decodes them.
-#}
{% macro cdc_staging_delete_gone_keys() -%}
{%- set contract = cdc_contract() -%}
{%- if contract is none -%}
select 1 as parsed_before_its_contract_is_read
{%- elif var('hot_path', false) -%}
{#- Keys leave bronze only by a reload or by hand: the runner's full pass prunes them. -#}
select 1 as pruned_by_the_full_pass
{%- else -%}
{%- set bronze = source('bronze', contract.bronze_table) -%}
{%- set matches = _cdc_record_key_matches(contract.key_fields) -%}
{%- if matches is not none -%}
{{ delete_keys_gone_from_bronze(this, bronze, none, matches=matches) }}
{%- elif not is_incremental() -%}
select 1 as nothing_to_delete_after_a_full_build
{%- else -%}
delete from {{ this }} as t
where not exists (
    select 1 from (
        select distinct
        {%- for key in contract.key_fields %}
            {{ cdc_decode(cdc_event_key_value('ev', key.source_column), key.source_type, contract, key.name) }} as {{ key.name }}{{ "," if not loop.last }}
        {%- endfor %}
        from {{ bronze }} as ev
        where ev.cdc_operation is not null
    ) as k
    where {% for key in contract.key_fields %}k.{{ key.name }} = t.{{ key.name }}{{ " and " if not loop.last }}{% endfor %}
)
{%- endif -%}
{%- endif -%}
{%- endmacro %}

{#- A source column's staging name, as pipeline/config/contracts.py snake_case() gives it:
    NetUID -> net_uid, MeasureUnitID -> measure_unit_id. -#}
{% macro cdc_snake_case(source_column) -%}
{%- set words = modules.re.sub('(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])', '_', source_column | trim) -%}
{%- set name = modules.re.sub('[^a-z0-9]+', '_', words | lower).strip('_') -%}
{{ return(name if not name[:1].isdigit() else 'c_' ~ name) }}
{%- endmacro %}

{#-
  Schema evolution: [(source_column, staging name)] of the columns the source has that its
  contract does not list. A column added at the source reaches staging on the next run, as
  text (on_schema_change adds it to the table), until its type is written into the contract;
  `--check` reports it (schema:<table>). An incremental run finds them in the newest
  state-carrying events of bronze, plus the ones staging already holds, so a column the source
  drops again is kept, with NULL for the events after the drop, instead of being dropped from
  staging with its history. A full build holds no columns to keep, so it finds every column any
  event of bronze carries: after the newest events, it looks for an event with a column not
  found yet (`row - known <> '{}'`, one pass of bronze's payloads, stopping at the first such
  events), adds those columns and looks again until no event has one (dbt/README.md has
  what it costs).
-#}
{% macro cdc_columns_beyond_contract(bronze, contract) -%}
{%- set known = contract.columns | map(attribute='source_column') | list -%}
{%- set taken = contract.columns | map(attribute='name') | list
    + ['cdc_operation', 'source_timestamp', 'is_snapshot', 'kafka_offset', 'ingested_at'] -%}
{%- set row_data = "(select case when b.cdc_operation = 'd' then e.envelope -> 'before' "
    ~ "else e.envelope -> 'after' end as row_data from " ~ bronze ~ " as b "
    ~ "cross join lateral (select " ~ cdc_envelope('b.cdc_payload') ~ " as envelope) as e "
    ~ "where b.cdc_operation is not null" -%}
{%- set seen = run_query(
    "select distinct k from " ~ row_data ~ " order by b.ingested_at desc, b.kafka_offset desc limit 1000) as newest "
    ~ "cross join lateral jsonb_object_keys(newest.row_data) as k order by 1"
).columns[0].values() | list -%}
{%- if not is_incremental() -%}
    {%- set row = "(case when b.cdc_operation = 'd' then e.envelope -> 'before' else e.envelope -> 'after' end)" -%}
    {%- set search = namespace(seen=seen, done=false) -%}
    {#- Each pass adds at least one column, so it ends; 100 is far beyond a source's history. -#}
    {%- for _ in range(100) -%}
        {%- if not search.done -%}
            {%- set found = (known + search.seen) | unique | map('replace', "'", "''") | list -%}
            {%- set listed = "array['" ~ found | join("', '") ~ "']::text[]" -%}
            {%- set more = run_query(
                "select distinct k from " ~ row_data ~ " and jsonb_typeof(" ~ row ~ ") = 'object' and "
                ~ row ~ " - " ~ listed ~ " <> '{}'::jsonb limit 100) as unseen "
                ~ "cross join lateral jsonb_object_keys(unseen.row_data - " ~ listed ~ ") as k order by 1"
            ).columns[0].values() | list -%}
            {%- if more -%}
                {%- set search.seen = (search.seen + more) | sort -%}
            {%- else -%}
                {%- set search.done = true -%}
            {%- endif -%}
        {%- endif -%}
    {%- endfor -%}
    {%- set seen = search.seen -%}
{%- endif -%}
{%- set held = [] -%}
{%- if is_incremental() -%}
    {%- for column in adapter.get_columns_in_relation(this) -%}
        {%- do held.append(column.name) -%}
    {%- endfor -%}
{%- endif -%}
{%- set beyond = [] -%}
{%- for source_column in seen if source_column not in known -%}
    {%- set name = cdc_snake_case(source_column) -%}
    {%- if name not in taken -%}
        {%- do beyond.append((source_column, name)) -%}
        {%- do taken.append(name) -%}
    {%- endif -%}
{%- endfor -%}
{#- Columns staging holds from an earlier run that no recent event carries (dropped at the
    source): kept, NULL for the keys staged again, whose newest event no longer has them. -#}
{%- for name in held if name not in taken -%}
    {%- do beyond.append((name, name)) -%}
    {%- do taken.append(name) -%}
{%- endfor -%}
{{ return(beyond) }}
{%- endmacro %}
