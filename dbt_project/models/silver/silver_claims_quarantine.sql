{#- Every rejected bronze row with the rules it broke. Values are the raw text of non-PII fields; member
    identity is the pseudonym only. The clear row stays in bronze at (source_file, source_row_number).
    A view over silver_claim_lines_validated. -#}
{{ config(materialized='view') }}
select
  payer, source_file, file_checksum, source_row_number, ingested_at,
  failed_rules, len(failed_rules) as failed_rule_count,
  claim_id, raw_claim_line_number as claim_line_number, member_key,
  provider_npi, department, raw_diagnosis_code as diagnosis_code, procedure_code, place_of_service,
  raw_service_date as service_date, raw_paid_date as paid_date,
  raw_billed_amount as billed_amount, raw_allowed_amount as allowed_amount, raw_paid_amount as paid_amount,
  raw_claim_status as claim_status, denial_reason_code
from {{ ref('silver_claim_lines_validated') }}
where len(failed_rules) > 0
