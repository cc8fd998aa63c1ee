{#- Every landed row as text under canonical field names, plus lineage. The file list (accepted by the
    landing registry) and the payer contracts arrive in vars from Dagster. -#}
-- depends_on: {{ source('landing', 'landing_file_registry') }}
{%- set fields = var('canonical_fields') %}
{%- set files = var('landing_files') %}
{%- if files | length == 0 %}
{{ bronze_empty(fields) }}
{%- else %}
{%- for file in files %}
{{ bronze_select(file, var('contracts')[file.payer], fields) }}
{{ "union all" if not loop.last }}
{%- endfor %}
{%- endif %}
