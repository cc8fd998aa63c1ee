"""Quality gates end to end: Pandera checks in DuckDB, the quarantine-rate gate, gold uniqueness."""

import dagster as dg
import duckdb

from medflow_assets.synth.generator import generate
from tests.helpers import ALL_ASSETS, materialize_graph, medflow_env, query

# Rules of the SilverClaimLines schema (quality/schemas.py): one per not-null column, format, set, range and
# dataframe check. A schema edit that drops or adds one changes this number on purpose.
SILVER_RULES = 38


def _evals(result):
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def _materialized(result):
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_file_with_15_percent_bad_rows_fails_the_gate_and_gold_is_not_built(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, 4000, seed=3, defect_rate=0.0, payers=["northwind", "bluepeak"], manifest_dir=tmp_path / "m1")
    generate(landing, 2000, seed=4, defect_rate=0.15, payers=["cascade"], manifest_dir=tmp_path / "m2")
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh)
    assert not result.success
    gate = _evals(result)[("silver/silver_claim_lines", "quarantine_rate_gate")]
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.ERROR
    assert "cascade/cascade_claims_001.txt" in gate.description
    md = gate.metadata["files"].value
    assert "cascade/cascade_claims_001.txt" in md and "northwind" not in md
    rate = query(wh, "SELECT rows_quarantined / rows_checked FROM silver.silver_data_quality_log "
                     "WHERE source_file = 'cascade/cascade_claims_001.txt' LIMIT 1")[0][0]
    assert 0.12 < rate < 0.18
    assert f"{rate:.2%}" in gate.description
    top_rule = query(wh, "SELECT rule_id FROM silver.silver_data_quality_log WHERE source_file = "
                         "'cascade/cascade_claims_001.txt' ORDER BY rows_failed DESC, rule_id LIMIT 1")[0][0]
    assert top_rule in gate.description
    assert gate.metadata["files_over_threshold"].value == 1
    # a failed blocking check is not a transient cause: its step is not retried (TRANSIENT_RETRY is on it)
    assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []
    assert [e.step_key for e in result.get_step_failure_events()] == ["bronze_silver_quality"]
    # gold was not materialized in this run, and no gold table exists in the fresh warehouse
    assert not any(k.startswith("gold/") for k in _materialized(result))
    assert query(wh, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'gold'") == [(0,)]
    assert "silver/silver_claim_lines_validated" in _materialized(result)


def test_clean_files_pass_every_check_with_zero_failures(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, 6000, seed=5, defect_rate=0.0, manifest_dir=tmp_path / "m")
    result = materialize_graph(landing, tmp_path / "wh.duckdb")
    assert result.success
    evals = _evals(result)
    pandera = {k: e for k, e in evals.items() if k[1].startswith("pandera_")}
    assert len(pandera) == 12  # one per bronze, silver and gold table
    assert all(e.passed for e in evals.values()), [k for k, e in evals.items() if not e.passed]
    silver = pandera[("silver/silver_claim_lines", "pandera_SilverClaimLines")]
    assert silver.metadata["rows_checked"].value == 6000
    assert silver.metadata["failing_rows_total"].value == 0
    assert silver.metadata["rules_checked"].value == SILVER_RULES
    assert silver.metadata["scope"].value == "whole table"  # a run over every landed file
    gate = evals[("silver/silver_claim_lines", "quarantine_rate_gate")]
    assert gate.metadata["files_over_threshold"].value == 0 and gate.metadata["max_rate"].value == 0.0


VIEWS = ("bronze.bronze_claim_lines", "silver.silver_claim_lines", "silver.silver_claims_quarantine")


def test_a_copied_or_renamed_warehouse_keeps_working_views(tmp_path, sample_run):
    counts = {v: query(sample_run["warehouse"], f"SELECT count(*) FROM {v}")[0][0] for v in VIEWS}
    assert counts["bronze.bronze_claim_lines"] > 0 and counts["silver.silver_claims_quarantine"] > 0
    copy = tmp_path / "snapshot_before_load.duckdb"
    copy.write_bytes(sample_run["warehouse"].read_bytes())
    assert {v: query(copy, f"SELECT count(*) FROM {v}")[0][0] for v in VIEWS} == counts
    with duckdb.connect() as con:  # attached under an alias of its own, next to another database
        con.execute(f"ATTACH '{copy}' AS snap (READ_ONLY)")
        assert {v: con.execute(f"SELECT count(*) FROM snap.{v}").fetchone()[0] for v in VIEWS} == counts


def test_gold_with_a_duplicated_grain_row_fails_its_uniqueness_check(tmp_path, sample_run):
    wh = tmp_path / "copy_of_the_warehouse.duckdb"  # another name: views do not name their catalog
    # copy the materialized warehouse, then corrupt gold by hand
    wh.write_bytes(sample_run["warehouse"].read_bytes())
    with duckdb.connect(str(wh)) as con:
        con.execute("INSERT INTO gold.claims_monthly_summary SELECT * FROM gold.claims_monthly_summary LIMIT 1")
        month, payer = con.execute("SELECT service_month, payer FROM gold.claims_monthly_summary "
                                   "GROUP BY ALL HAVING count(*) > 1").fetchone()
    check_key = dg.AssetCheckKey(dg.AssetKey(["gold", "claims_monthly_summary"]), "pandera_ClaimsMonthlySummary")
    with medflow_env(warehouse_path=wh):
        from medflow_assets.resources import build_resources
        from medflow_assets.settings import load_settings
        result = dg.materialize(ALL_ASSETS, resources=build_resources(load_settings()),
                                selection=dg.AssetSelection.checks(check_key), raise_on_error=False)
    evaluation = _evals(result)[("gold/claims_monthly_summary", "pandera_ClaimsMonthlySummary")]
    assert not evaluation.passed
    assert "unique(service_month, payer) (1)" in evaluation.description
    assert f"service_month={month}, payer={payer}" in evaluation.metadata["failing_keys"].value
    assert not result.success  # blocking: the step fails


def test_scorecard_keeps_the_trend_across_runs(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, 3000, seed=8, defect_rate=0.02, manifest_dir=tmp_path / "m")
    wh = tmp_path / "wh.duckdb"
    assert materialize_graph(landing, wh).success
    result = materialize_graph(landing, wh)
    mat = next(e for e in result.get_asset_materialization_events()
           if e.asset_key.to_user_string() == "quality/data_quality_scorecard")
    md = mat.materialization.metadata["scorecard"].value
    assert mat.materialization.metadata["runs_in_history"].value == 2
    assert "+0.00 pp" in md and "new" not in md
    for payer in ("northwind", "bluepeak", "cascade"):
        assert f"| {payer} | {payer}/" in md
    assert query(wh, "SELECT count(*) FROM quality.scorecard_history") == [(6,)]
    # a second attempt of the same run's step (a retry) replaces that run's measurement, in one transaction
    from medflow_assets.quality.scorecard import _measure
    from medflow_assets.resources import WarehouseResource

    rows, runs = _measure(result.run_id, WarehouseResource(path=str(wh)))
    assert runs == 2 and len(rows) == 3 and all(r[3] == r[4] for r in rows)  # compared with run 1, not itself
    assert query(wh, "SELECT count(*), count(DISTINCT run_id) FROM quality.scorecard_history") == [(6, 2)]


def test_scoped_uniqueness_test_catches_a_collision_with_an_older_file(tmp_path, sample_run):
    """dbt's unique_combination on silver_claim_lines checks the keys of the run's rows only (scope), but counts
    them over the whole table: a run's line that repeats another file's line fails it."""
    from dbt.cli.main import dbtRunner

    from medflow_assets.settings import DBT_PROJECT_DIR, load_settings, scoped_environ
    from medflow_assets.transform.dbt_core import release_warehouse

    wh = tmp_path / "copy_of_the_warehouse.duckdb"  # another name: views do not name their catalog
    wh.write_bytes(sample_run["warehouse"].read_bytes())
    with duckdb.connect(str(wh)) as con:
        files = [f for (f,) in con.execute("SELECT DISTINCT source_file FROM silver.silver_claim_lines ORDER BY 1")
                 .fetchall()]
        older, newer, other = files
        # a line of `older` (same payer, claim, line), planted again as a valid row of `newer`
        con.execute("""INSERT INTO silver.silver_claim_lines_validated
                       SELECT * REPLACE (? AS source_file, 999999 AS source_row_number)
                       FROM silver.silver_claim_lines_validated
                       WHERE source_file = ? AND len(failed_rules) = 0 LIMIT 1""", [newer, older])

    def unique_test(run_files: list[str]) -> tuple[str, int]:
        with duckdb.connect(str(wh)) as con:
            con.execute("CREATE OR REPLACE TABLE landing.dbt_selection AS SELECT unnest(?) AS source_file", [run_files])
        with medflow_env(warehouse_path=wh), scoped_environ(load_settings().dbt_env()):
            try:
                res = dbtRunner().invoke([
                    "test", "--select", "silver_claim_lines,test_name:unique_combination", "--project-dir",
                    str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path",
                    str(tmp_path / "target"), "--log-path", str(tmp_path / "logs"), "--quiet"])
            finally:
                release_warehouse()
        (r,) = res.result.results
        return str(r.status), r.failures

    assert unique_test([newer]) == ("fail", 1)      # the run's key, counted over every file: two rows
    assert unique_test([other]) == ("pass", 0)      # a run that did not bring the key does not see it


def test_faster_builtin_checks_answer_like_panderas_own_on_edge_values():
    """factory.fast_builtin_check writes str_matches, isin and notin in SQL DuckDB runs faster; on every such
    check of every schema, and on values built to tell the two apart (a trailing newline, NULL, an empty
    string, case, one character too many), it must answer exactly as Pandera's own expression does."""
    import inspect

    import ibis
    import pandera.ibis as pa
    from pandera.api.ibis.types import IbisData

    from medflow_assets.quality import schemas
    from medflow_assets.quality.factory import _bound_column, fast_builtin_check, pattern_spans_whole_string

    assert not pattern_spans_whole_string(r"^a|b$")      # (^a)|(b$): a search and a full match differ
    assert not pattern_spans_whole_string("^a\\$")       # an escaped dollar anchors nothing
    assert pattern_spans_whole_string(r"^([0-9]{4}[0-9FTU]|[A-V][0-9]{4})$")
    assert pattern_spans_whole_string(r"^[]|]$") and pattern_spans_whole_string(r"^(?:a|b)$")
    # what the scanner does not follow answers False (Pandera's own search is used)
    for pattern in [r"^[[:alpha:](]|x[[:alpha:])]$", r"^a)|(b$", r"^(?m)[0-9]+$", r"^a\Q$", r"^*a$", r"^?a$"]:
        assert not pattern_spans_whole_string(pattern), pattern

    hexkey = "0123456789abcdef" * 4
    values = ["", " ", "\n", "a", "b", "ab", "ba", "xab", "F", "f", "M", "U", "FM", "000", "036", "36", "0361",
              "1234567890", "1234567890\n", "\n1234567890", " 1234567890", "2234567890", "3234567890",
              "12345678901", hexkey, hexkey + "\n", hexkey.upper(), hexkey[:-1], hexkey + "0", "A01", "A0", "A01B",
              "A01BCDEF", "A01BCDEFG", "99213", "9921F", "9921G", "J1234", "W1234", "11", "1", "111", "CO",
              "A1B2", "A1B2C", "paid", "Paid", "paid ", "reversed", "nw_001", "Nw", "n", "n-w", "]", "|", "^",
              "$", *schemas.DEPARTMENTS, schemas.DEPARTMENTS[0] + "\n", *schemas.RESTRICTED_ZIP3, None]
    extra = [pa.Check.str_matches(r"^a|b$"), pa.Check.str_matches(r"^[]|]$"), pa.Check.str_matches("^a\\$"),
             pa.Check.str_matches("ab"), pa.Check.isin(["a", "b"]), pa.Check.notin(["a", "ab"]),
             pa.Check.isin("ab")]  # a string: Pandera reads its characters
    checks = [(f"{model.__name__}.{name}", check)
              for model in vars(schemas).values()
              if inspect.isclass(model) and issubclass(model, pa.DataFrameModel) and model is not pa.DataFrameModel
              for name, col in model.to_schema().columns.items() if col.dtype.type.is_string()
              for check in col.checks if check.name in ("str_matches", "isin", "notin")]
    checks += [(f"extra.{c.name}", c) for c in extra]
    t = ibis.memtable({"v": values}, schema={"v": "string"})
    con = ibis.duckdb.connect()
    fast_used = 0
    for label, check in checks:
        fast = fast_builtin_check(check, t.v)
        if fast is None:
            continue
        own = _bound_column(check._check_fn(IbisData(t, key="v"), **check._check_kwargs), t, "v")
        fast_used += 1
        got = con.execute(t.select(own=own, fast=fast))
        assert got["own"].tolist() == got["fast"].tolist(), label
    # every str_matches, isin and notin of the schemas takes the fast path (patterns all span the string);
    # of the extras, `^a|b$`, `^a\$` and `ab` (searches) do not
    assert fast_used == len(checks) - 3 and fast_used > 20
    # a custom check is never taken for a builtin, whatever its name
    custom = pa.Check(lambda data: data.table.select(data.key), name="isin")
    assert fast_builtin_check(custom, t.v) is None
