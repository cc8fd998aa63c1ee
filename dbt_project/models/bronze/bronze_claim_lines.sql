{#- Every landed row as text under canonical field names, plus lineage. The accepted files and the payer
    contracts are read from the tables the landing_files asset writes (macros/contracts.sql). -#}
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
