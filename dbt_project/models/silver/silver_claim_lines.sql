{#- The canonical claim line: typed, normalized codes, pseudonymized member, Safe-Harbor style
    generalization (birth_year, zip3). Grain: payer, claim_id, claim_line_number. A view over the rows of
    silver_claim_lines_validated that broke no rule (the data is stored once). -#}
{{ config(materialized='view') }}
select
  claim_id, claim_line_number, payer,
  member_key, birth_year, gender, zip3,
  provider_npi, department, diagnosis_code, procedure_code, place_of_service,
  service_date, paid_date, billed_amount, allowed_amount, paid_amount,
  claim_status, denial_reason_code,
  source_file, file_checksum, source_row_number, ingested_at
from {{ ref('silver_claim_lines_validated') }}
where len(failed_rules) = 0
