{#- Per rendering provider (NPI): volume, denial rate, average paid, days from service to payment. -#}
select
  provider_npi,
  count(*) as lines,
  count(distinct payer || ':' || claim_id) as claims,
  count(distinct member_key) as members,
  round(count(*) filter (where claim_status = 'denied') / count(*), 4) as denial_rate,
  sum(paid_amount) as paid_amount,
  cast(avg(paid_amount) filter (where claim_status in ('paid', 'adjusted')) as decimal(12, 2)) as avg_paid_amount,
  round(avg(paid_date - service_date) filter (where paid_date is not null and claim_status <> 'reversed'), 1)
    as avg_days_to_payment
from {{ ref('silver_claim_lines') }}
group by all
