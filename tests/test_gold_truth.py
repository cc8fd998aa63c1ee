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


def test_a_claim_naming_two_members_in_two_files_is_quarantined_and_gold_still_guards_against_it(tmp_path):
    """Silver compares a claim's lines within a file (claim_member_mismatch, test_landing_flow.py) and across
    files (claim_member_conflict, test_line_versions.py): both lines of a claim sent in two files for two
    members are quarantined, and gold passes. Gold's blocking check stays as a second guard: a table where
    an NPI counts more members than claims (here written by hand) fails it, naming the rule, NPI and payer."""
    import csv

    import dagster as dg
    import duckdb

    from medflow_assets.resources import build_resources
    from medflow_assets.settings import load_settings
    from tests.helpers import ALL_ASSETS, SAMPLE_LANDING, check_result, materialize_graph, medflow_env

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
    clean = [r for r in rows if r is not paid[0] and r is not other]
    for name, line, rest in zip(("nw_two_members_a.csv", "nw_two_members_b.csv"), crafted,
                                (clean[:20], clean[20:40])):  # one line of 21 each: within the quarantine gate
        with (landing / "northwind" / name).open("w", newline="") as f:
            csv.writer(f).writerows([header, line, *rest])
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh)
    assert result.success
    assert query(wh, "SELECT claim_line_number, failed_rules FROM silver.silver_claims_quarantine "
                     "WHERE claim_id = 'XM1' ORDER BY 1") == [("1", ["claim_member_conflict"]),
                                                             ("2", ["claim_member_conflict"])]  # as landed
    assert query(wh, "SELECT count(*) FROM gold.payer_provider_stats WHERE provider_npi = '1234567893'") == [(0,)]
    assert check_result(result, "pandera_PayerProviderStats").passed

    with duckdb.connect(str(wh)) as con:
        con.execute("UPDATE gold.payer_provider_stats SET members = claims + 1 WHERE provider_npi = "
                    "(SELECT min(provider_npi) FROM gold.payer_provider_stats)")
        npi = con.execute("SELECT provider_npi FROM gold.payer_provider_stats WHERE members > claims").fetchone()[0]
        n = con.execute("SELECT count(*) FROM gold.payer_provider_stats").fetchone()[0]
    key = dg.AssetCheckKey(dg.AssetKey(["gold", "payer_provider_stats"]), "pandera_PayerProviderStats")
    with medflow_env(warehouse_path=wh, landing_path=landing):
        checked = dg.materialize(ALL_ASSETS, resources=build_resources(load_settings()),
                                 selection=dg.AssetSelection.checks(key), raise_on_error=False)
    check = check_result(checked, "pandera_PayerProviderStats")
    assert not check.passed and not checked.success
    assert check.description == (f"{n} rows: failed table.members_within_claims_each_claim_one_member (1); e.g. "
                                 f"table.members_within_claims_each_claim_one_member: provider_npi={npi}, "
                                 "payer=northwind")
