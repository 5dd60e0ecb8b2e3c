{#- Generated at compile time from its source contract, base_product.yml (macros/staging.sql). -#}
{{ cdc_staging() }}
