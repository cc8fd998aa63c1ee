{#- Per department, all payers: visits (claims), average billed per line, paid revenue vs revenue still
    pending. A roll-up of payer_department_stats. -#}
select
  department,
  cast(sum(visits) as bigint) as visits,
  cast(sum(lines) as bigint) as lines,
  {{ exact_money_mean('sum(billed_amount_not_reversed)', 'sum(lines_not_reversed)') }} as avg_billed_amount,
  sum(paid_revenue) as paid_revenue,
  sum(pending_revenue) as pending_revenue
from {{ ref('payer_department_stats') }}
group by department
