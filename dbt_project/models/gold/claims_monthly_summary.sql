{#- Month of service x payer. denial_rate = denied lines / all lines. Recomputed per changed payer
    (macros/gold_refresh.sql). -#}
{{ gold_incremental_config() }}
select
  cast(date_trunc('month', service_date) as date) as service_month,
  payer,
  count(*) as lines,
  count(distinct claim_id) as claims,
  count(distinct member_key) as members,
  sum(billed_amount) as billed_amount,
  sum(allowed_amount) as allowed_amount,
  {#- paid: the amounts of paid, adjusted and reversed lines, in every mart; a denied or pending line that
      carries an amount has not been paid -#}
  coalesce(sum(paid_amount) filter (where claim_status in ('paid', 'adjusted', 'reversed')), 0) as paid_amount,
  count(*) filter (where claim_status = 'denied') as denied_lines,
  round(count(*) filter (where claim_status = 'denied') / count(*), 4) as denial_rate,
  any_value(through_load_id) as through_load_id
from {{ changed_silver_lines() }}
group by service_month, payer
