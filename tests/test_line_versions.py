"""A line sent again in a later file is a new version of it ("adjustments resolve", DESIGN section 3;
dbt_project/macros/line_versions.sql): the latest good version is the line, the earlier ones are superseded,
a reversal nets against the version it takes back, and every rerun or correction decides it again."""

import csv
import datetime as dt
import os
from decimal import Decimal

import dagster as dg
import duckdb

from medflow_assets.landing.contracts import load_contracts
from medflow_assets.settings import CONTRACTS_DIR, DEV_PII_KEY, WAREHOUSE_STORAGE_VERSION
from medflow_assets.synth.generator import generate
from tests.helpers import check_result, materialize_graph, query, unconserved_files

NW1, NW2 = "northwind/nw_001.csv", "northwind/nw_002.csv"
VERDICTS = """SELECT source_file, claim_id, claim_line_number, failed_rules, superseded_by, reverses
              FROM silver.silver_claim_lines_validated
              ORDER BY claim_id, claim_line_number, source_file, source_row_number"""  # a file may hold 2 copies
GOLD = ["SELECT * EXCLUDE (through_load_id) FROM gold.claims_monthly_summary ORDER BY ALL",
        "SELECT * EXCLUDE (through_load_id) FROM gold.claims_approval_funnel ORDER BY ALL",
        "SELECT * FROM gold.provider_performance ORDER BY ALL"]
SILVER = "SELECT * EXCLUDE (ingested_at) FROM silver.silver_claim_lines ORDER BY ALL"
GOLD_PAID = "SELECT sum(paid_amount) FROM gold.claims_monthly_summary"


def _money(text: str) -> Decimal:
    return Decimal(text)


def _fmt(value: Decimal) -> str:
    return f"{value:.2f}"


def _reversal(row: list[str], col: dict[str, int], **change: str) -> list[str]:
    """A copy of a landed row as its reversal (status reversed, billed, allowed and paid negated), then the
    fields in `change` set."""
    v = list(row)
    v[col["status"]] = "reversed"
    for field in ("billed_amount", "allowed_amount", "paid_amount"):
        v[col[field]] = _fmt(-_money(row[col[field]]))
    for field, value in change.items():
        v[col[field]] = value
    return v


def _scenario(tmp_path):
    """nw_001.csv: 120 clean lines. nw_002.csv, landed later: versions of 12 of them and 30 new lines."""
    [made] = generate(tmp_path / "gen", 150, seed=71, defect_rate=0.0, payers=["northwind"],
                      manifest_dir=tmp_path / "m")
    header, *rows = list(csv.reader(made.path.open(newline="")))
    col = {name: header.index(name) for name in header}
    original, new = rows[:120], rows[120:]

    def paying(r):
        return r[col["status"]] in ("paid", "adjusted") and _money(r[col["paid_amount"]]) > 0

    payers = [r for r in original if paying(r)]
    assert len(payers) >= 12
    adjusted, reversed_ok, reversed_bad, broken = payers[:5], payers[5:8], payers[8:10], payers[10:12]

    def version(r, **change):
        v = list(r)
        for field, value in change.items():
            v[col[field]] = value
        return v

    def negated(r, field):
        return _fmt(-_money(r[col[field]]))

    second = (
        [version(r, status="adjusted", paid_amount=_fmt(_money(r[col["paid_amount"]]) / 2)) for r in adjusted]
        + [version(r, status="reversed", billed_amount=negated(r, "billed_amount"),
                   allowed_amount=negated(r, "allowed_amount"), paid_amount=negated(r, "paid_amount"))
           for r in reversed_ok]
        # takes back less than was paid: not a reversal of this version
        + [version(r, status="reversed", billed_amount=negated(r, "billed_amount"),
                   allowed_amount=negated(r, "allowed_amount"), paid_amount="-0.01") for r in reversed_bad]
        # a version that breaks a rule of its own never replaces a good line
        + [version(r, status="adjusted", service_date="2024-02-30") for r in broken]
        + new)
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)

    def write(name, lines):
        with (landing / name).open("w", newline="") as f:
            csv.writer(f).writerows([header, *lines])

    write(NW1, original)
    write(NW2, second)
    key = {"adjusted": adjusted, "reversed_ok": reversed_ok, "reversed_bad": reversed_bad, "broken": broken}
    keys = {k: [(r[col["claim_id"]], int(r[col["line_number"]])) for r in v] for k, v in key.items()}
    return landing, write, header, original, second, keys


def _expected(keys, original_keys):
    """(file, claim, line, failed_rules, superseded_by, reverses) of every row, from the scenario alone."""
    rows = []
    for c, n in original_keys:
        if (c, n) in keys["adjusted"]:
            rows += [(NW1, c, n, [], NW2, None), (NW2, c, n, [], None, None)]
        elif (c, n) in keys["reversed_ok"]:
            rows += [(NW1, c, n, [], NW2, None), (NW2, c, n, [], None, NW1)]
        elif (c, n) in keys["reversed_bad"]:
            rows += [(NW1, c, n, [], None, None), (NW2, c, n, ["reversal_mismatch"], None, None)]
        elif (c, n) in keys["broken"]:
            rows += [(NW1, c, n, [], None, None), (NW2, c, n, ["invalid_service_date"], None, None)]
        else:
            rows.append((NW1, c, n, [], None, None))
    return rows


def test_a_later_files_version_of_a_line_replaces_it_and_a_reversal_nets_to_zero(tmp_path):
    landing, write, header, original, second, keys = _scenario(tmp_path)
    col = {name: header.index(name) for name in header}
    original_keys = [(r[col["claim_id"]], int(r[col["line_number"]])) for r in original]
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW1]).success
    paid_before = query(wh, "SELECT sum(paid_amount) FROM gold.claims_monthly_summary")[0][0]

    result = materialize_graph(landing, wh, instance=instance, partitions=[NW2])

    assert result.success
    new_keys = [(r[col["claim_id"]], int(r[col["line_number"]])) for r in second[12:]]
    expected = _expected(keys, original_keys) + [(NW2, c, n, [], None, None) for c, n in new_keys]
    assert query(wh, VERDICTS) == sorted(expected, key=lambda r: (r[1], r[2], r[0]))
    # silver holds each line once: its latest good version
    assert query(wh, "SELECT count(*), count(DISTINCT (claim_id, claim_line_number)) "
                     "FROM silver.silver_claim_lines") == [(150, 150)]
    # gold pays the adjusted amounts, 0 for the lines reversed, and the original for the rejected versions
    by_key = {(r[col["claim_id"]], int(r[col["line_number"]])): r for r in original}
    change = (sum(_money(r[col["paid_amount"]]) for r in second[:5])
              - sum(_money(by_key[k][col["paid_amount"]]) for k in keys["adjusted"] + keys["reversed_ok"]))
    new_paid = sum(_money(r[col["paid_amount"]]) for r in second[12:]
                   if r[col["status"]] in ("paid", "adjusted", "reversed"))
    assert query(wh, "SELECT sum(paid_amount) FROM gold.claims_monthly_summary")[0][0] == (
        paid_before + change + new_paid)
    reversed_now = query(wh, "SELECT claim_id, claim_line_number, claim_status, billed_amount, allowed_amount, "
                             "paid_amount, reverses FROM silver.silver_claim_lines WHERE claim_status = 'reversed' "
                             "AND reverses IS NOT NULL ORDER BY 1, 2")
    assert reversed_now == [(c, n, "reversed", 0, 0, 0, NW1) for c, n in sorted(keys["reversed_ok"])]
    # the quality log: nw_001's replaced lines are superseded, not quarantined; nw_002's bad versions are
    assert query(wh, "SELECT source_file, max(rows_checked), max(rows_quarantined), max(rows_superseded), "
                     "sum(rows_failed) FILTER (WHERE rule_id = 'reversal_mismatch') "
                     "FROM silver.silver_data_quality_log GROUP BY 1 ORDER BY 1") == [
        (NW1, 120, 0, 8, 0), (NW2, 42, 4, 0, 2)]
    assert unconserved_files(wh) == []
    # the scorecard shows nw_001's replaced lines beside its (unchanged) valid rate
    scorecard = next(m for m in result.get_asset_materialization_events()
                     if m.asset_key == dg.AssetKey(["quality", "data_quality_scorecard"])).materialization.metadata
    assert f"| northwind | {NW1} | 120 | 100.00% | 100.00% | +0.00 pp | - | 8 |" in scorecard["scorecard"].value
    assert f"| northwind | {NW2} | 42 | 90.48% | - | new | " in scorecard["scorecard"].value
    assert scorecard["lines_superseded"].value == 8
    assert query(wh, "SELECT source_file, rows_superseded FROM quality.scorecard_history WHERE run_id = ? "
                     "ORDER BY 1", [result.run_id]) == [(NW1, 8), (NW2, 0)]
    # the quarantine shows a mismatched reversal's text as landed
    assert sorted(query(wh, "SELECT claim_id, paid_amount FROM silver.silver_claims_quarantine "
                            "WHERE failed_rules = ['reversal_mismatch']")) == sorted(
        (c, "-0.01") for c, _ in keys["reversed_bad"])
    # 4 of 42 rows quarantined: within northwind's 10%
    assert check_result(result, "quarantine_rate_gate").passed
    silver_now, gold_now = query(wh, SILVER), [query(wh, g) for g in GOLD]

    # a warehouse built from both files in one run decides the same (nw_001.csv was written first)
    fresh = tmp_path / "fresh.duckdb"
    assert materialize_graph(landing, fresh).success
    assert query(fresh, VERDICTS) == query(wh, VERDICTS)
    assert query(fresh, SILVER) == silver_now and [query(fresh, g) for g in GOLD] == gold_now

    # the pandas peer (benchmarks/) resolves the versions the same way (it orders files by name, which is
    # the landing order here), down to the netted amounts
    from benchmarks.pandas_peer import RULES, current_lines, validated
    peer = validated(landing, load_contracts(CONTRACTS_DIR), DEV_PII_KEY)
    got = {(r[0], r[1], r[2]): (r[3], r[4] is not None, r[5] is not None) for r in query(wh, VERDICTS)}
    assert {(r["source_file"], r["claim_id"], int(r["claim_line_number"])):
            ([x for x in RULES if r[x]], bool(r["superseded"]), bool(r["reverses_version"]))
            for _, r in peer.iterrows()} == got
    peer_lines = current_lines(peer)
    assert sorted(zip(peer_lines["source_file"], peer_lines["claim_id"], peer_lines["billed_amount"],
                      peer_lines["allowed_amount"], peer_lines["paid_amount"], strict=True)) == sorted(
        (f, c, int(b * 100), int(a * 100), int(p * 100)) for f, c, b, a, p in query(
            wh, "SELECT source_file, claim_id, billed_amount, allowed_amount, paid_amount FROM silver.silver_claim_lines"))

    # nw_001.csv corrected (one line it alone holds gets another department): it landed first under its
    # name, so its versions stay the earlier ones; only its own rows are replaced
    versioned = {k for v in keys.values() for k in v}
    plain = next(r for r in original if (r[col["claim_id"]], int(r[col["line_number"]])) not in versioned)
    plain[col["department"]] = "cardiology" if plain[col["department"]] != "cardiology" else "oncology"
    write(NW1, original)
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW1]).success
    assert query(wh, VERDICTS) == sorted(expected, key=lambda r: (r[1], r[2], r[0]))
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines") == [(150,)]
    # a warehouse built again from the zone orders by modification time: nw_001.csv, corrected last, is then
    # the later file and its versions win; with the old registry copied in first (README), the order holds
    rebuilt, kept = tmp_path / "rebuilt.duckdb", tmp_path / "kept.duckdb"
    assert materialize_graph(landing, rebuilt).success
    # every good nw_002 version of an old line is superseded by nw_001's but the three reversals that match
    # nw_001's lines: landed "first" now, they take those lines back as they land (README). nw_002's
    # adjustments keep the originals' paid dates, so the files do not say which came first: landing order
    assert query(rebuilt, "SELECT count(*) FROM silver.silver_claim_lines_validated WHERE superseded_by = ?",
                 [NW1]) == [(7,)]
    assert query(rebuilt, "SELECT claim_id, claim_line_number, source_file, reverses, paid_amount "
                          "FROM silver.silver_claim_lines WHERE reverses IS NOT NULL ORDER BY 1, 2") == [
        (c, n, NW2, NW1, 0) for c, n in sorted(keys["reversed_ok"])]
    with duckdb.connect(str(kept), config={"storage_compatibility_version": WAREHOUSE_STORAGE_VERSION}) as con:
        con.execute(f"ATTACH '{wh}' AS old (READ_ONLY); CREATE SCHEMA landing; "
                    "CREATE TABLE landing.landing_file_registry AS FROM old.landing.landing_file_registry")
    assert materialize_graph(landing, kept).success
    assert query(kept, VERDICTS) == query(wh, VERDICTS)

    # nw_001.csv corrected again: the lines whose reversal took back too little now paid that little (the
    # reversals match: they take the lines back), and one reversed line now paid a cent less (its reversal no
    # longer matches: nw_002's row is quarantined, with its raw text from bronze, and nw_001's is the line)
    for r in original:
        if (r[col["claim_id"]], int(r[col["line_number"]])) in keys["reversed_bad"]:
            r[col["paid_amount"]] = "0.01"
    changed = next(r for r in original if (r[col["claim_id"]], int(r[col["line_number"]])) == keys["reversed_ok"][0])
    changed[col["paid_amount"]] = _fmt(_money(changed[col["paid_amount"]]) - Decimal("0.01"))
    write(NW1, original)
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW1]).success
    now = {(r[0], r[1], r[2]): r[3:] for r in query(wh, VERDICTS)}
    for c, n in keys["reversed_bad"]:
        assert (now[(NW1, c, n)], now[(NW2, c, n)]) == (([], NW2, None), ([], None, NW1))
    c, n = keys["reversed_ok"][0]
    assert (now[(NW1, c, n)], now[(NW2, c, n)]) == (([], None, None), (["reversal_mismatch"], None, None))
    assert query(wh, "SELECT q.paid_amount = b.paid_amount, q.billed_amount = b.billed_amount "
                     "FROM silver.silver_claims_quarantine q JOIN bronze.bronze_claim_lines b "
                     "USING (source_file, source_row_number) WHERE q.source_file = ? AND q.claim_id = ?",
                     [NW2, c]) == [(True, True)]
    assert query(wh, "SELECT max(rows_superseded), sum(rows_failed) FILTER (WHERE rule_id = 'reversal_mismatch') "
                     "FROM silver.silver_data_quality_log WHERE source_file IN (?, ?) GROUP BY source_file "
                     "ORDER BY source_file", [NW1, NW2]) == [(9, 0), (0, 1)]
    assert unconserved_files(wh) == []

    # nw_002.csv corrected without its versions of the old lines: nw_001's versions are the lines again,
    # and nw_001's quality log is counted again
    write(NW2, second[12:])
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success
    assert query(wh, VERDICTS) == sorted([(NW1, c, n, [], None, None) for c, n in original_keys]
                                         + [(NW2, c, n, [], None, None) for c, n in new_keys],
                                         key=lambda r: (r[1], r[2], r[0]))
    assert query(wh, "SELECT DISTINCT rows_superseded FROM silver.silver_data_quality_log "
                     "WHERE source_file = ?", [NW1]) == [(0,)]
    fresh2 = tmp_path / "fresh2.duckdb"
    assert materialize_graph(landing, fresh2).success
    assert query(wh, SILVER) == query(fresh2, SILVER)
    assert [query(wh, g) for g in GOLD] == [query(fresh2, g) for g in GOLD]
    assert unconserved_files(wh) == []


def test_a_re_sent_file_with_other_bytes_replaces_its_lines_and_counts_nothing_twice(tmp_path):
    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    generate(landing, 3000, seed=31, defect_rate=0.0, payers=["cascade"], manifest_dir=tmp_path / "m")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance).success
    gold_before = [query(wh, g) for g in GOLD]
    # the same lines in reverse order: not a byte copy, so it passes landing and reaches silver
    header, *lines = (landing / "cascade" / "cascade_claims_001.txt").read_text().splitlines()
    resent = "cascade/cascade_claims_001_resent.txt"
    (landing / resent).write_text("\n".join([header, *lines[::-1]]) + "\n")

    result = materialize_graph(landing, wh, instance=instance, partitions=[resent])

    assert result.success and check_result(result, "no_file_landed_twice").passed
    # every line of the original is superseded by its copy in the later file: silver and gold hold each once
    assert query(wh, "SELECT source_file, count(*) FROM silver.silver_claim_lines GROUP BY 1") == [(resent, 3000)]
    assert query(wh, "SELECT max(rows_superseded), max(rows_quarantined) FROM silver.silver_data_quality_log "
                     "WHERE source_file = 'cascade/cascade_claims_001.txt'") == [(3000, 0)]
    assert [query(wh, g) for g in GOLD] == gold_before
    assert unconserved_files(wh) == []


def test_versions_follow_the_order_files_landed_in_not_their_names(tmp_path):
    """Two files registered in one scan (a first load, or a sensor tick that brings both) are ordered by their
    last write (mtime here; LastModified on S3), then by name."""
    landing, _, _, _, _, keys = _scenario(tmp_path)
    # the adjustments arrive in a file whose name sorts first, written a day after the original
    adjust, claims = landing / "northwind" / "a_adjustments.csv", landing / "northwind" / "b_claims.csv"
    (landing / NW2).rename(adjust)
    (landing / NW1).rename(claims)
    day = 86_400
    stat = claims.stat()
    os.utime(claims, (stat.st_atime - 2 * day, stat.st_mtime - 2 * day))
    os.utime(adjust, (stat.st_atime - day, stat.st_mtime - day))
    wh = tmp_path / "wh.duckdb"

    assert materialize_graph(landing, wh).success

    assert query(wh, "SELECT source_file, floor(epoch(first_landed_at))::BIGINT FROM landing.landing_file_registry "
                     "ORDER BY 1") == [("northwind/a_adjustments.csv", int(stat.st_mtime) - day),
                                       ("northwind/b_claims.csv", int(stat.st_mtime) - 2 * day)]
    lines = {(r[0], r[1]): r[2:] for r in query(
        wh, "SELECT claim_id, claim_line_number, claim_status, source_file FROM silver.silver_claim_lines")}
    assert [lines[k] for k in sorted(keys["adjusted"])] == [("adjusted", "northwind/a_adjustments.csv")] * 5
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines_validated WHERE superseded_by = "
                     "'northwind/a_adjustments.csv'") == [(8,)]
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines") == [(150,)]



def test_a_reversal_of_a_quarantined_line_waits_for_the_line_to_be_corrected(tmp_path):
    """The earlier copy was rejected, so gold never counted its payment: the reversal must not take it back
    from gold. Quarantined as reversal_of_rejected_line; once the copy is corrected, it nets against it."""
    [made] = generate(tmp_path / "gen", 60, seed=73, defect_rate=0.0, payers=["northwind"],
                      manifest_dir=tmp_path / "m")
    header, *rows = list(csv.reader(made.path.open(newline="")))
    col = {name: header.index(name) for name in header}
    target = next(r for r in rows if r[col["status"]] == "paid" and _money(r[col["paid_amount"]]) > 0)
    key = (target[col["claim_id"]], int(target[col["line_number"]]))
    reversal = _reversal(target, col)
    good_date = target[col["service_date"]]
    target[col["service_date"]] = "2024-13-01"  # the payer's first copy is broken: quarantined
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)

    def write(name, lines):
        with (landing / name).open("w", newline="") as f:
            csv.writer(f).writerows([header, *lines])

    # a reversal of a line no file holds, first sent broken, then corrected in the later file: a rejected
    # reversal is not a payment, so the good one stands alone
    lone = next(r for r in rows if r is not target and r[col["status"]] == "paid" and _money(r[col["paid_amount"]]) > 0)
    lone_key = (lone[col["claim_id"]], int(lone[col["line_number"]]))
    lone_reversal = _reversal(lone, col)
    lone_broken = list(lone_reversal)
    lone_broken[col["service_date"]] = "2024-13-01"
    others = [r for r in rows if r is not target and r is not lone]
    write(NW1, [target, lone_broken, *others[:40]])
    write(NW2, [reversal, lone_reversal, *others[40:]])
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW1]).success
    paid_before = query(wh, "SELECT sum(paid_amount) FROM gold.claims_monthly_summary")[0][0]
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success

    verdicts = {r[0]: r[3:] for r in query(wh, VERDICTS) if (r[1], r[2]) == key}
    assert verdicts == {NW1: (["invalid_service_date"], None, None), NW2: (["reversal_of_rejected_line"], None, None)}
    assert {r[0]: r[3:] for r in query(wh, VERDICTS) if (r[1], r[2]) == lone_key} == {
        NW1: (["invalid_service_date"], None, None), NW2: ([], None, None)}
    new_paid = sum(_money(r[col["paid_amount"]]) for r in [lone_reversal, *others[40:]]
                   if r[col["status"]] in ("paid", "adjusted", "reversed"))
    assert query(wh, "SELECT sum(paid_amount) FROM gold.claims_monthly_summary")[0][0] == paid_before + new_paid
    from benchmarks.pandas_peer import RULES, validated
    peer = validated(landing, load_contracts(CONTRACTS_DIR), DEV_PII_KEY)
    assert {r["source_file"]: [x for x in RULES if r[x]] for _, r in peer.iterrows()
            if (r["claim_id"], int(r["claim_line_number"])) == key} == {
        NW1: ["invalid_service_date"], NW2: ["reversal_of_rejected_line"]}
    assert {r["source_file"]: [x for x in RULES if r[x]] for _, r in peer.iterrows()
            if (r["claim_id"], int(r["claim_line_number"])) == lone_key} == {NW1: ["invalid_service_date"], NW2: []}

    # nw_001.csv corrected: the line is good, the reversal takes it back, and gold pays 0 for it
    target[col["service_date"]] = good_date
    write(NW1, [target, lone_broken, *others[:40]])
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW1]).success
    verdicts = {r[0]: r[3:] for r in query(wh, VERDICTS) if (r[1], r[2]) == key}
    assert verdicts == {NW1: ([], NW2, None), NW2: ([], None, NW1)}
    assert query(wh, "SELECT claim_status, paid_amount FROM silver.silver_claim_lines "
                     "WHERE claim_id = ? AND claim_line_number = ?", list(key)) == [("reversed", 0)]
    assert query(wh, "SELECT sum(paid_amount) FROM gold.claims_monthly_summary")[0][0] == paid_before + new_paid
    assert unconserved_files(wh) == []


def _paid_lines_of_two_members(tmp_path, lines: int, seed: int):
    """A clean northwind file's rows: (header, rows, column index, paid rows, a member, another member)."""
    [made] = generate(tmp_path / "gen", lines, seed=seed, defect_rate=0.0, payers=["northwind"],
                      manifest_dir=tmp_path / "m")
    header, *rows = list(csv.reader(made.path.open(newline="")))
    col = {name: header.index(name) for name in header}
    paid = [r for r in rows if r[col["status"]] == "paid" and _money(r[col["paid_amount"]]) > 0]
    member_a = paid[0][col["member_id"]]
    return header, rows, col, paid, member_a, next(r[col["member_id"]] for r in paid
                                                     if r[col["member_id"]] != member_a)


def _write_aged(path, rows, age_days: int) -> None:
    """Write a CSV file last modified `age_days` ago: the landing order a warehouse built again reads."""
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    when = path.stat().st_mtime - age_days * 86_400
    os.utime(path, (when, when))


def _peer_verdicts(landing, claim_id):
    """(file, line, rules, superseded, reverses a version) of the pandas peer's rows of one claim."""
    from benchmarks.pandas_peer import RULES, validated
    peer = validated(landing, load_contracts(CONTRACTS_DIR), DEV_PII_KEY)
    return sorted((r["source_file"], int(r["claim_line_number"]), [x for x in RULES if r[x]], bool(r["superseded"]),
                   bool(r["reverses_version"])) for _, r in peer.iterrows() if r["claim_id"] == claim_id)


def _shifted(day: str, days: int) -> str:
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def _line_key(r, col) -> tuple[str, int]:
    return r[col["claim_id"]], int(r[col["line_number"]])


def _verdicts_of(wh, lines, col) -> dict:
    """{(claim, line): {file: (failed_rules, superseded_by, reverses)}} of these lines' rows."""
    found = query(wh, VERDICTS)
    return {_line_key(r, col): {v[0]: v[3:] for v in found if (v[1], v[2]) == _line_key(r, col)} for r in lines}


def _same_in_a_fresh_build_and_the_peer(landing, wh, fresh, lines, col) -> None:
    """A warehouse built from the zone in one run, and the pandas peer (these lines), decide as `wh` did."""
    assert materialize_graph(landing, fresh).success
    assert query(fresh, VERDICTS) == query(wh, VERDICTS)
    assert query(fresh, SILVER) == query(wh, SILVER)
    assert [query(fresh, g) for g in GOLD] == [query(wh, g) for g in GOLD]
    versions = _group(query(wh, VERDICTS))  # a file may hold two versions of a line (a reversal and another)
    for claim, line in {_line_key(r, col) for r in lines}:
        assert [v for v in _peer_verdicts(landing, claim) if v[1] == line] == sorted(
            (f, line, rules, s is not None, v is not None) for f, rules, s, v in versions[(claim, line)]), claim


def test_a_claims_lines_in_different_files_naming_two_members_are_quarantined_until_one_file_settles_it(tmp_path):
    """claim_member_conflict (macros/line_versions.sql): the latest versions of a claim's lines, from whichever
    file, must name one member. nw_001 sends claim C's lines 1-2 for member A; nw_002, landed later, line 3
    for member B: every current line of C is quarantined (nw_001's counted again), and gold no longer counts
    C. Withdrawing nw_002's line settles it; so does nw_003 sending lines 1-3 for member B (the payer
    corrects the member). A reversal that is a line's latest version is one of the claim's lines: one naming
    the other member puts the claim in conflict again, and the quarantine-rate gate then stops gold for the
    files it empties, saying the rows are in conflict."""
    header, rows, col, paid, member_a, member_b = _paid_lines_of_two_members(tmp_path, 80, seed=75)

    def line(base, n, member):
        r = list(base)
        r[col["claim_id"]], r[col["line_number"]], r[col["member_id"]] = "XC1", str(n), member
        return r

    others = [r for r in rows if r not in paid[:3]]
    c1, c2, c3 = (line(paid[0], 1, member_a), line(paid[1], 2, member_a), line(paid[2], 3, member_b))
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)
    nw3, nw4 = "northwind/nw_003.csv", "northwind/nw_004.csv"

    def write(name, lines, age_days):
        _write_aged(landing / name, [header, *lines], age_days)

    write(NW1, [c1, c2, *others[:40]], 4)
    write(NW2, [c3, *others[40:]], 3)
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW1]).success
    paid_before = query(wh, "SELECT sum(paid_amount) FROM gold.claims_monthly_summary")[0][0]
    claim_rows = ("SELECT source_file, claim_line_number, failed_rules, superseded_by FROM "
                  "silver.silver_claim_lines_validated WHERE claim_id = 'XC1' ORDER BY 2, 1")
    assert query(wh, claim_rows) == [(NW1, 1, [], None), (NW1, 2, [], None)]
    log = ("SELECT source_file, max(rows_quarantined), max(rows_superseded), sum(rows_failed) FILTER "
           "(WHERE rule_id = 'claim_member_conflict') FROM silver.silver_data_quality_log GROUP BY 1 ORDER BY 1")

    result = materialize_graph(landing, wh, instance=instance, partitions=[NW2])

    assert result.success
    conflict = ["claim_member_conflict"]
    in_conflict = [(NW1, 1, conflict, None), (NW1, 2, conflict, None), (NW2, 3, conflict, None)]
    assert query(wh, claim_rows) == in_conflict
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE claim_id = 'XC1'") == [(0,)]
    # the quarantine shows them with the raw text of the fields it shows, the member as its pseudonym only
    assert query(wh, "SELECT source_file, paid_amount, length(member_key) FROM silver.silver_claims_quarantine "
                     "WHERE claim_id = 'XC1' ORDER BY 1, claim_line_number") == [
        (NW1, c1[col["paid_amount"]], 64), (NW1, c2[col["paid_amount"]], 64), (NW2, c3[col["paid_amount"]], 64)]
    # nw_001's log is counted again: its two lines are quarantined now
    assert query(wh, log) == [(NW1, 2, 0, 2), (NW2, 1, 0, 1)]
    new_paid = sum(_money(r[col["paid_amount"]]) for r in others[40:]
                   if r[col["status"]] in ("paid", "adjusted", "reversed"))
    lost = _money(c1[col["paid_amount"]]) + _money(c2[col["paid_amount"]])
    assert query(wh, GOLD_PAID)[0][0] == paid_before + new_paid - lost
    assert check_result(result, "pandera_PayerProviderStats").passed
    assert unconserved_files(wh) == []
    # the same file run again changes nothing; a warehouse built from both files in one run decides the same,
    # and so does the pandas peer
    verdicts = query(wh, VERDICTS)
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success
    assert query(wh, VERDICTS) == verdicts and query(wh, log) == [(NW1, 2, 0, 2), (NW2, 1, 0, 1)]
    fresh = tmp_path / "fresh.duckdb"
    assert materialize_graph(landing, fresh).success
    assert query(fresh, VERDICTS) == verdicts
    assert _peer_verdicts(landing, "XC1") == [(f, n, r, False, False) for f, n, r, _ in in_conflict]

    # nw_002 corrected without its line of the claim: the claim's lines are nw_001's again (the run's claims
    # from before the run are compared, although the file holds none of the claim now)
    write(NW2, others[40:], 3)
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success
    assert query(wh, claim_rows) == [(NW1, 1, [], None), (NW1, 2, [], None)]
    assert query(wh, log) == [(NW1, 0, 0, 0), (NW2, 0, 0, 0)]
    assert query(wh, GOLD_PAID)[0][0] == paid_before + new_paid
    # and sent again with it: in conflict again
    write(NW2, [c3, *others[40:]], 3)
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success
    assert query(wh, claim_rows) == in_conflict

    # nw_003 sends every line of the claim for member B: its lines are the claim's, the earlier ones superseded
    write(nw3, [line(c1, 1, member_b), line(c2, 2, member_b), line(c3, 3, member_b)], 2)
    assert materialize_graph(landing, wh, instance=instance, partitions=[nw3]).success
    assert query(wh, claim_rows) == [(NW1, 1, [], nw3), (nw3, 1, [], None), (NW1, 2, [], nw3), (nw3, 2, [], None),
                                     (NW2, 3, [], nw3), (nw3, 3, [], None)]
    assert query(wh, log) == [(NW1, 0, 2, 0), (NW2, 0, 1, 0), (nw3, 0, 0, 0)]
    assert query(wh, GOLD_PAID)[0][0] == (
        paid_before + new_paid + _money(c3[col["paid_amount"]]))  # lines 1-2 paid as before, line 3 added
    assert unconserved_files(wh) == []

    # nw_004 reverses line 3 (its exact amounts negated) and a line 4 no file holds, both naming member A:
    # line 3's latest version is now the reversal, and the claim's lines name two members again. All of them
    # are quarantined, nothing is taken back while they are, and the quarantine-rate gate stops gold, saying
    # which rows are in conflict
    def reversal_of(r, n, member):
        return _reversal(line(r, n, member), col)

    write(nw4, [reversal_of(c3, 3, member_a), reversal_of(c3, 4, member_a)], 1)
    gold_before = query(wh, GOLD_PAID)
    result = materialize_graph(landing, wh, instance=instance, partitions=[nw4])
    assert not result.success
    assert query(wh, claim_rows) == [
        (NW1, 1, [], nw3), (nw3, 1, conflict, None), (NW1, 2, [], nw3), (nw3, 2, conflict, None),
        (NW2, 3, [], nw3), (nw3, 3, [], nw4), (nw4, 3, conflict, None), (nw4, 4, conflict, None)]
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines_validated WHERE claim_id = 'XC1' "
                     "AND reverses IS NOT NULL") == [(0,)]
    gate = check_result(result, "quarantine_rate_gate")
    hint = ("{n} of them claim_member_conflict: their claims' lines in another file name another member "
            "(correcting the file that names the wrong one settles them; see silver_claims_quarantine)")
    assert not gate.passed
    assert (f"{nw3}: 66.67% quarantined > 10% (top rules: claim_member_conflict (2); {hint.format(n=2)})"
            in gate.description)
    assert (f"{nw4}: 100.00% quarantined > 10% (top rules: claim_member_conflict (2); {hint.format(n=2)})"
            in gate.description)
    assert query(wh, GOLD_PAID) == gold_before  # gold held back
    assert unconserved_files(wh) == []
    assert _peer_verdicts(landing, "XC1") == sorted(
        (f, n, r, s is not None, False) for f, n, r, s in query(wh, claim_rows))
    rebuilt = tmp_path / "rebuilt.duckdb"
    assert not materialize_graph(landing, rebuilt).success  # the same gate
    assert query(rebuilt, VERDICTS) == query(wh, VERDICTS)


def test_a_member_corrected_by_sending_a_claim_again_settles_it_reversed_lines_too(tmp_path):
    """A payer corrects a claim's member by sending every line again under the new member, the reversal of a
    line it reversed earlier as a reversal again: the new versions replace the old ones (the reversal takes
    the paid version back, whatever member that version named), nothing is quarantined, and the claim is
    the new member's in silver. The pandas peer decides the same."""
    header, rows, col, paid, member_a, member_b = _paid_lines_of_two_members(tmp_path, 60, seed=79)
    others = [r for r in rows if r is not paid[0] and r is not paid[1]]

    def line(base, n, member, reversed_=False):
        r = list(base)
        r[col["claim_id"]], r[col["line_number"]], r[col["member_id"]] = "XR1", str(n), member
        return _reversal(r, col) if reversed_ else r

    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)
    nw3 = "northwind/nw_003.csv"

    def write(name, lines, age_days):
        _write_aged(landing / name, [header, *lines], age_days)

    write(NW1, [line(paid[0], 1, member_a), line(paid[1], 2, member_a), *others[:20]], 3)
    write(NW2, [line(paid[1], 2, member_a, reversed_=True), *others[20:40]], 2)
    write(nw3, [line(paid[0], 1, member_b), line(paid[1], 2, member_b, reversed_=True), *others[40:]], 1)
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    for name in (NW1, NW2, nw3):
        assert materialize_graph(landing, wh, instance=instance, partitions=[name]).success
    rows_of_claim = ("SELECT source_file, claim_line_number, failed_rules, superseded_by, reverses FROM "
                     "silver.silver_claim_lines_validated WHERE claim_id = 'XR1' ORDER BY 2, 1")
    assert query(wh, rows_of_claim) == [(NW1, 1, [], nw3, None), (nw3, 1, [], None, None),
                                         (NW1, 2, [], NW2, None), (NW2, 2, [], nw3, NW1), (nw3, 2, [], None, NW1)]
    # silver: both lines under member B's key, line 2 netted to 0
    assert query(wh, "SELECT claim_line_number, claim_status, paid_amount, count(DISTINCT member_key) OVER () "
                     "FROM silver.silver_claim_lines WHERE claim_id = 'XR1' ORDER BY 1") == [
        (1, "paid", _money(paid[0][col["paid_amount"]]), 1), (2, "reversed", 0, 1)]
    assert query(wh, "SELECT count(*) FROM silver.silver_claims_quarantine") == [(0,)]
    assert unconserved_files(wh) == []
    fresh = tmp_path / "fresh.duckdb"
    assert materialize_graph(landing, fresh).success
    assert query(fresh, VERDICTS) == query(wh, VERDICTS)
    assert _peer_verdicts(landing, "XR1") == sorted(
        (f, n, r, s is not None, v is not None) for f, n, r, s, v in query(wh, rows_of_claim))


def test_a_reversal_that_landed_before_its_line_takes_it_back_when_the_line_lands(tmp_path):
    """Files can land out of order. nw_000 and nw_001 (landed first) hold reversals of lines no file holds
    yet; nw_002, landed later, the lines. A line paid on or before its reversal's paid date is the one the
    reversal took back: the reversal is ordered after it and nets it to 0, also when a rejected copy of the
    line came before the reversal, and when a partial reversal landed between them. A line paid after the
    reversal is a new payment (voided and paid again) and stays the line. Withdrawing the late line makes
    the reversal standalone again. A rerun, a fresh build and the pandas peer decide the same."""
    header, rows, col, paid, _, _ = _paid_lines_of_two_members(tmp_path, 80, seed=81)
    late, repaid, same_day, after_rejected, after_partial = paid[:5]
    others = [r for r in rows if not any(r is p for p in paid[:5])]
    nw0 = "northwind/nw_000.csv"

    def reversal_of(r, paid_days_later: int, **change: str):
        return _reversal(r, col, paid_date=_shifted(r[col["paid_date"]], paid_days_later), **change)

    repaid_after = list(repaid)
    repaid_after[col["paid_date"]] = _shifted(repaid[col["paid_date"]], 20)  # after its reversal (+10)
    broken = list(after_rejected)
    broken[col["service_date"]] = "2024-13-01"  # a first copy the payer sent broken: quarantined
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)

    def write(name, lines, age_days):
        _write_aged(landing / name, [header, *lines], age_days)

    write(nw0, [broken, reversal_of(after_partial, 10), *others[:20]], 4)
    write(NW1, [reversal_of(late, 10), reversal_of(repaid, 10), reversal_of(same_day, 0),
                reversal_of(after_rejected, 10), reversal_of(after_partial, 10, paid_amount="-0.01"),
                *others[20:40]], 3)
    lines_landing_late = [late, repaid_after, same_day, after_rejected, after_partial]
    write(NW2, [*lines_landing_late, *others[40:]], 2)
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()

    def key(r):
        return _line_key(r, col)

    def verdicts():
        return _verdicts_of(wh, lines_landing_late, col)

    def amount(r):
        return _money(r[col["paid_amount"]])

    for name in (nw0, NW1):
        assert materialize_graph(landing, wh, instance=instance, partitions=[name]).success
    # alone, each good reversal keeps its negative amounts (a line reversed before the warehouse's history);
    # the one after a rejected copy waits for that copy; nw_001's partial reversal is the later version
    assert verdicts() == {
        key(late): {NW1: ([], None, None)}, key(repaid): {NW1: ([], None, None)},
        key(same_day): {NW1: ([], None, None)},
        key(after_rejected): {nw0: (["invalid_service_date"], None, None),
                              NW1: (["reversal_of_rejected_line"], None, None)},
        key(after_partial): {nw0: ([], NW1, None), NW1: ([], None, None)}}
    paid_alone = query(wh, GOLD_PAID)[0][0]
    assert paid_alone == (sum(amount(r) for r in others[:40] if r[col["status"]] in ("paid", "adjusted", "reversed"))
                          - amount(late) - amount(repaid) - amount(same_day) - Decimal("0.01"))

    result = materialize_graph(landing, wh, instance=instance, partitions=[NW2])

    assert result.success
    taken_back = {NW1: ([], None, NW2), NW2: ([], NW1, None)}
    expected = {key(late): taken_back, key(same_day): taken_back,
                key(repaid): {NW1: ([], NW2, None), NW2: ([], None, None)},
                key(after_rejected): {nw0: (["invalid_service_date"], None, None), **taken_back},
                # the partial reversal (nw_001) stands before the line, the matching one (nw_000) after it
                key(after_partial): {NW1: ([], NW2, None), NW2: ([], nw0, None), nw0: ([], None, NW2)}}
    assert verdicts() == expected
    current = {(r[0], r[1]): r[2:] for r in query(
        wh, "SELECT claim_id, claim_line_number, source_file, claim_status, paid_amount FROM silver.silver_claim_lines")}
    assert [current[key(r)] for r in lines_landing_late] == [
        (NW1, "reversed", 0), (NW2, "paid", amount(repaid)), (NW1, "reversed", 0), (NW1, "reversed", 0),
        (nw0, "reversed", 0)]
    # gold: the reversals that stood alone are netted now (the partial one is replaced), the repaid line is paid
    new_paid = sum(amount(r) for r in others[40:] if r[col["status"]] in ("paid", "adjusted", "reversed"))
    alone = amount(late) + amount(repaid) + amount(same_day) + Decimal("0.01")
    assert query(wh, GOLD_PAID)[0][0] == paid_alone + alone + new_paid + amount(repaid)
    # nw_000 and nw_001, whose rows changed, are counted again in the same run
    assert query(wh, "SELECT source_file, max(rows_quarantined), max(rows_superseded) "
                     "FROM silver.silver_data_quality_log GROUP BY 1 ORDER BY 1") == [
        (nw0, 1, 0), (NW1, 0, 2), (NW2, 0, 4)]
    assert unconserved_files(wh) == []
    everything, silver_now, gold_now = query(wh, VERDICTS), query(wh, SILVER), [query(wh, g) for g in GOLD]
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success
    assert query(wh, VERDICTS) == everything

    _same_in_a_fresh_build_and_the_peer(landing, wh, tmp_path / "fresh_both.duckdb", lines_landing_late, col)
    assert query(wh, SILVER) == silver_now and [query(wh, g) for g in GOLD] == gold_now

    # nw_002 corrected without the late line: its reversal stands alone again, with its negative amounts
    write(NW2, [repaid_after, same_day, after_rejected, after_partial, *others[40:]], 2)
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success
    assert verdicts() == {**expected, key(late): {NW1: ([], None, None)}}
    assert query(wh, "SELECT source_file, max(rows_quarantined), max(rows_superseded) "
                     "FROM silver.silver_data_quality_log GROUP BY 1 ORDER BY 1") == [
        (nw0, 1, 0), (NW1, 0, 2), (NW2, 0, 3)]
    assert query(wh, "SELECT paid_amount FROM silver.silver_claim_lines WHERE claim_id = ? AND claim_line_number = ?",
                 list(key(late))) == [(-amount(late),)]
    assert query(wh, GOLD_PAID)[0][0] == paid_alone + alone - amount(late) + new_paid + amount(repaid)
    assert unconserved_files(wh) == []
    _same_in_a_fresh_build_and_the_peer(landing, wh, tmp_path / "fresh_withdrawn.duckdb", lines_landing_late, col)


def test_an_original_that_landed_after_its_adjustment_does_not_replace_it(tmp_path):
    """Files can land out of order, and a payer can send a line's history again. nw_000 and nw_001 (landed
    first, in that order) hold adjustments (and nw_000 some originals); nw_002, landed last, versions of
    the same lines. A version that is neither an adjustment nor a reversal, paid before an adjustment of its
    line that landed earlier, is the version that adjustment replaced: it is ordered right before the first
    such adjustment to land, and replaces nothing. A version paid on or after the adjustment's day is a new
    adjudication (a payment again after a void, too) and is the line; so is one with no paid date, and one
    that landed after versions out of the order of their paid dates (landing order). A rerun, a fresh build
    and the pandas peer decide the same."""
    header, rows, col, paid, _, _ = _paid_lines_of_two_members(tmp_path, 80, seed=83)
    cases = late, same_day, readjudicated, undated, resent, voided_repaid, twice, muddled = paid[:8]
    others = [r for r in rows if not any(r is p for p in cases)]
    nw0 = "northwind/nw_000.csv"

    def version(r, status: str, paid_days_later: int, less: str):
        v = list(r)
        v[col["status"]], v[col["paid_date"]] = status, _shifted(r[col["paid_date"]], paid_days_later)
        v[col["paid_amount"]] = _fmt(_money(r[col["paid_amount"]]) - Decimal(less))
        return v

    adjustments = [version(r, "adjusted", days, "1.00") for r, days in
                   [(late, 10), (same_day, 0), (readjudicated, 10), (undated, 10), (resent, 10)]]
    readjudicated_after = version(readjudicated, "paid", 20, "0")  # after its adjustment (+10)
    pending = list(undated)
    pending[col["status"]], pending[col["paid_date"]], pending[col["paid_amount"]] = "pending", "", "0.00"
    # voided_repaid: adjusted (nw_000), the adjustment reversed (nw_001), paid again that day (nw_002)
    voided = version(voided_repaid, "adjusted", 10, "1.00")
    repaid = version(voided_repaid, "paid", 10, "0")
    # twice: adjusted at +5 (nw_000) and +10 (nw_001); its original lands last
    twice_first, twice_second = version(twice, "adjusted", 5, "1.00"), version(twice, "adjusted", 10, "2.00")
    # muddled: paid again at +20 (nw_000) landed before the adjustment at +10 (nw_001): the files' order and
    # the paid dates disagree already, so its original (nw_002) keeps landing order
    muddled_later, muddled_adjusted = version(muddled, "paid", 20, "0"), version(muddled, "adjusted", 10, "1.00")
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)

    def write(name, lines, age_days):
        _write_aged(landing / name, [header, *lines], age_days)

    write(nw0, [resent, voided, twice_first, muddled_later, *others[:20]], 4)
    write(NW1, [*adjustments, _reversal(voided, col), twice_second, muddled_adjusted, *others[20:40]], 3)
    landing_late = [late, same_day, readjudicated_after, pending, resent, repaid, twice, muddled]
    write(NW2, [*landing_late, *others[40:]], 2)
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()

    def key(r):
        return _line_key(r, col)

    def paying(lines):
        return sum(_money(r[col["paid_amount"]]) for r in lines if r[col["status"]] in ("paid", "adjusted", "reversed"))

    for name in (nw0, NW1):
        assert materialize_graph(landing, wh, instance=instance, partitions=[name]).success
    # the reversal nets voided_repaid's adjustment to 0
    assert query(wh, GOLD_PAID)[0][0] == paying([*others[:40], *adjustments, twice_second, muddled_adjusted])

    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success

    later_wins = {NW1: ([], NW2, None), NW2: ([], None, None)}
    expected = {key(late): {NW2: ([], NW1, None), NW1: ([], None, None)},
                key(same_day): later_wins, key(readjudicated): later_wins, key(undated): later_wins,
                # nw_000's original, nw_002's copy of it (placed before the adjustment), the adjustment
                key(resent): {nw0: ([], NW2, None), NW2: ([], NW1, None), NW1: ([], None, None)},
                key(voided_repaid): {nw0: ([], NW1, None), NW1: ([], NW2, nw0), NW2: ([], None, None)},
                # the original is placed before the first adjustment to land, not the last
                key(twice): {NW2: ([], nw0, None), nw0: ([], NW1, None), NW1: ([], None, None)},
                key(muddled): {nw0: ([], NW1, None), NW1: ([], NW2, None), NW2: ([], None, None)}}
    assert _verdicts_of(wh, landing_late, col) == expected
    current_rows = [adjustments[0], same_day, readjudicated_after, pending, adjustments[4], repaid, twice_second,
                    muddled]
    current = {(r[0], r[1]): r[2:] for r in query(
        wh, "SELECT claim_id, claim_line_number, source_file, claim_status, paid_amount FROM silver.silver_claim_lines")}
    assert [current[key(r)] for r in landing_late] == [
        (f, r[col["status"]], _money(r[col["paid_amount"]]) if r[col["status"]] != "pending" else 0)
        for f, r in zip([NW1, NW2, NW2, NW2, NW1, NW2, NW1, NW2], current_rows, strict=True)]
    assert query(wh, GOLD_PAID)[0][0] == paying([*others, *current_rows])
    # nw_000 (its original is superseded by nw_002's copy now) and nw_001 are counted again in the same run
    assert query(wh, "SELECT source_file, max(rows_superseded) FROM silver.silver_data_quality_log "
                     "WHERE load_id = (SELECT max(load_id) FROM silver.silver_data_quality_log) GROUP BY 1 ORDER BY 1"
                 ) == [(nw0, 4), (NW1, 5), (NW2, 3)]
    assert unconserved_files(wh) == []
    everything = query(wh, VERDICTS)
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success
    assert query(wh, VERDICTS) == everything
    _same_in_a_fresh_build_and_the_peer(landing, wh, tmp_path / "fresh.duckdb", landing_late, col)


def test_a_reversal_and_another_copy_of_a_line_in_one_file_are_two_versions(tmp_path):
    """A payer sends a reversal and its correction together (an 835's reversal and corrected claim), or a line
    and its void in one file. A reversal and one copy that is not a reversal, in one file, are two versions of
    the line, whatever their row order: the reversal comes first when the last earlier file holding the line
    holds a copy that is not a reversal (it takes that back, and the correction is the line), else second
    (it takes back the copy in its own file: the line nets to 0). A third copy, or two copies that are not reversals, stay duplicate_line.
    A rerun, a fresh build (whose scope finds a claim held in one file by the pair) and the pandas peer
    decide the same."""
    header, rows, col, paid, _, _ = _paid_lines_of_two_members(tmp_path, 160, seed=89)
    by_claim: dict[str, list] = {}
    for r in rows:
        by_claim.setdefault(r[col["claim_id"]], []).append(r)
    one_line = [by_claim[r[col["claim_id"]]][0] for r in paid if len(by_claim[r[col["claim_id"]]]) == 1]
    # claims held by nw_002 alone: one-line claims
    voided, voided_swapped, thrice, twice = one_line[:4]
    later_claims = {r[col["claim_id"]] for r in (voided, voided_swapped, thrice, twice)}
    corrected, swapped, mismatched, rejected, rejected_void, broken_fix = [
        r for r in paid if r[col["claim_id"]] not in later_claims][:6]
    cases = [corrected, swapped, mismatched, rejected, rejected_void, broken_fix, voided, voided_swapped, thrice,
             twice]
    others = [r for r in rows if not any(r is p for p in cases)]
    first_file = [r for r in others if r[col["claim_id"]] not in later_claims][:40]
    second_file = [r for r in others if not any(r is f for f in first_file)]

    def correction(r):
        v = list(r)
        v[col["status"]] = "adjusted"
        v[col["paid_amount"]] = _fmt(_money(r[col["paid_amount"]]) - Decimal("1.00"))
        return v

    broken = list(rejected)
    broken[col["service_date"]] = "2024-02-30"  # nw_001's copy of `rejected` breaks a rule of its own
    broken_void = list(rejected_void)
    broken_void[col["service_date"]] = "2024-02-30"  # rejected_void's original in nw_002 does too
    fix_broken = correction(broken_fix)
    fix_broken[col["service_date"]] = "2024-02-30"  # broken_fix's correction does too
    fixes = {"corrected": correction(corrected), "swapped": correction(swapped),
             "mismatched": correction(mismatched), "rejected": correction(rejected)}
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)
    _write_aged(landing / NW1, [header, corrected, swapped, mismatched, broken, broken_fix, *first_file], 3)
    in_nw2 = [
        _reversal(corrected, col), fixes["corrected"],                        # 835 order: reversal, correction
        fixes["swapped"], _reversal(swapped, col),                            # the other row order
        _reversal(mismatched, col, paid_amount="-0.01"), fixes["mismatched"],  # takes back less than was paid
        _reversal(rejected, col), fixes["rejected"],                          # nw_001's copy was rejected
        _reversal(rejected_void, col), broken_void,                           # a rejected line and its void
        _reversal(broken_fix, col), fix_broken,                               # a rejected correction
        voided, _reversal(voided, col),                                       # a line and its void
        _reversal(voided_swapped, col), voided_swapped,
        thrice, _reversal(thrice, col), thrice,                               # a third copy
        twice, twice]                                                         # no reversal: a duplicate
    _write_aged(landing / NW2, [header, *in_nw2, *second_file], 2)
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW1]).success
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success

    def key(r):
        return _line_key(r, col)

    found = {k: _sorted(v) for k, v in _group(query(wh, VERDICTS)).items()}
    taken_back_and_corrected = _sorted([(NW1, [], NW2, None), (NW2, [], NW2, NW1), (NW2, [], None, None)])
    assert found[key(corrected)] == found[key(swapped)] == taken_back_and_corrected
    assert found[key(mismatched)] == _sorted([(NW1, [], NW2, None), (NW2, [], None, None),
                                              (NW2, ["reversal_mismatch"], None, None)])
    assert found[key(rejected)] == _sorted([(NW1, ["invalid_service_date"], None, None), (NW2, [], None, None),
                                            (NW2, ["reversal_of_rejected_line"], None, None)])
    assert found[key(rejected_void)] == _sorted([(NW2, ["invalid_service_date"], None, None),
                                                 (NW2, ["reversal_of_rejected_line"], None, None)])
    # a copy that broke a rule of its own keeps it, and replaces nothing
    assert found[key(broken_fix)] == _sorted([(NW1, [], NW2, None), (NW2, [], None, NW1),
                                              (NW2, ["invalid_service_date"], None, None)])
    netted = [(NW2, [], NW2, None), (NW2, [], None, NW2)]
    assert found[key(voided)] == found[key(voided_swapped)] == _sorted(netted)
    assert found[key(thrice)] == _sorted([*netted, (NW2, ["duplicate_line"], None, None)])
    assert found[key(twice)] == _sorted([(NW2, [], None, None), (NW2, ["duplicate_line"], None, None)])

    current = {(r[0], r[1]): r[2:] for r in query(
        wh, "SELECT claim_id, claim_line_number, claim_status, paid_amount FROM silver.silver_claim_lines")}
    for case in ("corrected", "swapped", "mismatched", "rejected"):
        fix = fixes[case]
        assert current[key(fix)] == ("adjusted", _money(fix[col["paid_amount"]])), case
    for r in (voided, voided_swapped, thrice, broken_fix):  # netted: reversed, nothing paid
        assert current[key(r)] == ("reversed", 0)
    assert current[key(twice)] == ("paid", _money(twice[col["paid_amount"]]))
    assert key(rejected_void) not in current

    def paying(lines):
        return sum(_money(r[col["paid_amount"]]) for r in lines if r[col["status"]] in ("paid", "adjusted", "reversed"))

    assert query(wh, GOLD_PAID)[0][0] == paying([*first_file, *second_file, *fixes.values(), twice])
    # nw_001's four lines taken back or replaced by nw_002 are counted again in the same run
    assert query(wh, "SELECT source_file, max(rows_superseded), max(rows_quarantined) "
                     "FROM silver.silver_data_quality_log "
                     "WHERE load_id = (SELECT max(load_id) FROM silver.silver_data_quality_log) GROUP BY 1 ORDER BY 1"
                 ) == [(NW1, 4, 1), (NW2, 5, 7)]
    assert unconserved_files(wh) == []
    everything = query(wh, VERDICTS)
    assert materialize_graph(landing, wh, instance=instance, partitions=[NW2]).success
    assert query(wh, VERDICTS) == everything
    _same_in_a_fresh_build_and_the_peer(landing, wh, tmp_path / "fresh.duckdb", cases, col)


def test_a_line_voided_before_and_paid_and_voided_again_in_one_file_nets_to_zero(tmp_path):
    """nw_001 pays a line, nw_002 voids it, nw_003 pays it again and voids that payment (a reversal and another
    copy in one file): the last earlier file holding the line holds only its void, so the new reversal takes
    back the new copy (not the voided original a second time) and gold pays 0 for the line, as the fresh
    build and the pandas peer decide too."""
    header, rows, col, paid, _, _ = _paid_lines_of_two_members(tmp_path, 60, seed=97)
    line = paid[0]
    again = list(line)
    again[col["paid_amount"]] = _fmt(_money(line[col["paid_amount"]]) - Decimal("10.00"))
    others = [r for r in rows if r is not line]
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)
    nw3 = "northwind/nw_003.csv"
    _write_aged(landing / NW1, [header, line, *others[:20]], 4)
    _write_aged(landing / NW2, [header, _reversal(line, col), *others[20:40]], 3)
    _write_aged(landing / nw3, [header, again, _reversal(again, col), *others[40:]], 2)
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    for name in (NW1, NW2, nw3):
        assert materialize_graph(landing, wh, instance=instance, partitions=[name]).success
    key = _line_key(line, col)
    assert _sorted(_group(query(wh, VERDICTS))[key]) == _sorted([
        (NW1, [], NW2, None), (NW2, [], nw3, NW1), (nw3, [], nw3, None), (nw3, [], None, nw3)])
    assert query(wh, "SELECT claim_status, paid_amount FROM silver.silver_claim_lines "
                     "WHERE claim_id = ? AND claim_line_number = ?", list(key)) == [("reversed", 0)]
    assert query(wh, GOLD_PAID)[0][0] == sum(_money(r[col["paid_amount"]]) for r in others
                                             if r[col["status"]] in ("paid", "adjusted", "reversed"))
    fresh = tmp_path / "fresh.duckdb"
    assert materialize_graph(landing, fresh).success
    assert query(fresh, VERDICTS) == query(wh, VERDICTS)
    assert [v for v in _peer_verdicts(landing, key[0]) if v[1] == key[1]] == sorted([
        (NW1, key[1], [], True, False), (NW2, key[1], [], True, True), (nw3, key[1], [], True, False),
        (nw3, key[1], [], False, True)])


def _sorted(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=str)


def _group(verdicts) -> dict:
    """{(claim, line): [(file, failed_rules, superseded_by, reverses), ...]} of VERDICTS rows."""
    grouped: dict = {}
    for v in verdicts:
        grouped.setdefault((v[1], v[2]), []).append((v[0], *v[3:]))
    return grouped


def test_a_reversal_beside_a_copy_whose_status_is_unknown_decides_the_same_in_either_row_order(tmp_path):
    """nw_002 holds a line's reversal and a copy of it whose status is not in the contract's status map
    (unknown_status), in both row orders. The unknown copy counts as not a reversal, so the two are a pair
    whatever DuckDB's row order: nw_001 held the paid line, so the reversal takes it back and the unknown copy
    is quarantined (it replaces nothing); gold pays 0 for the line. The fresh build and the pandas peer
    decide the same."""
    header, rows, col, paid, _, _ = _paid_lines_of_two_members(tmp_path, 80, seed=101)
    one_line = [r for r in paid if sum(x[col["claim_id"]] == r[col["claim_id"]] for x in rows) == 1]
    reversal_first, unknown_first = one_line[:2]
    cases = [reversal_first, unknown_first]

    def unknown(r):
        v = list(r)
        v[col["status"]] = "frobnicated"
        return v

    others = [r for r in rows if not any(r is c for c in cases)]
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)
    _write_aged(landing / NW1, [header, *cases, *others[:30]], 3)
    _write_aged(landing / NW2, [header, _reversal(reversal_first, col), unknown(reversal_first),
                                unknown(unknown_first), _reversal(unknown_first, col), *others[30:]], 2)
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    for name in (NW1, NW2):
        assert materialize_graph(landing, wh, instance=instance, partitions=[name]).success
    found = _group(query(wh, VERDICTS))
    for r in cases:
        assert _sorted(found[_line_key(r, col)]) == _sorted([
            (NW1, [], NW2, None), (NW2, [], None, NW1), (NW2, ["unknown_status"], None, None)])
    current = {(c, n): (s, p) for c, n, s, p in query(
        wh, "SELECT claim_id, claim_line_number, claim_status, paid_amount FROM silver.silver_claim_lines")}
    assert [current[_line_key(r, col)] for r in cases] == [("reversed", 0), ("reversed", 0)]
    assert query(wh, GOLD_PAID)[0][0] == sum(_money(r[col["paid_amount"]]) for r in others
                                             if r[col["status"]] in ("paid", "adjusted", "reversed"))
    _same_in_a_fresh_build_and_the_peer(landing, wh, tmp_path / "fresh.duckdb", cases, col)



def test_a_late_original_is_moved_next_to_the_adjustment_it_preceded_not_before_that_adjustments_whole_file(
        tmp_path):
    """nw_000 (landed first) holds a paid line; nw_001 its void and its adjustment together, paid 5 days
    later: a pair, the reversal first (nw_000 holds a copy that is not a reversal), the adjustment second.
    nw_002, landed last, sends the original again. That copy, paid before the adjustment, is the version the
    adjustment replaced: it is ordered right before the adjustment itself, after nw_001's reversal (not
    before nw_001's whole file, where it would come between the line and the reversal taking it back). The
    adjustment stays the line; gold pays its amount. Loaded file by file, the fresh build and the pandas peer
    decide the same."""
    header, rows, col, paid, _, _ = _paid_lines_of_two_members(tmp_path, 80, seed=107)
    line = next(r for r in paid if sum(x[col["claim_id"]] == r[col["claim_id"]] for x in rows) == 1)
    others = [r for r in rows if r is not line]
    later = _shifted(line[col["paid_date"]], 5)
    adjustment = list(line)
    adjustment[col["status"]], adjustment[col["paid_date"]] = "adjusted", later
    adjustment[col["paid_amount"]] = _fmt(_money(line[col["paid_amount"]]) / 2)
    nw0 = "northwind/nw_000.csv"
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)
    _write_aged(landing / nw0, [header, line, *others[:20]], 4)
    _write_aged(landing / NW1, [header, _reversal(line, col, paid_date=later), adjustment, *others[20:40]], 3)
    _write_aged(landing / NW2, [header, list(line), *others[40:]], 2)
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    for name in (nw0, NW1, NW2):
        assert materialize_graph(landing, wh, instance=instance, partitions=[name]).success

    # (file, failed rules, superseded_by, reverses) of the line's four copies
    assert _sorted(_group(query(wh, VERDICTS))[_line_key(line, col)]) == _sorted([
        (nw0, [], NW1, None),   # the line, taken back by nw_001's reversal
        (NW1, [], NW2, nw0),    # the reversal of nw_000's line, then the original sent again
        (NW2, [], NW1, None),   # the original sent again: replaced by the adjustment
        (NW1, [], None, None)])  # the adjustment: the line
    assert query(wh, "SELECT source_file, claim_status, paid_amount FROM silver.silver_claim_lines "
                     "WHERE claim_id = ? AND claim_line_number = ?", list(_line_key(line, col))) == [
        (NW1, "adjusted", _money(adjustment[col["paid_amount"]]))]
    assert query(wh, GOLD_PAID)[0][0] == _money(adjustment[col["paid_amount"]]) + sum(
        _money(r[col["paid_amount"]]) for r in others if r[col["status"]] in ("paid", "adjusted", "reversed"))
    assert unconserved_files(wh) == []
    _same_in_a_fresh_build_and_the_peer(landing, wh, tmp_path / "fresh.duckdb", [line], col)
