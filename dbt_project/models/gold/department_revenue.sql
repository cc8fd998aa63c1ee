{#- Per department: visits (claims), average billed per line, paid revenue vs revenue still pending. -#}
select
  department,
  count(distinct payer || ':' || claim_id) as visits,
  count(*) as lines,
  cast(avg(billed_amount) filter (where claim_status <> 'reversed') as decimal(12, 2)) as avg_billed_amount,
  coalesce(sum(paid_amount) filter (where claim_status in ('paid', 'adjusted', 'reversed')), 0) as paid_revenue,
  coalesce(sum(billed_amount) filter (where claim_status = 'pending'), 0) as pending_revenue
from {{ ref('silver_claim_lines') }}
group by all
