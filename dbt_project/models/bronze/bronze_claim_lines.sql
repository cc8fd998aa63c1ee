{#- Every landed row as text under canonical field names, plus lineage. Incremental by file: a run reads
    the files of its partitions (accepted by the landing registry) and replaces exactly their rows
    (pre-hook delete + append, in one transaction). Contracts and files come from the tables the
    landing_files asset writes (macros/contracts.sql). -#}
{{ config(materialized='incremental', incremental_strategy='append',
          pre_hook="{{ replace_run_files() }}") }}
-- depends_on: {{ source('landing', 'landing_file_registry') }}
{%- set state = landing_state() %}
{%- set fields = (state.contracts.values() | list)[0].canonical_fields if state.contracts else [] %}
{%- if state.files | length == 0 %}
{{ bronze_empty(fields) }}
{%- else %}
{%- for file in state.files %}
{{ bronze_select(file, state.contracts[file.payer], fields) }}
{{ "union all" if not loop.last }}
{%- endfor %}
{%- endif %}
