{#- Per rendering provider (NPI), all payers: volume, denial rate, average paid, days from service to
    payment. A roll-up of payer_provider_stats (claims and members are payer-scoped, so they add up). -#}
select
  provider_npi,
  cast(sum(lines) as bigint) as lines,
  cast(sum(claims) as bigint) as claims,
  cast(sum(members) as bigint) as members,
  round(sum(denied_lines) / sum(lines), 4) as denial_rate,
  sum(paid_amount) as paid_amount,
  {{ exact_money_mean('sum(approved_paid_amount)', 'sum(approved_lines)') }} as avg_paid_amount,
  round(sum(days_to_payment_sum) / nullif(sum(paid_lines_with_date), 0), 1) as avg_days_to_payment
from {{ ref('payer_provider_stats') }}
group by provider_npi
