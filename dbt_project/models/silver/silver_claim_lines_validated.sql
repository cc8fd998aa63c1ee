{#- Every bronze row parsed with its payer's contract, the member replaced by a keyed pseudonym, and the
    list of rules it broke. This is the one physical silver table of claim lines: silver_claim_lines (no
    broken rule, the latest version of each line) and silver_claims_quarantine (some) are views over it,
    and the versions of a line another file's version replaced stay here, marked superseded_by that file
    (macros/line_versions.sql), so bronze rows = silver rows + superseded versions + quarantined rows by
    construction. No clear PII is kept here; the member's other pseudonyms (name, email, phone, SSN) are
    computed once per distinct member in silver_members. -#}
{{ config(materialized='incremental', incremental_strategy='append',
          pre_hook=["{{ remember_run_claims() }}", "{{ replace_run_files(selected_files()) }}"],
          post_hook="{{ resolve_line_versions() }}") }}
-- depends_on: {{ ref('safe_harbor_restricted_zip3') }} (zip3() reads it)
{%- set contracts = landing_state().contracts %}
{#- The run's rows, read once per use from bronze (columnar: each use reads only its columns). -#}
{%- set run_rows -%}
(select * from {{ ref('bronze_claim_lines') }} where source_file in {{ selected_files() }})
{%- endset %}
{%- set claim_id_expr = "nullif(" ~ trim_space("claim_id") ~ ", '')" %}
{#- digits only: a cast alone reads '1.5' as 2 and '1e2' as 100 -#}
{%- set line_text = trim_space("claim_line_number") %}
{%- set line_expr = "case when regexp_full_match(" ~ line_text ~ ", '[0-9]+') then try_cast(" ~ line_text
                    ~ " as integer) end" %}
{#- Bronze fields whose raw text the quarantine shows (as raw_<field>; no PII among these). -#}
{%- set raw_fields = quarantine_raw_fields() %}
with member_keys as (
  {#- one HMAC per distinct member id, not per line (a member has ~6 lines) -#}
  select member_ref, {{ pseudonym('member_ref', 'member') }} as member_key
  from (select distinct upper(member_id) as member_ref from {{ run_rows }} b where member_id is not null)
),
parsed as (
  select
    payer, source_file, file_checksum, source_row_number, ingested_at,
    {{ claim_id_expr }} as claim_id,
    {{ line_expr }} as claim_line_number,
    mk.member_key,
    {{ by_payer(contracts, parse_date, 'member_birth_date') }} as birth_date,
    {{ gender('member_gender') }} as gender,
    {#- the digits once per row (an alias the next line reuses), not three times inside zip3() -#}
    {{ digits('member_zip') }} as member_zip_digits,
    {{ zip3_of_digits('member_zip_digits') }} as zip3,
    trim(provider_npi) as provider_npi,
    {{ npi_number('trim(provider_npi)') }} as npi_number,
    {#- lower case ASCII: accents stripped, every character but a-z, 0-9 and _ becomes _ ('OB/GYN' -> 'ob_gyn') -#}
    coalesce(nullif(regexp_replace(lower(strip_accents(trim(department))), '[^a-z0-9_]', '_', 'g'), ''), 'unknown')
      as department,
    upper(replace(trim(diagnosis_code), '.', '')) as diagnosis_code,
    upper(trim(procedure_code)) as procedure_code,
    case when regexp_full_match(trim(place_of_service), '[0-9]{1,2}') then lpad(trim(place_of_service), 2, '0')
         else trim(place_of_service) end as place_of_service,
    {{ by_payer(contracts, parse_date, 'service_date') }} as service_date,
    {{ by_payer(contracts, parse_date, 'paid_date') }} as paid_date,
    {{ by_payer(contracts, parse_amount, 'billed_amount') }} as billed_amount,
    {{ by_payer(contracts, parse_amount, 'allowed_amount') }} as allowed_amount,
    {{ by_payer(contracts, parse_amount, 'paid_amount') }} as paid_amount,
    {{ by_payer(contracts, parse_status, 'claim_status') }} as claim_status,
    nullif(regexp_replace(upper(trim(denial_reason_code)), '^(CO|PR|OA|PI|CR)-?', ''), '') as denial_reason_code,
    member_birth_date is not null and trim(member_birth_date) <> '' as has_birth_date,
    {%- for field in raw_fields %}
    {{ field }} as raw_{{ field }}{{ "," if not loop.last }}
    {%- endfor %}
  from {{ run_rows }} b
  left join member_keys mk on mk.member_ref = upper(member_id)
),
{#- Two rules that compare a file's rows with each other, found from the claim's key columns alone (a window
    over every column would sort the whole table: it cost 20 of 57 s at 10M), one window for both:
    - duplicate_line: the same payer + claim id + line came earlier in the same file, except a reversal and
      one copy that is not a reversal (a payer sends a reversal and its correction together, or a line and
      its void): that pair is two versions of the line, and the post-hook orders them. A third copy is a
      duplicate. A copy in another file is a version of the line, not a duplicate: macros/line_versions.sql
      (this model's post-hook) keeps the latest version in silver_claim_lines and marks the earlier ones
      superseded. The pair's second row is stored superseded by its own file until the post-hook decides
      (so the hook's full-build scope finds its claim).
    - claim_member_mismatch: the lines of one claim in one file name more than one member. Every line of
      the claim in the file is flagged (one without a member too: the file does not say which member is
      meant); lines without a member do not make a claim mixed. The window compares the ids as written; the
      few claims whose ids differ so are compared again as member_key hashes them ("M1" and " m1" are one
      member). Lines of one claim in different files are compared by the post-hook, on each line's latest
      version (claim_member_conflict; a later file may correct the member by sending the claim again).
    At 10M lines, alone: this window 8.1-9.5 s, the one for duplicate_line alone 6.4 s, a separate group on
    the normalized ids (beside it) 7.5-9.0 s (benchmarks/probes.py cross-row; BENCHMARKS.md, session 25). -#}
claim_rows as (
  select source_file, source_row_number, payer, claim_id, member_id, is_reversal,
         claim_line_number is not null and claim_line_number = lag(claim_line_number) over in_order as is_second,
         coalesce(claim_line_number = lag(claim_line_number, 2) over in_order, false) as is_third,
         lag(is_reversal) over in_order as reversal_before,
         min(member_id) over in_claim <> max(member_id) over in_claim as ids_differ_as_written
  {#- is_reversal a boolean before the window: carrying the status text through it cost ~0.8 s at 10M, this
      ~0.45 s (BENCHMARKS.md, session 29) #}
  from (select payer, source_file, source_row_number, member_id, {{ claim_id_expr }} as claim_id,
               {{ line_expr }} as claim_line_number,
               coalesce({{ by_payer(contracts, parse_status, 'claim_status') }} = 'reversed', false) as is_reversal
        from {{ run_rows }} b)
  where claim_id is not null
  window in_claim as (partition by source_file, payer, claim_id),
         in_order as (partition by source_file, payer, claim_id order by claim_line_number, source_row_number)
  qualify is_second or ids_differ_as_written
),
cross_row as (
  {#- a second copy is a duplicate unless one of it and the copy before it is a reversal and the other not (an
      unknown status is not a reversal); a third copy is -#}
  select source_file, source_row_number,
         is_second and (is_third or is_reversal = reversal_before) as is_duplicate,
         is_second and not is_duplicate as is_pair,
         ids_differ_as_written and min(member_ref) over in_claim <> max(member_ref) over in_claim as is_mixed_claim
  from (select *, {{ pseudonym_input('upper(member_id)') }} as member_ref from claim_rows)
  window in_claim as (partition by source_file, payer, claim_id)
),
flagged as (
  select p.*, coalesce(x.is_duplicate, false) as is_duplicate, coalesce(x.is_pair, false) as is_pair,
         coalesce(x.is_mixed_claim, false) as is_mixed_claim
  from parsed p
  left join cross_row x using (source_file, source_row_number)
),
ruled as (
select
  * exclude (is_duplicate, is_pair, is_mixed_claim, birth_date, has_birth_date, npi_number, member_zip_digits)
    {#- provider_npi is kept only when it has an NPI's form (10 digits, the first 1 or 2; its check digit is
        invalid_npi's): a line whose values moved one column (README: the extra column DuckDB does not
        catch) holds the member's full ZIP code there. -#}
    replace (case when npi_number is not null then provider_npi end as provider_npi),
  year(birth_date) as birth_year,
  list_filter([
    case when claim_id is null then 'missing_claim_id' end,
    case when claim_line_number is null or claim_line_number < 1 then 'invalid_claim_line_number' end,
    case when member_key is null then 'missing_member_id' end,
    case when service_date is null or service_date < date '1900-01-01' then 'invalid_service_date' end,
    case when nullif(trim(raw_paid_date), '') is not null and paid_date is null then 'invalid_paid_date' end,
    case when has_birth_date and (birth_date is null or birth_date < date '1900-01-01' or birth_date > service_date)
         then 'invalid_birth_date' end,
    case when billed_amount is null or allowed_amount is null or paid_amount is null then 'invalid_amount' end,
    case when claim_status is null then 'unknown_status' end,
    case when not {{ npi_number_is_valid('npi_number') }} then 'invalid_npi' end,
    case when not regexp_full_match(coalesce(diagnosis_code, ''), {{ icd10_pattern() }})
         then 'invalid_diagnosis_code' end,
    case when not regexp_full_match(coalesce(procedure_code, ''), {{ procedure_pattern() }})
         then 'invalid_procedure_code' end,
    case when place_of_service is not null and not regexp_full_match(place_of_service, '[0-9]{2}')
         then 'invalid_place_of_service' end,
    {#- a reversal takes back what was paid: its amounts are the original's, negative -#}
    case when claim_status <> 'reversed' and not (paid_amount <= allowed_amount and allowed_amount <= billed_amount)
           or claim_status = 'reversed' and not (billed_amount <= allowed_amount and allowed_amount <= paid_amount
                                                 and paid_amount <= 0)
         then 'amounts_out_of_order' end,
    case when claim_status in ('denied', 'pending') and paid_amount <> 0 then 'paid_amount_on_unpaid_status' end,
    case when paid_date < service_date then 'paid_before_service' end,
    case when claim_status is not null and claim_status <> 'reversed'
          and (billed_amount < 0 or allowed_amount < 0 or paid_amount < 0)
         then 'negative_amount' end,
    {#- a day of slack: the payer's calendar may be a day ahead of the load's (UTC) #}
    case when service_date > cast(ingested_at as date) + 1 then 'future_service_date' end,
    case when paid_date > cast(ingested_at as date) + 1 then 'future_paid_date' end,
    {#- a department silver does not know is free text: it stays out of silver and gold #}
    case when department not in (select department from {{ ref('departments') }}) then 'invalid_department' end,
    case when denial_reason_code is not null and not regexp_full_match(denial_reason_code, '[0-9A-Z]{1,4}')
         then 'invalid_denial_reason_code' end,
    case when is_duplicate then 'duplicate_line' end,  {#- claim_rows: a claim id and a line number -#}
    case when is_mixed_claim then 'claim_member_mismatch' end
    {#- reversal_mismatch, reversal_of_rejected_line and claim_member_conflict are added by the post-hook,
        which sees the line's other versions and the claim's lines in other files -#}
  ], r -> r is not null) as failed_rules,
  {#- set by the post-hook: the file of the next version of this line (a later file's, or one that landed
      earlier when files landed out of order: a reversal that takes it back, an adjustment that replaced
      it; its own file for the first of a reversal and another copy in one file); for a reversal, the file
      of the version it takes back. Until then the second row of such a pair is marked with its own file,
      which puts its claim in the post-hook's scope on a full build. -#}
  case when is_pair then source_file end as superseded_by,
  cast(null as varchar) as reverses
from flagged
)
{#- The raw text is what the quarantine shows; a row that broke no rule does not keep it (at 10M lines,
    writing it for every row cost ~2 s). -#}
select * replace (
  {%- for field in raw_fields %}
  case when len(failed_rules) > 0 then raw_{{ field }} end as raw_{{ field }}{{ "," if not loop.last }}
  {%- endfor %})
from ruled
