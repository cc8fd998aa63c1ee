{#- Per rendering provider (NPI) and payer: the additive parts of provider_performance (sums and counts,
    not averages), so the cross-payer mart is a cheap roll-up. Claims and members are counted within the
    payer: claim ids and member ids are assigned by the payer. Recomputed per changed payer
    (macros/gold_refresh.sql). -#}
{{ gold_incremental_config() }}
select
  provider_npi,
  payer,
  count(*) as lines,
  count(distinct claim_id) as claims,
  count(distinct member_key) as members,
  count(*) filter (where claim_status = 'denied') as denied_lines,
  {#- paid as in every mart: paid, adjusted and reversed lines (claims_monthly_summary) -#}
  coalesce(sum(paid_amount) filter (where claim_status in ('paid', 'adjusted', 'reversed')), 0) as paid_amount,
  sum(paid_amount) filter (where claim_status in ('paid', 'adjusted')) as approved_paid_amount,
  count(*) filter (where claim_status in ('paid', 'adjusted')) as approved_lines,
  {#- days to payment: lines that were paid (a denied or pending line may carry an adjudication date) -#}
  sum(paid_date - service_date) filter (where paid_date is not null and claim_status in ('paid', 'adjusted'))
    as days_to_payment_sum,
  count(*) filter (where paid_date is not null and claim_status in ('paid', 'adjusted')) as paid_lines_with_date,
  any_value(through_load_id) as through_load_id
from {{ changed_silver_lines() }}
group by provider_npi, payer
