{#-
  The schemas are part of the data contract (`staging_staging`, `marts`): use the
  configured schema name exactly as given, never dbt's `<target>_<custom>` prefix.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
