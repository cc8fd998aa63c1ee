{#- A column of an existing incremental table that a warehouse built by an older MedFlow may not have: the
    models that read their own earlier rows (`{{ this }}`) name such a column through column_or_null(), so
    that such a warehouse gets dbt's clear "out of sync" error for the model (on_schema_change: fail, in
    dbt_project.yml) instead of a binder error about one column. One catalog query, in incremental runs. -#}
{% macro column_or_null(relation, column, type) -%}
  {%- set names = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list -%}
  {%- if column | lower in names -%}{{ column }}{%- else -%}cast(null as {{ type }}){%- endif -%}
{%- endmacro %}
