{{ cdc_staging() }}
