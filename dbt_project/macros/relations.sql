{#- ref() and source() render schema.table without the catalog. DuckDB names a file's catalog after the
    file (medflow.duckdb -> "medflow"), and a view keeps the text of its references: with the catalog in it,
    a copied or renamed warehouse (or one attached under another alias) had views that no longer bind.
    DuckDB binds a view's schema.table inside the view's own catalog, so without it they bind anywhere. -#}
{% macro ref() -%}
  {%- set rel = builtins.ref(*varargs, **kwargs) -%}
  {%- if execute and rel is not none and rel.include is defined -%}{{ return(rel.include(database=False)) }}{%- endif -%}
  {{ return(rel) }}
{%- endmacro %}

{% macro source() -%}
  {%- set rel = builtins.source(*varargs, **kwargs) -%}
  {%- if execute and rel is not none and rel.include is defined -%}{{ return(rel.include(database=False)) }}{%- endif -%}
  {{ return(rel) }}
{%- endmacro %}
