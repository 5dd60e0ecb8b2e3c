{#-
  Generic Debezium CDC decoding for bronze event tables. Nothing here is specific
  to one source table: models name their relation, key column and columns.

  A bronze row holds one Kafka record: kafka_topic, kafka_partition, kafka_offset,
  kafka_timestamp (epoch ms), kafka_key (jsonb), cdc_payload (jsonb), batch_file,
  ingested_at. cdc_payload is the Debezium value, either the bare envelope
  {"before","after","source","op","ts_ms"} (JSON converter, schemas disabled) or
  schema-wrapped {"schema": {...}, "payload": {envelope}} (schemas enabled, as in
  production). Tombstones (SQL NULL / JSON null value) carry no state and are skipped.

  Encodings handled by the decode_* macros (their argument is a jsonb expression):
    timestamps  epoch number whose unit is chosen by magnitude:
                |v| < 1e14 -> milliseconds (SQL Server datetime),
                |v| < 1e17 -> microseconds (PostgreSQL timestamp),
                otherwise  -> nanoseconds (SQL Server datetime2(7), truncated to the
                µs precision of PostgreSQL); ISO-8601 strings are read as UTC.
                The schema's field name (io.debezium.time.*) is not needed, so bare
                and schema-wrapped values decode the same way. The result is a
                `timestamp without time zone`: Debezium encodes the source wall clock.
    dates       days since 1970-01-01 (or an ISO string)
    booleans    JSON boolean (bit / boolean); 0/1 numbers and 'true'/'1' strings too
    GUIDs       uniqueidentifier (uppercase) and uuid (lowercase) -> lowercase text
    binaries    base64 (varbinary / bytea) -> bytea
    decimals    strings (decimal.handling.mode=string) -> numeric
-#}

{#- The Debezium value of a bronze row, unwrapped from {"schema","payload"} when wrapped. -#}
{% macro cdc_envelope(value) -%}
(case when jsonb_typeof({{ value }}) = 'object'
           and {{ value }} -> 'schema' is not null
           and {{ value }} -> 'payload' is not null
      then {{ value }} -> 'payload'
      else {{ value }} end)
{%- endmacro %}

{#- One column of the row state (after, or before for a delete) of a cdc_events() row. -#}
{% macro cdc_col(name, row='row_data') -%}
({{ row }} -> '{{ name }}')
{%- endmacro %}

{% macro decode_text(x) -%}
({{ x }} #>> '{}')
{%- endmacro %}

{% macro decode_bigint(x) -%}
(({{ x }} #>> '{}')::bigint)
{%- endmacro %}

{% macro decode_integer(x) -%}
(({{ x }} #>> '{}')::integer)
{%- endmacro %}

{% macro decode_float(x) -%}
(({{ x }} #>> '{}')::double precision)
{%- endmacro %}

{% macro decode_decimal(x) -%}
(({{ x }} #>> '{}')::numeric)
{%- endmacro %}

{% macro decode_bool(x) -%}
(case jsonb_typeof({{ x }})
      when 'boolean' then ({{ x }} #>> '{}')::boolean
      when 'number'  then ({{ x }} #>> '{}')::numeric <> 0
      when 'string'  then lower({{ x }} #>> '{}') in ('true', 't', '1', 'yes', 'y')
 end)
{%- endmacro %}

{% macro decode_guid(x) -%}
lower({{ x }} #>> '{}')
{%- endmacro %}

{% macro decode_binary(x) -%}
decode({{ x }} #>> '{}', 'base64')
{%- endmacro %}

{#- Epoch µs as a `timestamp` without float rounding (µs values stay below 2^53). -#}
{% macro _epoch_micros_to_timestamp(micros) -%}
(timestamp '1970-01-01 00:00:00' + ({{ micros }})::bigint * interval '1 microsecond')
{%- endmacro %}

{% macro decode_timestamp(x) -%}
(case jsonb_typeof({{ x }})
      when 'number' then
          case when abs(({{ x }} #>> '{}')::numeric) < 1e14
                    then {{ _epoch_micros_to_timestamp("(" ~ x ~ " #>> '{}')::numeric * 1000") }}
               when abs(({{ x }} #>> '{}')::numeric) < 1e17
                    then {{ _epoch_micros_to_timestamp("(" ~ x ~ " #>> '{}')::numeric") }}
               else {{ _epoch_micros_to_timestamp("floor((" ~ x ~ " #>> '{}')::numeric / 1000)") }}
          end
      when 'string' then ({{ x }} #>> '{}')::timestamptz at time zone 'UTC'
 end)
{%- endmacro %}

{#- An instant (e.g. source.ts_ms), as timestamptz. -#}
{% macro decode_instant(x) -%}
({{ decode_timestamp(x) }} at time zone 'UTC')
{%- endmacro %}

{% macro decode_date(x) -%}
(case jsonb_typeof({{ x }})
      when 'number' then date '1970-01-01' + ({{ x }} #>> '{}')::integer
      when 'string' then ({{ x }} #>> '{}')::date
 end)
{%- endmacro %}

{#-
  A sortable text position of the change in the source's log:
    sqlserver   commit_lsn / change_lsn / event_serial_no (LSNs are fixed-width hex
                'xxxxxxxx:xxxxxxxx:xxxx', so they sort as text; a snapshot record
                has no change_lsn and so sorts before a change of the same commit)
    postgresql  lsn (a number), zero-padded
    other       '' (ordering then falls to the Kafka offset)
-#}
{% macro cdc_source_position(source) -%}
(case {{ source }} ->> 'connector'
      when 'sqlserver' then
          lower(coalesce({{ source }} ->> 'commit_lsn', '')) || '/'
          || lower(coalesce({{ source }} ->> 'change_lsn', '')) || '/'
          || lpad(coalesce({{ source }} ->> 'event_serial_no', '0'), 12, '0')
      when 'postgresql' then lpad(coalesce({{ source }} ->> 'lsn', '0'), 24, '0')
      else ''
 end)
{%- endmacro %}

{#-
  Every state-carrying change event of a bronze table, one row each:
    record_key      the key column's value (from the row, else from the Kafka key)
    cdc_operation   c | u | d | r
    row_data        `after`, or `before` for a delete (jsonb, keyed by source column)
    source_position see cdc_source_position
    is_snapshot     op 'r' or source.snapshot set
    source_timestamp source.ts_ms (else the envelope's ts_ms) as timestamptz
  plus kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, batch_file, ingested_at.
  Tombstones and events without a row (truncate, messages) are left out.
-#}
{% macro cdc_events(relation, key_column) -%}
select
    coalesce({{ decode_text(cdc_col(key_column, 'ev.row_data')) }},
             {{ decode_text(cdc_col(key_column, cdc_envelope('ev.kafka_key'))) }}) as record_key,
    ev.cdc_operation,
    ev.row_data,
    {{ cdc_source_position('ev.cdc_source') }} as source_position,
    (ev.cdc_operation = 'r'
        or coalesce(ev.cdc_source ->> 'snapshot', 'false') not in ('false', '')) as is_snapshot,
    coalesce({{ decode_instant("(ev.cdc_source -> 'ts_ms')") }},
             {{ decode_instant("(ev.envelope -> 'ts_ms')") }}) as source_timestamp,
    ev.kafka_topic,
    ev.kafka_partition,
    ev.kafka_offset,
    ev.kafka_timestamp,
    ev.batch_file,
    ev.ingested_at
from (
    select
        env.*,
        env.envelope ->> 'op' as cdc_operation,
        case when env.envelope ->> 'op' = 'd' then env.envelope -> 'before'
             else env.envelope -> 'after' end as row_data,
        env.envelope -> 'source' as cdc_source
    from (
        select b.*, {{ cdc_envelope('b.cdc_payload') }} as envelope
        from {{ relation }} as b
        where b.cdc_payload is not null
    ) as env
    where jsonb_typeof(env.envelope) = 'object'
      and env.envelope ->> 'op' in ('c', 'u', 'd', 'r')
) as ev
where jsonb_typeof(ev.row_data) = 'object'
{%- endmacro %}

{#-
  The latest event per key of a cdc_events() relation: by source position, a
  streamed change after a snapshot record of the same position, then by Kafka offset.
-#}
{% macro latest_event_per_key(relation, key='record_key') -%}
select ranked.*
from (
    select
        e.*,
        row_number() over (
            partition by e.{{ key }}
            order by coalesce(e.source_position, '') desc,
                     case when e.is_snapshot then 0 else 1 end desc,
                     e.kafka_offset desc,
                     e.kafka_partition desc
        ) as cdc_rank
    from {{ relation }} as e
    where e.{{ key }} is not null
) as ranked
where ranked.cdc_rank = 1
{%- endmacro %}
