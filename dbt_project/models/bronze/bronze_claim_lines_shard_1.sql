{#- Shard 1 of bronze (macros/bronze_shards.sql); read bronze through the view bronze_claim_lines. -#}
{{ config(materialized='incremental', incremental_strategy='append',
          pre_hook="{{ bronze_shard_replace(1) }}") }}
{{ bronze_shard_select(1) }}
