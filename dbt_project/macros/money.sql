{#- total / n for a money total (DECIMAL, 2 decimals) over n lines, rounded half away from zero to the cent
    in exact integer arithmetic. DuckDB's avg() and "/" on DECIMAL go through DOUBLE, which rounds an exact
    half cent (124247.55 / 482 = 257.775) either way. NULL when n = 0. -#}
{% macro exact_money_mean(total, n) -%}
case when {{ n }} > 0 then
  cast(cast(sign({{ total }}) * ((abs(cast({{ total }} * 100 as hugeint)) * 2 + {{ n }}) // (2 * {{ n }}))
            as decimal(38, 0)) * 0.01 as decimal(12, 2))
end
{%- endmacro %}
