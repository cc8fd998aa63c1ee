{#- Per department and payer: the additive parts of department_revenue. Recomputed per changed payer
    (macros/gold_refresh.sql). -#}
{{ gold_incremental_config() }}
select
  department,
  payer,
  count(distinct claim_id) as visits,
  count(*) as lines,
  sum(billed_amount) filter (where claim_status <> 'reversed') as billed_amount_not_reversed,
  count(*) filter (where claim_status <> 'reversed') as lines_not_reversed,
  coalesce(sum(paid_amount) filter (where claim_status in ('paid', 'adjusted', 'reversed')), 0) as paid_revenue,
  coalesce(sum(billed_amount) filter (where claim_status = 'pending'), 0) as pending_revenue,
  any_value(through_load_id) as through_load_id
from {{ changed_silver_lines() }}
group by department, payer
