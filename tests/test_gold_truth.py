"""Gold against an independent computation: the generator's own typed truth for the valid rows."""

from decimal import Decimal

from tests.helpers import query


def _truth(gen):
    return f"(SELECT * FROM read_parquet('{gen['manifest']}/truth_*.parquet') WHERE defect IS NULL)"


def test_total_paid_per_payer_month_equals_truth(generated_100k):
    t = _truth(generated_100k)
    want = {(p, m): (n, paid) for p, m, n, paid in query(generated_100k["warehouse"], f"""
        SELECT payer, CAST(date_trunc('month', service_date) AS DATE), count(*), sum(paid) FROM {t} GROUP BY 1, 2""")}
    got = {(p, m): (n, paid) for p, m, n, paid in query(generated_100k["warehouse"], """
        SELECT payer, service_month, lines, paid_amount FROM gold.claims_monthly_summary""")}
    assert len(want) > 40
    assert got == want


def test_denial_rate_per_payer_equals_truth(generated_100k):
    t = _truth(generated_100k)
    want = dict(query(generated_100k["warehouse"], f"""
        SELECT payer, round(count(*) FILTER (WHERE status = 'denied') / count(*), 4) FROM {t} GROUP BY 1"""))
    got = dict(query(generated_100k["warehouse"], """
        SELECT payer, round(sum(denied_lines) / sum(lines), 4) FROM gold.claims_monthly_summary GROUP BY 1"""))
    assert set(got) == {"northwind", "bluepeak", "cascade"}
    assert got == want
    assert all(0.10 < r < 0.20 for r in got.values())


def test_line_count_per_provider_equals_truth(generated_100k):
    t = _truth(generated_100k)
    want = dict(query(generated_100k["warehouse"], f"SELECT npi, count(*) FROM {t} GROUP BY 1"))
    got = dict(query(generated_100k["warehouse"], "SELECT provider_npi, lines FROM gold.provider_performance"))
    assert len(want) > 100
    assert got == want


def test_funnel_stages_add_up_and_match_truth(generated_100k):
    t = _truth(generated_100k)
    rows = query(generated_100k["warehouse"], """
        SELECT sum(submitted_lines), sum(adjudicated_lines), sum(paid_lines), sum(denied_lines),
               sum(pending_lines), sum(adjusted_lines), sum(reversed_lines) FROM gold.claims_approval_funnel""")[0]
    submitted, adjudicated, paid, denied, pending, adjusted, reversed_ = rows
    assert submitted == paid + denied + pending + adjusted + reversed_
    assert adjudicated == submitted - pending
    want = dict(query(generated_100k["warehouse"], f"SELECT status, count(*) FROM {t} GROUP BY 1"))
    assert (paid, denied, pending, adjusted, reversed_) == (
        want["paid"], want["denied"], want["pending"], want["adjusted"], want["reversed"])


def test_department_revenue_equals_truth(generated_100k):
    t = _truth(generated_100k)
    want = dict(query(generated_100k["warehouse"], f"""
        SELECT department, coalesce(sum(paid) FILTER (WHERE status IN ('paid', 'adjusted', 'reversed')), 0)
        FROM {t} GROUP BY 1"""))
    got = dict(query(generated_100k["warehouse"], "SELECT department, paid_revenue FROM gold.department_revenue"))
    assert got == want and all(isinstance(v, Decimal) for v in got.values())
