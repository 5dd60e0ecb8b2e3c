{#-
  The type map: a SQL Server column type, as a contract spells it (`decimal(18,2)`,
  `nvarchar(max)`, `datetime2(7)`, `money`), to the expression that decodes its Debezium
  JSON value and the PostgreSQL type that expression gives. dbt/README.md has the table;
  the SQL Server connector's encodings are those of time.precision.mode=adaptive,
  binary.handling.mode=bytes and the contract's decimal_handling_mode (default string).
  A value decodes the same with the JSON converter's schemas on or off: the row values of
  a schema-wrapped event are those of the bare envelope.
-#}

{#- {base, precision, scale} of a SQL Server type: decimal(18,2) -> {decimal, 18, 2}; nvarchar(max) -> precision none. -#}
{% macro cdc_type_parts(source_type) -%}
{%- set text = source_type | string | lower | replace(' ', '') -%}
{%- set base = text.split('(')[0] -%}
{%- set arguments = text[base | length + 1:-1].split(',') if '(' in text else [] -%}
{%- set precision = arguments[0] | int if arguments and arguments[0] not in ['', 'max'] else none -%}
{%- set scale = arguments[1] | int if arguments | length > 1 else none -%}
{{ return({'base': base, 'precision': precision, 'scale': scale}) }}
{%- endmacro %}

{#- Each SQL Server base type: its decoder and the PostgreSQL type that decoder gives. -#}
{% macro cdc_type_map() -%}
{{ return({
    'bit': ('bool', 'boolean'),
    'tinyint': ('smallint', 'smallint'),
    'smallint': ('smallint', 'smallint'),
    'int': ('integer', 'integer'),
    'integer': ('integer', 'integer'),
    'bigint': ('bigint', 'bigint'),
    'decimal': ('numeric', 'numeric'),
    'numeric': ('numeric', 'numeric'),
    'money': ('numeric', 'numeric'),
    'smallmoney': ('numeric', 'numeric'),
    'float': ('float', 'double precision'),
    'real': ('real', 'real'),
    'date': ('date', 'date'),
    'time': ('time', 'time without time zone'),
    'datetime': ('timestamp', 'timestamp without time zone'),
    'smalldatetime': ('timestamp', 'timestamp without time zone'),
    'datetime2': ('timestamp', 'timestamp without time zone'),
    'datetimeoffset': ('offset_timestamp', 'timestamp with time zone'),
    'uniqueidentifier': ('guid', 'text'),
    'char': ('text', 'text'),
    'varchar': ('text', 'text'),
    'nchar': ('text', 'text'),
    'nvarchar': ('text', 'text'),
    'text': ('text', 'text'),
    'ntext': ('text', 'text'),
    'sysname': ('text', 'text'),
    'xml': ('text', 'text'),
    'binary': ('binary', 'bytea'),
    'varbinary': ('binary', 'bytea'),
    'image': ('binary', 'bytea'),
    'rowversion': ('binary', 'bytea'),
    'timestamp': ('binary', 'bytea'),
}) }}
{%- endmacro %}

{% macro _cdc_type_entry(source_type, column_name) -%}
{%- set parts = cdc_type_parts(source_type) -%}
{%- set entry = cdc_type_map().get(parts.base) -%}
{%- if entry is none -%}
    {{ exceptions.raise_compiler_error(model.name ~ ": column " ~ column_name ~ " has SQL Server type " ~ source_type ~ ", which the type map (macros/type_map.sql, dbt/README.md) does not know") }}
{%- endif -%}
{#- float(1..24) is SQL Server's real, a float32 in the event. -#}
{%- if parts.base == 'float' and parts.precision is not none and parts.precision <= 24 -%}
    {%- set entry = cdc_type_map()['real'] -%}
{%- endif -%}
{{ return(entry) }}
{%- endmacro %}

{#- The PostgreSQL type a column of this SQL Server type has in staging. -#}
{% macro cdc_postgres_type(source_type, column_name='?') -%}
{{ return(_cdc_type_entry(source_type, column_name)[1]) }}
{%- endmacro %}

{#-
  The decode expression of jsonb value `x` of a column of SQL Server type `source_type`.
  `contract` (cdc_contract()) gives the decimal handling mode.
-#}
{% macro cdc_decode(x, source_type, contract, column_name='?') -%}
{%- set parts = cdc_type_parts(source_type) -%}
{%- set decoder = _cdc_type_entry(source_type, column_name)[0] -%}
{%- if decoder == 'numeric' -%}
    {#- money and smallmoney are decimal(19,4) and decimal(10,4); decimal(p) has scale 0. -#}
    {%- set scale = 4 if parts.base in ['money', 'smallmoney'] else (parts.scale if parts.scale is not none else 0) -%}
{{ decode_numeric(x, scale, contract.decimal_handling_mode) }}
{%- elif decoder == 'time' -%}
{{ decode_time(x, parts.precision if parts.precision is not none else 7) }}
{%- else -%}
{{ context['decode_' ~ decoder](x) }}
{%- endif -%}
{%- endmacro %}
