{#- Fails with one row per duplicated key. (dbt_utils is not used: `dbt deps` needs the network.)
    scope: optional SQL predicate. Only keys that occur in rows matching it are checked, but they are counted
    over the whole table, so a key in this run's files that collides with an older file's row still fails.
    Used with the run's files (landing.dbt_selection): an incremental run checks its own keys, not 10M. -#}
{% test unique_combination(model, columns, scope=none) %}
{%- set cols = columns | join(', ') %}
{#- A run over every landed file (a first load) checks the whole table in one aggregate: same answer, and
    at 10M lines 0.9 s instead of 2.4 s for the distinct + semi join. -#}
{%- if scope and not run_covers_every_file() %}
with in_scope as (select distinct {{ cols }} from {{ model }} where {{ scope }})
select {{ cols }}, count(*) as n_rows
from {{ model }} semi join in_scope using ({{ cols }})
group by {{ cols }}
having count(*) > 1
{%- else %}
select {{ cols }}, count(*) as n_rows
from {{ model }}
group by {{ cols }}
having count(*) > 1
{%- endif %}
{% endtest %}
