{#- Submitted -> adjudicated -> paid / denied / pending / adjusted (and reversed), by payer and month.
    Recomputed per changed payer (macros/gold_refresh.sql). -#}
{{ gold_incremental_config() }}
select
  payer,
  cast(date_trunc('month', service_date) as date) as service_month,
  count(*) as submitted_lines,
  count(*) filter (where claim_status <> 'pending') as adjudicated_lines,
  count(*) filter (where claim_status = 'paid') as paid_lines,
  count(*) filter (where claim_status = 'denied') as denied_lines,
  count(*) filter (where claim_status = 'pending') as pending_lines,
  count(*) filter (where claim_status = 'adjusted') as adjusted_lines,
  count(*) filter (where claim_status = 'reversed') as reversed_lines,
  round(count(*) filter (where claim_status <> 'pending') / count(*), 4) as adjudication_rate,
  round(count(*) filter (where claim_status in ('paid', 'adjusted'))
        / greatest(count(*) filter (where claim_status <> 'pending'), 1), 4) as approval_rate,
  any_value(through_load_id) as through_load_id
from {{ changed_silver_lines() }}
group by payer, service_month
