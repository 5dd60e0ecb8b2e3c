{#- Generated at compile time from its source contract, base_measure_unit.yml (macros/staging.sql). -#}
{{ cdc_staging() }}
