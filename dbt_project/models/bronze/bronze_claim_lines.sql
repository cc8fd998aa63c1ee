{#- Every landed row as text under canonical field names, plus lineage. Incremental by file: a run reads
    the files of its partitions (accepted by the landing registry) and replaces exactly their rows. The rows
    are stored in two shard tables, loaded side by side (macros/bronze_shards.sql); this view is bronze for
    every reader. Contracts and files come from the tables the landing_files asset writes
    (macros/contracts.sql). -#}
{{ config(materialized='view') }}
{%- for k in range(bronze_shards()) %}
select * from {{ ref('bronze_claim_lines_shard_' ~ k) }}
{{ "union all by name" if not loop.last }}
{%- endfor %}
