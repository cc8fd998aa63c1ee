{#- Code-set validation and normalization, portable SQL behind macros. -#}

{#- NPI: 10 digits whose Luhn check over the "80840" prefix holds (the prefix adds 24 to the sum).
    npi_number(col): the NPI as a number when it is 10 digits starting with 1 or 2, else null.
    npi_number_is_valid(n): the Luhn check on that number, digit by digit with integer arithmetic (digit j
    of 10 is n // 10^(10-j) % 10; an odd position counts 2d - 9 when 2d > 9), false when n is null. Over 10M
    NPIs the check alone took 2.4 s reading each digit back from the text with substr + cast, 1.0 s this way;
    silver_claim_lines_validated at 10M got ~0.3 s faster, with identical rows. -#}
{% macro npi_number(col) -%}
case when regexp_full_match(coalesce({{ col }}, ''), '[12][0-9]{9}') then try_cast({{ col }} as bigint) end
{%- endmacro %}

{% macro npi_number_is_valid(n) -%}
coalesce((24
  {%- for j in range(1, 11) %}
  {%- set d = "(" ~ n ~ " // " ~ 10 ** (10 - j) ~ " % 10)" %}
  + {% if j % 2 == 1 %}(2 * {{ d }} - 9 * ({{ d }} // 5)){% else %}{{ d }}{% endif %}
  {%- endfor %}) % 10 = 0, false)
{%- endmacro %}

{#- ICD-10-CM after removing the dot: letter, digit, alphanumeric, then up to 4 more. -#}
{% macro icd10_pattern() %}'[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}'{% endmacro %}
{#- CPT (5 digits, or 4 digits + F/T/U) or HCPCS Level II (letter + 4 digits). -#}
{% macro procedure_pattern() %}'([0-9]{4}[0-9FTU]|[A-V][0-9]{4})'{% endmacro %}

{% macro digits(col) -%}
nullif(regexp_replace(coalesce({{ col }}, ''), '[^0-9]', '', 'g'), '')
{%- endmacro %}

{#- Keyed HMAC-SHA256 pseudonym (hex). medflow_pii_hmac is registered per connection by the
    medflow_assets.transform.connection_plugin dbt plugin; the domain keeps pseudonyms of different fields apart.
    pseudonym(expr) = pseudonym_of(pseudonym_input(expr)): the input is the trimmed text, null when empty, so
    values with the same input have the same pseudonym. -#}
{% macro pseudonym(expr, domain) -%}
{{ pseudonym_of(pseudonym_input(expr), domain) }}
{%- endmacro %}

{% macro pseudonym_input(expr) -%}
nullif({{ trim_space(expr) }}, '')
{%- endmacro %}

{#- trim() with the whitespace() class (DuckDB's trim() alone removes spaces only: an id with a tab after it
    would be another claim or member). -#}
{% macro trim_space(expr) -%}
trim({{ expr }}, ' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13) || chr(160))
{%- endmacro %}

{#- What a member's name, email, phone and SSN are reduced to before hashing, so one person gets one
    pseudonym whatever the payer's formatting. Whitespace: spaces, tabs, line breaks, no-break spaces
    (written out: RE2's \s has no no-break space, Python's has more). -#}
{% macro whitespace() -%}[ \t\n\v\f\r\x{00A0}]{%- endmacro %}

{% macro one_space(expr) -%}
trim(regexp_replace({{ expr }}, '{{ whitespace() }}+', ' ', 'g'))
{%- endmacro %}

{#- "first last": lower case, accents stripped (José, José decomposed and JOSE are one name), one space. -#}
{% macro name_text(expr) -%}
lower(strip_accents({{ one_space(expr) }}))
{%- endmacro %}

{% macro email_text(expr) -%}
lower(regexp_replace({{ expr }}, '{{ whitespace() }}+', '', 'g'))
{%- endmacro %}

{#- the last ten digits, after any extension ("x204", "ext. 204", "#204") is cut off -#}
{% macro phone_text(expr) -%}
{%- set no_extension -%}
regexp_replace({{ expr }}, '(?i){{ whitespace() }}*(x|ext|extension|#)[.:]?{{ whitespace() }}*[0-9]+{{ whitespace() }}*$', '')
{%- endset -%}
right({{ digits(no_extension) }}, 10)
{%- endmacro %}

{#- the digits. An SSN that lost its leading zeros keeps its own pseudonym: padding it back to nine digits
    could give a mistyped SSN another person's. -#}
{% macro ssn_text(expr) -%}
{{ digits(expr) }}
{%- endmacro %}

{#- The pseudonym of a pseudonym_input() (null stays null). -#}
{% macro pseudonym_of(input, domain) -%}
medflow_pii_hmac({{ sql_str(domain ~ ':') }} || {{ input }})
{%- endmacro %}

{#- Safe Harbor style generalizations. -#}
{% macro gender(col) -%}
case upper(left(trim({{ col }}), 1)) when 'F' then 'F' when 'M' then 'M' else 'U' end
{%- endmacro %}

{#- First three ZIP digits, or 000 for the sparsely populated areas Safe Harbor does not allow
    (seeds/safe_harbor_restricted_zip3.csv). -#}
{% macro zip3(col) -%}
{{ zip3_of_digits(digits(col)) }}
{%- endmacro %}

{#- zip3() of a column that already holds digits(zip): where the digits are a column (or an alias of the same
    SELECT), they are computed once instead of three times per row. -#}
{% macro zip3_of_digits(d) -%}
case when length({{ d }}) >= 5 then
  case when left({{ d }}, 3) in (select zip3 from {{ ref('safe_harbor_restricted_zip3') }}) then '000'
       else left({{ d }}, 3) end
end
{%- endmacro %}
