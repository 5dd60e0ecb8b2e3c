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
    coalesce({{ decode_text(cdc_col(key_column, 'x.row_data')) }},
             {{ decode_text(cdc_col(key_column, cdc_envelope('b.kafka_key'))) }}) as record_key,
    x.cdc_operation,
    x.row_data,
    {{ cdc_source_position('x.cdc_source') }} as source_position,
    (x.cdc_operation = 'r'
        or coalesce(x.cdc_source ->> 'snapshot', 'false') not in ('false', '')) as is_snapshot,
    coalesce({{ decode_instant("(x.cdc_source -> 'ts_ms')") }},
             {{ decode_instant("(e.envelope -> 'ts_ms')") }}) as source_timestamp,
    b.kafka_topic,
    b.kafka_partition,
    b.kafka_offset,
    b.kafka_timestamp,
    b.batch_file,
    b.ingested_at
from {{ relation }} as b
{#- OFFSET 0 keeps each lateral subquery from being inlined, so the (large, TOASTed)
    payload is detoasted and unwrapped once per row instead of once per reference. #}
cross join lateral (
    select {{ cdc_envelope('b.cdc_payload') }} as envelope offset 0
) as e
cross join lateral (
    select
        e.envelope ->> 'op' as cdc_operation,
        e.envelope -> 'source' as cdc_source,
        case when e.envelope ->> 'op' = 'd' then e.envelope -> 'before'
             else e.envelope -> 'after' end as row_data
    offset 0
) as x
where b.cdc_payload is not null
  and jsonb_typeof(e.envelope) = 'object'
  and x.cdc_operation in ('c', 'u', 'd', 'r')
  and jsonb_typeof(x.row_data) = 'object'
{%- endmacro %}

{#-
  The latest event per key of `events_sql` (the SQL of a cdc_events() select): by
  source position, a streamed change after a snapshot record of the same position,
  then by Kafka offset. Only the small ranking columns go through the sort; the
  winning events are then fetched by their Kafka position (the bronze unique key),
  so the row payloads of superseded events are never carried around.
-#}
{% macro latest_event_per_key(events_sql, key='record_key') -%}
select latest.*
from ({{ events_sql }}) as latest
where (latest.kafka_topic, latest.kafka_partition, latest.kafka_offset) in (
    select ranked.kafka_topic, ranked.kafka_partition, ranked.kafka_offset
    from (
        select
            ev.kafka_topic,
            ev.kafka_partition,
            ev.kafka_offset,
            row_number() over (
                partition by ev.{{ key }}
                order by coalesce(ev.source_position, '') desc,
                         case when ev.is_snapshot then 0 else 1 end desc,
                         ev.kafka_offset desc,
                         ev.kafka_partition desc
            ) as cdc_rank
        from ({{ events_sql }}) as ev
        where ev.{{ key }} is not null
    ) as ranked
    where ranked.cdc_rank = 1
)
{%- endmacro %}
