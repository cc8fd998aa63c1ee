{#- Fails with one row per duplicated key. (dbt_utils is not used: `dbt deps` needs the network.) -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
