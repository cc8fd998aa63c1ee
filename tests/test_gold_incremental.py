"""Gold is recomputed per payer (dbt_project/macros/gold_refresh.sql): after any sequence of file runs it
equals a rebuild from all of silver, and only the payers whose silver changed since gold last ran are
recomputed, including loads whose run did not reach gold."""

import shutil
from decimal import ROUND_HALF_UP, Decimal

import dagster as dg
import duckdb

from medflow_assets.synth.generator import generate
from tests.helpers import materialize_graph, query

# The marts' definitions written again, independently, over every silver row (no per-payer parts).
REBUILT = {
    "claims_monthly_summary": """
        SELECT CAST(date_trunc('month', service_date) AS DATE), payer, count(*), count(DISTINCT claim_id),
               count(DISTINCT member_key), sum(billed_amount), sum(paid_amount),
               count(*) FILTER (WHERE claim_status = 'denied')
        FROM silver.silver_claim_lines GROUP BY ALL""",
    "claims_approval_funnel": """
        SELECT payer, CAST(date_trunc('month', service_date) AS DATE), count(*),
               count(*) FILTER (WHERE claim_status = 'paid'), count(*) FILTER (WHERE claim_status = 'pending')
        FROM silver.silver_claim_lines GROUP BY ALL""",
    "provider_performance": """
        SELECT provider_npi, count(*), count(DISTINCT (payer, claim_id)), count(DISTINCT (payer, member_key)),
               sum(paid_amount)
        FROM silver.silver_claim_lines GROUP BY ALL""",
    "department_revenue": """
        SELECT department, count(DISTINCT (payer, claim_id)), count(*),
               coalesce(sum(paid_amount) FILTER (WHERE claim_status IN ('paid', 'adjusted', 'reversed')), 0),
               coalesce(sum(billed_amount) FILTER (WHERE claim_status = 'pending'), 0)
        FROM silver.silver_claim_lines GROUP BY ALL""",
}
STORED = {
    "claims_monthly_summary": "SELECT service_month, payer, lines, claims, members, billed_amount, paid_amount, "
                              "denied_lines FROM gold.claims_monthly_summary",
    "claims_approval_funnel": "SELECT payer, service_month, submitted_lines, paid_lines, pending_lines "
                              "FROM gold.claims_approval_funnel",
    "provider_performance": "SELECT provider_npi, lines, claims, members, paid_amount FROM gold.provider_performance",
    "department_revenue": "SELECT department, visits, lines, paid_revenue, pending_revenue FROM gold.department_revenue",
}


def assert_gold_equals_a_rebuild(wh):
    for mart, sql in REBUILT.items():
        want, got = sorted(query(wh, sql)), sorted(query(wh, STORED[mart]))
        assert got == want, f"gold.{mart} differs from a rebuild from silver"
    # averages to the cent, rounded half up from the exact total (not through floating point)
    sums = query(wh, """SELECT provider_npi, sum(paid_amount) FILTER (WHERE claim_status IN ('paid', 'adjusted')),
                               count(*) FILTER (WHERE claim_status IN ('paid', 'adjusted'))
                        FROM silver.silver_claim_lines GROUP BY 1""")
    want = {npi: (total / n).quantize(Decimal("0.01"), ROUND_HALF_UP) if n else None for npi, total, n in sums}
    assert dict(query(wh, "SELECT provider_npi, avg_paid_amount FROM gold.provider_performance")) == want


def _through(wh) -> dict[str, set[int]]:
    """payer -> the silver loads its gold rows reflect, over every per-payer gold table."""
    out: dict[str, set[int]] = {}
    for table in ("claims_monthly_summary", "claims_approval_funnel", "payer_provider_stats",
                  "payer_department_stats"):
        for payer, load in query(wh, f"SELECT DISTINCT payer, through_load_id FROM gold.{table}"):
            out.setdefault(payer, set()).add(load)
    return out


def _land(tmp_path, landing, tag, payer, lines, seed, offset):
    f = generate(tmp_path / tag, lines, seed=seed, defect_rate=0.02, payers=[payer], row_offset=offset,
                 file_tag=tag, manifest_dir=tmp_path / f"{tag}-m")[0]
    shutil.copy(f.path, landing / payer / f.path.name)
    return f"{payer}/{f.path.name}"


MARK = 1_000_000  # added to gold.claims_monthly_summary.lines: no real month has that many lines here


def _mark(wh) -> None:
    with duckdb.connect(str(wh)) as con:
        con.execute(f"UPDATE gold.claims_monthly_summary SET lines = lines + {MARK}")


def _unmark(wh) -> set[str]:
    """Payers whose gold rows still carry the mark (not recomputed since _mark); removes the mark."""
    with duckdb.connect(str(wh)) as con:
        marked = {r[0] for r in con.execute(
            f"SELECT DISTINCT payer FROM gold.claims_monthly_summary WHERE lines >= {MARK}").fetchall()}
        con.execute(f"UPDATE gold.claims_monthly_summary SET lines = lines - {MARK} WHERE lines >= {MARK}")
    return marked


def test_gold_follows_silver_per_payer_including_loads_whose_run_skipped_gold(tmp_path):
    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    generate(landing, 6000, seed=31, defect_rate=0.02, manifest_dir=tmp_path / "m0")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance).success
    assert_gold_equals_a_rebuild(wh)
    first = _through(wh)
    assert set(first) == {"bluepeak", "cascade", "northwind"} and all(len(v) == 1 for v in first.values())

    # a northwind file goes through bronze and silver only: gold is not run
    nw = _land(tmp_path, landing, "late", "northwind", 900, 32, 2_000_000)
    no_gold = dg.AssetSelection.all() - dg.AssetSelection.groups("gold")
    assert materialize_graph(landing, wh, instance=instance, partitions=[nw], selection=no_gold).success
    assert _through(wh) == first
    assert query(wh, f"SELECT count(*) > 0 FROM silver.silver_claim_lines WHERE source_file = '{nw}'") == [(True,)]

    # a cascade file's run reaches gold: both changed payers are recomputed, bluepeak is left alone (a mark
    # put on every payer's gold rows survives only where gold was not recomputed)
    cas = _land(tmp_path, landing, "next", "cascade", 1200, 33, 3_000_000)
    _mark(wh)
    assert materialize_graph(landing, wh, instance=instance, partitions=[cas]).success
    assert _unmark(wh) == {"bluepeak"}
    assert_gold_equals_a_rebuild(wh)
    second = _through(wh)
    assert second["bluepeak"] == first["bluepeak"]
    assert len(second["northwind"]) == 1 and second["northwind"] != first["northwind"]
    assert len(second["cascade"]) == 1 and min(second["cascade"]) > max(second["northwind"])

    # the cascade file corrected under the same name, with fewer lines: its old rows leave gold too
    fixed = generate(tmp_path / "fixed", 300, seed=34, defect_rate=0.0, payers=["cascade"], row_offset=3_000_000,
                     file_tag="next", manifest_dir=tmp_path / "fixed-m")[0]
    shutil.copy(fixed.path, landing / cas)
    assert materialize_graph(landing, wh, instance=instance, partitions=[cas]).success
    assert_gold_equals_a_rebuild(wh)
    third = _through(wh)
    assert third["bluepeak"] == first["bluepeak"] and third["northwind"] == second["northwind"]
    assert min(third["cascade"]) > max(second["cascade"])

    # a run with nothing new for gold recomputes no payer
    _mark(wh)
    assert materialize_graph(landing, wh, instance=instance, partitions=[],
                             selection=dg.AssetSelection.groups("gold")).success
    assert _unmark(wh) == {"bluepeak", "cascade", "northwind"}
    assert _through(wh) == third

    # silver rebuilt without a payer (here: its rows removed by hand): the next gold build drops its rows too
    with duckdb.connect(str(wh)) as con:
        for table in ("silver.silver_claim_lines_validated", "silver.silver_data_quality_log"):
            con.execute(f"DELETE FROM {table} WHERE payer = 'bluepeak'")
    assert materialize_graph(landing, wh, instance=instance, partitions=[],
                             selection=dg.AssetSelection.groups("gold")).success
    assert_gold_equals_a_rebuild(wh)
    assert set(_through(wh)) == {"cascade", "northwind"}



def _failure_text(result) -> str:
    return "\n".join(str(e.event_specific_data.error) for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE")


def test_a_corrected_file_whose_load_held_the_highest_id_gets_a_higher_one_and_gold_follows(tmp_path):
    """load_id never goes down, also when the file run again held the highest id (its load ran on a clock
    that was ahead): the id is taken above the highest before the file's rows are replaced. Before (found by
    a data review) it was taken after, went below what gold reflected, and gold kept the old numbers."""
    from tests.helpers import copy_sample

    landing, wh = copy_sample(tmp_path / "landing"), tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance).success
    nw = "northwind/northwind_claims_001.csv"
    ahead = 10**13  # ~116 days of microseconds
    with duckdb.connect(str(wh)) as con:  # northwind's load as if it ran with the clock ahead
        con.execute(f"UPDATE silver.silver_data_quality_log SET load_id = load_id + {ahead} WHERE source_file = ?", [nw])
        for table in ("claims_monthly_summary", "claims_approval_funnel", "payer_provider_stats",
                      "payer_department_stats"):
            con.execute(f"UPDATE gold.{table} SET through_load_id = through_load_id + {ahead} WHERE payer = 'northwind'")
    highest = query(wh, "SELECT max(load_id) FROM silver.silver_data_quality_log")[0][0]
    path = landing / nw
    text = path.read_text()
    assert text.count("273.60,216.14,155.62,paid") == 1
    path.write_text(text.replace("273.60,216.14,155.62,paid", "273.60,216.14,150.00,paid"))
    assert materialize_graph(landing, wh, instance=instance, partitions=[nw]).success
    assert query(wh, "SELECT DISTINCT load_id > ? FROM silver.silver_data_quality_log WHERE source_file = ?",
                 [highest, nw]) == [(True,)]
    assert query(wh, "SELECT paid_amount FROM silver.silver_claim_lines WHERE claim_id = 'NW0000000000'") == [
        (Decimal("150.00"),)]
    assert_gold_equals_a_rebuild(wh)


def test_a_warehouse_whose_tables_miss_a_column_stops_with_the_model_named_and_keeps_its_rows(tmp_path, capfd):
    """A warehouse built by an older MedFlow (here: its data-quality log has no load_id, its monthly summary
    no through_load_id) is not patched silently: the run stops at the first such model with dbt's "out of
    sync" error naming it, and the table keeps its rows and columns."""
    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    generate(landing, 3000, seed=41, defect_rate=0.02, manifest_dir=tmp_path / "m0")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance).success
    with duckdb.connect(str(wh)) as con:
        con.execute("ALTER TABLE silver.silver_data_quality_log DROP COLUMN load_id")
        con.execute("ALTER TABLE gold.claims_monthly_summary DROP COLUMN through_load_id")
    log_before = sorted(query(wh, "SELECT * FROM silver.silver_data_quality_log"))
    gold_before = sorted(query(wh, "SELECT * FROM gold.claims_monthly_summary"))
    capfd.readouterr()

    cas = _land(tmp_path, landing, "after", "cascade", 600, 42, 2_000_000)
    result = materialize_graph(landing, wh, instance=instance, partitions=[cas])
    assert not result.success
    assert "model.medflow.silver_data_quality_log (error)" in _failure_text(result)
    out = capfd.readouterr().out
    assert "out of sync" in out and "silver_data_quality_log" in out
    assert sorted(query(wh, "SELECT * FROM silver.silver_data_quality_log")) == log_before
    assert sorted(query(wh, "SELECT * FROM gold.claims_monthly_summary")) == gold_before

    # the log repaired by hand (the column added, as the README says): the gold table is next
    with duckdb.connect(str(wh)) as con:
        con.execute("ALTER TABLE silver.silver_data_quality_log ADD COLUMN load_id BIGINT")
    result = materialize_graph(landing, wh, instance=instance, partitions=[cas])
    assert not result.success
    assert "model.medflow.claims_monthly_summary (error)" in _failure_text(result)
    assert "out of sync" in capfd.readouterr().out
    assert sorted(query(wh, "SELECT * FROM gold.claims_monthly_summary")) == gold_before
