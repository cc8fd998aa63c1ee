{#- Every member seen in the landed files, pseudonymized: keyed HMAC-SHA256 of the normalized member id,
    "first last" name, email, phone digits and SSN digits, plus birth year, gender and zip3 (never the exact
    values). Hashed once per distinct member version (names and emails once per distinct value), not once
    per claim line. One row per distinct combination (a member whose phone changed has two rows).
    Incremental: a run appends the member versions its files bring that are not there yet. For the payer
    of a file that replaces rows loaded from other bytes (a corrected file), the run rebuilds that payer's
    rows from all of its bronze instead (payer is part of every row), so a version only the old bytes had
    does not stay. -#}
{#- meta.order_after: run after silver_claim_lines_validated, whose data it does not read (the ref below; the
    asset graph leaves the edge out: MedflowTranslator). At 10M lines, side by side on two cores and DuckDB's
    800MB, the two statements took longer than one after the other (`benchmarks/probes.py silver-order`,
    BENCHMARKS.md). -#}
{{ config(materialized='incremental', incremental_strategy='append',
          meta={'order_after': ['silver_claim_lines_validated']},
          pre_hook="{% set reloaded = payers_reloaded() if is_incremental() else [] %}"
                   "{% if reloaded %}delete from {{ this }} where payer in {{ sql_list(reloaded) }}{% endif %}") }}
{%- set reloaded = payers_reloaded() if is_incremental() else [] %}
-- depends_on: {{ ref('safe_harbor_restricted_zip3') }} (zip3() reads it)
-- depends_on: {{ ref('silver_claim_lines_validated') }} (order only: meta.order_after)
{%- set contracts = landing_state().contracts %}
with distinct_members as (
  select distinct payer, member_id, member_first_name, member_last_name, member_full_name, member_email,
         member_phone, member_ssn, member_birth_date, member_gender, member_zip
  from {{ ref('bronze_claim_lines') }}
  where {{ pseudonym_input('member_id') }} is not null
    and (source_file in {{ selected_files() }}
         {%- if reloaded %} or payer in {{ sql_list(reloaded) }}{% endif %})
),
{#- each pseudonym's exact input (pseudonym_input) and the generalized fields, once per distinct combination:
    raw versions that differ only in case, spaces or punctuation hash once, and no distinct over the
    64-character pseudonyms is needed after hashing -#}
inputs as materialized (
  select distinct
    payer,
    {{ pseudonym_input('upper(member_id)') }} as member_ref,
    {{ pseudonym_input(by_payer(contracts, parse_name, 'member_full_name')) }} as name_ref,
    {{ pseudonym_input(email_text('member_email')) }} as email_ref,
    {{ pseudonym_input(phone_text('member_phone')) }} as phone_ref,
    {{ pseudonym_input(ssn_text('member_ssn')) }} as ssn_ref,
    {#- a birth date silver quarantines as impossible (before 1900, in the future) gives no birth year -#}
    case when {{ by_payer(contracts, parse_date, 'member_birth_date') }} between date '1900-01-01' and current_date
         then year({{ by_payer(contracts, parse_date, 'member_birth_date') }}) end as birth_year,
    {{ gender('member_gender') }} as gender,
    {{ zip3('member_zip') }} as zip3
  from distinct_members
),
{#- names and emails repeat across members (at 10M lines: 1.6M member versions, 450 distinct names, 405K
    distinct emails), so they are hashed once per distinct value and joined back: 5.2M HMACs instead of 8M
    (silver_members 10.6 s -> 8.5 s alone, identical rows). Member ids, phones and SSNs are ~1 per member. -#}
{%- for field in ['name', 'email'] %}
{{ field }}_keys as materialized (
  select {{ field }}_ref, {{ pseudonym_of(field ~ '_ref', field) }} as {{ field }}_key
  from (select distinct {{ field }}_ref from inputs where {{ field }}_ref is not null)
),
{%- endfor %}
keyed as materialized (
  select
    payer,
    {{ pseudonym_of('member_ref', 'member') }} as member_key,
    n.name_key,
    e.email_key,
    {{ pseudonym_of('phone_ref', 'phone') }} as phone_key,
    {{ pseudonym_of('ssn_ref', 'ssn') }} as ssn_key,
    birth_year, gender, zip3
  from inputs
  left join name_keys n using (name_ref)
  left join email_keys e using (email_ref)
)
select * from keyed
{%- if is_incremental() %}
except
{#- only the stored versions of this run's members: a semi-join on member_key, not a compare of every row #}
select * from {{ this }} where member_key in (select member_key from keyed)
{%- endif %}
