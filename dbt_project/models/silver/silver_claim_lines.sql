{#- The canonical claim line: typed, normalized codes, pseudonymized member, Safe-Harbor style
    generalization (birth_year, zip3). Grain: payer, claim_id, claim_line_number, after adjustments resolve:
    the latest version of each line (macros/line_versions.sql). A view over the rows of
    silver_claim_lines_validated that broke no rule and no other version superseded (the data is stored
    once). A reversal of a version another file holds (`reverses`: that file) shows the netted amounts, 0
    (its own negative amounts are in bronze). -#}
{{ config(materialized='view') }}
select
  claim_id, claim_line_number, payer,
  member_key, birth_year, gender, zip3,
  provider_npi, department, diagnosis_code, procedure_code, place_of_service,
  service_date, paid_date,
  {%- for amount in ['billed_amount', 'allowed_amount', 'paid_amount'] %}
  case when claim_status = 'reversed' and reverses is not null then cast(0 as decimal(12, 2)) else {{ amount }}
  end as {{ amount }},
  {%- endfor %}
  claim_status, denial_reason_code, reverses,
  source_file, file_checksum, source_row_number, ingested_at
from {{ ref('silver_claim_lines_validated') }}
where len(failed_rules) = 0 and superseded_by is null
