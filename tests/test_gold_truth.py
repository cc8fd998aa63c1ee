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


def test_days_to_payment_count_paid_lines_only_and_every_mart_agrees_on_total_paid(tmp_path):
    """A denied or pending line can carry an adjudication date: it is not a payment, so it counts neither in
    days from service to payment nor as paid, in every mart alike. (One that carries a paid amount is
    quarantined: paid_amount_on_unpaid_status, tests/test_landing_flow.py.)"""
    import csv

    from tests.helpers import SAMPLE_LANDING, materialize_graph

    src = SAMPLE_LANDING / "northwind" / "northwind_claims_001.csv"
    header, *rows = list(csv.reader(src.open(newline="")))
    col = {name: header.index(name) for name in header}
    paid = [r for r in rows if r[col["status"]] == "paid"][:3]

    def line(r, status, paid_date, paid_amount, claim):
        r = list(r)
        r[col["claim_id"]], r[col["line_number"]] = claim, "1"
        r[col["rendering_npi"]], r[col["service_date"]] = "1234567893", "2025-01-01"
        r[col["status"]], r[col["paid_date"]], r[col["paid_amount"]] = status, paid_date, paid_amount
        r[col["denial_code"]] = "CO-45" if status == "denied" else ""
        return r

    crafted = [line(paid[0], "paid", "2025-02-10", "20.00", "XD1"),        # 40 days
               line(paid[1], "denied", "2025-07-20", "0.00", "XD2"),       # adjudicated 200 days later
               line(paid[2], "pending", "2025-08-26", "0.00", "XD3")]      # 237 days
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)
    with (landing / "northwind" / "nw_days.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *crafted])
    wh = tmp_path / "wh.duckdb"
    assert materialize_graph(landing, wh).success
    assert query(wh, "SELECT lines, avg_days_to_payment FROM gold.provider_performance "
                     "WHERE provider_npi = '1234567893'") == [(3, Decimal("40.0"))]
    totals = query(wh, """SELECT (SELECT sum(paid_amount) FROM gold.claims_monthly_summary),
                                 (SELECT sum(paid_amount) FROM gold.provider_performance),
                                 (SELECT sum(paid_revenue) FROM gold.department_revenue)""")[0]
    assert totals == (Decimal("20.00"),) * 3


def test_a_claim_naming_two_members_in_two_files_fails_gold_naming_the_rule_and_where_to_look(tmp_path):
    """Silver quarantines a claim whose lines in one file name two members (claim_member_mismatch,
    test_landing_flow.py) but does not compare lines sent in different files: such a claim reaches gold,
    where the blocking check fails saying which rule broke and for which NPI and payer."""
    import csv

    from tests.helpers import SAMPLE_LANDING, check_result, materialize_graph

    src = SAMPLE_LANDING / "northwind" / "northwind_claims_001.csv"
    header, *rows = list(csv.reader(src.open(newline="")))
    col = {name: header.index(name) for name in header}
    paid = [r for r in rows if r[col["status"]] == "paid"]
    other = next(r for r in paid if r[col["member_id"]] != paid[0][col["member_id"]])
    crafted = []
    for n, r in enumerate([paid[0], other], start=1):
        r = list(r)
        r[col["claim_id"]], r[col["line_number"]], r[col["rendering_npi"]] = "XM1", str(n), "1234567893"
        crafted.append(r)
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)
    for name, line in zip(("nw_two_members_a.csv", "nw_two_members_b.csv"), crafted):
        with (landing / "northwind" / name).open("w", newline="") as f:
            csv.writer(f).writerows([header, line])
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh)
    assert not result.success
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE claim_id = 'XM1'") == [(2,)]
    check = check_result(result, "pandera_PayerProviderStats")
    assert not check.passed
    assert check.description == ("1 rows: failed table.members_within_claims_each_claim_one_member (1); e.g. "
                                 "table.members_within_claims_each_claim_one_member: provider_npi=1234567893, "
                                 "payer=northwind")
