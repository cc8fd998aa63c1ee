"""Landing behaviour end to end (in process): bad files, new payers, idempotent reruns."""

import csv

import dagster as dg
import duckdb

from tests.helpers import (
    check_result,
    copy_contracts,
    copy_sample,
    materialize_graph,
    query,
    table_names,
)


def test_file_not_matching_its_contract_is_rejected_and_others_flow(tmp_path):
    """A file that does not match its contract is rejected by name, a payer whose contract is invalid is
    named and its files wait; every other file reaches gold."""
    landing = copy_sample(tmp_path / "landing")
    src = landing / "northwind" / "northwind_claims_001.csv"
    rows = list(csv.reader(src.open()))
    drop = {rows[0].index("paid_amount"), rows[0].index("status")}
    with (landing / "northwind" / "northwind_broken.csv").open("w", newline="") as f:
        csv.writer(f).writerows([[v for i, v in enumerate(r) if i not in drop] for r in rows[:50]])
    contracts = copy_contracts(tmp_path / "contracts")
    (contracts / "acme.yaml").write_text((contracts / "northwind.yaml").read_text().replace(
        "payer: northwind", "payer: acme").replace("amount_encoding: dollars", "amount_encoding: euros"))
    (landing / "acme").mkdir()
    (landing / "acme" / "acme_claims_001.csv").write_text(src.read_text())
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh, contracts=contracts)
    assert result.success
    check = check_result(result, "files_match_payer_contracts")
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert "northwind/northwind_broken.csv" in check.description
    assert "missing columns: paid_amount, status" in check.description
    assert f"payer contract {contracts / 'acme.yaml'}: amount_encoding must be one of" in check.description
    assert check.metadata["invalid_contracts"].value == "acme"
    assert query(wh, "SELECT status, error LIKE '%paid_amount, status%' FROM landing.landing_file_registry "
                     "WHERE source_file = 'northwind/northwind_broken.csv'") == [("rejected", True)]
    # acme's file waits for a valid contract: medflow-load does not register it, nothing of it is read
    assert query(wh, "SELECT count(*) FROM landing.landing_file_registry WHERE payer = 'acme'") == [(0,)]
    assert query(wh, "SELECT payer FROM landing.payer_contracts ORDER BY 1") == [
        ("bluepeak",), ("cascade",), ("northwind",)]
    # every other file, all three payers included, reached gold
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines WHERE source_file LIKE '%broken%'") == [(0,)]
    assert {r[0] for r in query(wh, "SELECT DISTINCT payer FROM gold.claims_monthly_summary")} == {
        "northwind", "bluepeak", "cascade"}
    assert query(wh, "SELECT count(DISTINCT source_file) FROM silver.silver_claim_lines") == [(3,)]


NEW_CONTRACT = """payer: meridian
description: A payer onboarded by a test with nothing but this file and a data file
file_glob: "*.csv"
delimiter: ";"
date_format: "%d.%m.%Y"
amount_encoding: dollars
name_format: first_last
max_quarantine_rate: 0.25   # a small first file: 1 bad row in 5 is tolerated for this payer
status_map: {APPROVED: paid, REJECTED: denied, OPEN: pending}
columns:
  claim_id: ClaimRef
  claim_line_number: Pos
  member_id: InsuredId
  member_first_name: Vorname
  member_last_name: Nachname
  provider_npi: NPI
  diagnosis_code: ICD
  procedure_code: CPT
  service_date: Leistungsdatum
  billed_amount: Betrag
  allowed_amount: Erlaubt
  paid_amount: Bezahlt
  claim_status: Status
  denial_reason_code: Grund
defaults:
  department: primary_care
"""

NEW_FILE = """ClaimRef;Pos;InsuredId;Vorname;Nachname;NPI;ICD;CPT;Leistungsdatum;Betrag;Erlaubt;Bezahlt;Status;Grund
M-1;1;I-77;Quintessa;Brightwater;1234567893;e11.9;99213;03.02.2025;150.00;120.00;100.00;approved;
M-1;2;I-77;Quintessa;Brightwater;1234567893;I10;93000;03.02.2025;60.00;50.00;40.50;APPROVED;
M-2;1;I-78;Percival;Whitlock;1234567893;Z00.00;99214;17.03.2025;210.00;0.00;0.00;REJECTED;50
M-3;1;I-79;Ophelia;Lindqvist;1234567893;J06.9;99203;31.03.2025;180.00;0.00;0.00;OPEN;
M-4;1;I-80;Horatio;Fairbanks;1234567893;J06.9;99203;45.03.2025;180.00;0.00;0.00;OPEN;
"""


def test_new_payer_onboarded_with_only_a_contract_and_a_file_reaches_gold(tmp_path):
    contracts = copy_contracts(tmp_path / "contracts")
    (contracts / "meridian.yaml").write_text(NEW_CONTRACT)
    landing = copy_sample(tmp_path / "landing")
    (landing / "meridian").mkdir()
    (landing / "meridian" / "meridian_2025_q1.csv").write_text(NEW_FILE)
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh, contracts=contracts)
    assert result.success
    assert check_result(result, "files_match_payer_contracts").passed
    gold = query(wh, "SELECT service_month, lines, claims, paid_amount, denied_lines FROM gold.claims_monthly_summary "
                     "WHERE payer = 'meridian' ORDER BY 1")
    assert [(str(m), n, c, str(p), d) for m, n, c, p, d in gold] == [
        ("2025-02-01", 2, 1, "140.50", 0), ("2025-03-01", 2, 2, "0.00", 1)]
    # the row with an impossible date is quarantined, not dropped
    assert query(wh, "SELECT claim_id, failed_rules FROM silver.silver_claims_quarantine WHERE payer = 'meridian'") == [
        ("M-4", ["invalid_service_date"])]
    assert query(wh, "SELECT DISTINCT diagnosis_code FROM silver.silver_claim_lines WHERE claim_id = 'M-1' "
                     "ORDER BY 1") == [("E119",), ("I10",)]


BOOKKEEPING = ("checked_at", "load_id", "through_load_id")  # when a file was checked / loaded, not data


def _snapshot(wh):
    snap = {}
    for table in table_names(wh, ("landing", "bronze", "silver", "gold", "reference")):
        cols = [c for (c,) in query(wh, "SELECT column_name FROM information_schema.columns WHERE "
                                        "table_schema || '.' || table_name = ? AND column_name NOT IN (?, ?, ?)",
                                    [table, *BOOKKEEPING])]
        snap[table] = query(wh, f"SELECT count(*), md5(string_agg(CAST(({', '.join(cols)}) AS VARCHAR), '|' "
                                f"ORDER BY CAST(({', '.join(cols)}) AS VARCHAR))) FROM {table}")[0]
    return snap


def test_rematerializing_unchanged_input_leaves_every_table_identical(tmp_path):
    landing = copy_sample(tmp_path / "landing")
    wh = tmp_path / "wh.duckdb"
    assert materialize_graph(landing, wh).success
    first, first_load = _snapshot(wh), query(wh, "SELECT max(load_id) FROM silver.silver_data_quality_log")[0][0]
    assert materialize_graph(landing, wh).success
    second = _snapshot(wh)
    assert len(first) >= 13
    assert first == second
    # the files were loaded again (a new load), and gold was recomputed from that load
    (second_load,) = query(wh, "SELECT max(load_id) FROM silver.silver_data_quality_log")[0]
    assert second_load > first_load
    assert query(wh, "SELECT DISTINCT through_load_id FROM gold.claims_monthly_summary") == [(second_load,)]
    assert first["silver.silver_claim_lines"][0] == query(
        wh, "SELECT count(DISTINCT (payer, claim_id, claim_line_number)) FROM silver.silver_claim_lines")[0][0]


def test_prod_target_without_key_stops_before_touching_data(tmp_path):
    landing = copy_sample(tmp_path / "landing")
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh, target="prod", pii_key=None)
    assert not result.success
    failure = result.get_step_failure_events()[0]
    assert "MEDFLOW_PII_KEY is not set" in failure.event_specific_data.error.to_string()
    assert not wh.exists()


def test_extreme_values_are_quarantined_not_fatal(tmp_path):
    """Values that overflow a cast or break a code check must quarantine their row, not fail the model."""
    landing = tmp_path / "landing"
    (landing / "cascade").mkdir(parents=True)
    src = (copy_sample(tmp_path / "sample") / "cascade" / "cascade_claims_001.txt").read_text().splitlines()
    header, rows = src[0], src[1:101]
    cols = header.split("|")
    def edit(row, **values):
        cells = row.split("|")
        for k, v in values.items():
            cells[cols.index(k)] = v
        return "|".join(cells)
    clean = [r for r in rows if r.split("|")[cols.index("STAT_CD")] == "P"]
    rows = [edit(clean[0], BILL_AMT_CENTS="1000000000000"),   # 10^10 dollars: beyond DECIMAL(12,2)
            edit(clean[1], REND_NPI="144602231"),             # 9 digits
            edit(clean[2], REND_NPI="12345678AB"),            # letters
            *clean[3:]]
    (landing / "cascade" / "cascade_edge.txt").write_text("\n".join([header, *rows]) + "\n")
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh)
    assert result.success
    got = query(wh, "SELECT source_row_number, failed_rules FROM silver.silver_claims_quarantine ORDER BY 1")
    assert got == [(1, ["invalid_amount"]), (2, ["invalid_npi"]), (3, ["invalid_npi"])]
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines") == [(len(rows) - 3,)]


def _landed(source_file: str, checksum: str, has_rows: bool = True):
    from medflow_assets.landing.zone import LandedFile
    return LandedFile(payer=source_file.split("/")[0], source_file=source_file, path=f"/landing/{source_file}",
                      size_bytes=100, checksum=checksum, header=["claim_id"], has_rows=has_rows)


def test_a_copy_landing_in_the_same_second_as_its_original_does_not_take_its_place():
    """first_seen_at is to the second: a copy whose name sorts first, seen in a later run within the same
    second, is still the copy (a file of an earlier run wins the tie)."""
    from datetime import datetime

    from medflow_assets.landing.assets import write_registry

    con = duckdb.connect()
    second = datetime(2026, 11, 28, 9, 30, 0)
    assert write_registry(con, [_landed("cascade/z_original.txt", "a" * 64)], {}, seen_at=second) == {}
    copy = _landed("cascade/a_copy.txt", "a" * 64)
    assert write_registry(con, [copy], {}, seen_at=second) == {"cascade/a_copy.txt": "cascade/z_original.txt"}
    assert copy.error.startswith("cascade/a_copy.txt: same bytes (sha256 aaaaaaaaaaaa...) as cascade/z_original.txt")
    # the same two files seen again together: still the same original
    again = [_landed("cascade/a_copy.txt", "a" * 64), _landed("cascade/z_original.txt", "a" * 64)]
    assert write_registry(con, again, {}, seen_at=datetime(2026, 11, 28, 10, 0, 0)) == {
        "cascade/a_copy.txt": "cascade/z_original.txt"}
    assert con.execute("SELECT source_file, status FROM landing.landing_file_registry ORDER BY 1").fetchall() == [
        ("cascade/a_copy.txt", "rejected"), ("cascade/z_original.txt", "accepted")]
    # two new files with the same bytes in one run: the first name is the original; empty files are never copies
    both = [_landed("cascade/n2.txt", "b" * 64), _landed("cascade/n1.txt", "b" * 64),
            _landed("cascade/e1.txt", "c" * 64, has_rows=False), _landed("cascade/e2.txt", "c" * 64, has_rows=False)]
    assert write_registry(con, both, {}, seen_at=datetime(2026, 11, 28, 11, 0, 0)) == {
        "cascade/n2.txt": "cascade/n1.txt"}


def test_a_file_with_the_bytes_of_an_earlier_version_of_another_file_is_a_copy_of_it():
    """A copy stays a copy after its original was corrected, and a file landing after the correction with the
    original's old bytes is a copy too: otherwise a rerun (every file of a payer runs again when its contract
    changes) would load its old lines as later versions, over the correction."""
    from datetime import datetime

    from medflow_assets.landing.assets import write_registry

    con = duckdb.connect()
    a, b, c = "cascade/a.txt", "cascade/b.txt", "cascade/c.txt"
    assert write_registry(con, [_landed(a, "1" * 64)], {}, seen_at=datetime(2026, 11, 28, 9)) == {}
    copy = _landed(b, "1" * 64)
    assert write_registry(con, [copy], {}, seen_at=datetime(2026, 11, 28, 10)) == {b: a}
    assert copy.error.startswith(f"{b}: same bytes (sha256 111111111111...) as {a}, which landed first")
    assert write_registry(con, [_landed(a, "2" * 64)], {}, seen_at=datetime(2026, 11, 28, 11)) == {}  # corrected
    again = [_landed(a, "2" * 64), _landed(b, "1" * 64)]
    assert write_registry(con, again, {}, seen_at=datetime(2026, 11, 28, 12)) == {b: a}
    assert again[1].error.startswith(f"{b}: same bytes (sha256 111111111111...) as an earlier version of {a}, ")
    late = [_landed(c, "1" * 64)]  # first seen after the correction
    assert write_registry(con, late, {}, seen_at=datetime(2026, 11, 28, 13)) == {c: a}
    assert "as an earlier version of cascade/a.txt, which landed first" in late[0].error
    assert con.execute("SELECT source_file, status FROM landing.landing_file_registry ORDER BY 1").fetchall() == [
        (a, "accepted"), (b, "rejected"), (c, "rejected")]
    assert con.execute("SELECT source_file, checksum FROM landing.landing_file_versions ORDER BY 2").fetchall() == [
        (a, "1" * 64), (a, "2" * 64)]
    # a withdrawn (its header only landed under its name): its lines are gone, so its earlier bytes landing
    # under another name are that data sent again, loaded (found on review)
    assert write_registry(con, [_landed(a, "3" * 64, has_rows=False)], {}, seen_at=datetime(2026, 11, 28, 14)) == {}
    assert write_registry(con, [_landed("cascade/d.txt", "2" * 64)], {}, seen_at=datetime(2026, 11, 28, 15)) == {}


def test_a_rejected_copy_run_again_after_its_original_was_corrected_does_not_undo_the_correction(tmp_path):
    """End to end (found by a landing review): A loads, B (A's bytes) is rejected as a copy, A is corrected
    (one paid amount), then the payer's contract changes and both run again: B stays a copy, and silver keeps
    A's corrected line."""
    import os
    import shutil

    a, b = "northwind/northwind_claims_001.csv", "northwind/northwind_claims_001_resent.csv"
    line = "SELECT source_file, paid_amount FROM silver.silver_claim_lines WHERE claim_id = 'NW0000000000'"
    landing = copy_sample(tmp_path / "landing")
    contracts = copy_contracts(tmp_path / "contracts")
    wh, instance = tmp_path / "wh.duckdb", dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, contracts=contracts, instance=instance).success
    shutil.copy(landing / a, landing / b)
    assert materialize_graph(landing, wh, contracts=contracts, instance=instance, partitions=[b]).success
    assert query(wh, "SELECT status FROM landing.landing_file_registry WHERE source_file = ?", [b]) == [("rejected",)]
    text = (landing / a).read_text()
    assert text.count("273.60,216.14,155.62,paid") == 1
    (landing / a).write_text(text.replace("273.60,216.14,155.62,paid", "273.60,216.14,150.00,paid"))
    os.utime(landing / a)
    assert materialize_graph(landing, wh, contracts=contracts, instance=instance, partitions=[a]).success
    assert [(f, float(p)) for f, p in query(wh, line)] == [(a, 150.00)]
    nw = contracts / "northwind.yaml"
    nw.write_text(nw.read_text().replace("max_quarantine_rate: 0.10", "max_quarantine_rate: 0.20"))
    assert materialize_graph(landing, wh, contracts=contracts, instance=instance, partitions=[a, b]).success
    assert query(wh, "SELECT status FROM landing.landing_file_registry WHERE source_file = ?", [b]) == [("rejected",)]
    assert [(f, float(p)) for f, p in query(wh, line)] == [(a, 150.00)]


def test_a_loaded_file_run_again_after_its_payers_contract_was_removed_keeps_its_rows(tmp_path):
    """Found by a data review: silver read the file's bronze rows again with no contract (every field empty)
    and quarantined every line. Now the file is held, as while a contract is invalid: silver, the
    data-quality log and gold keep what they had (the registry its verdict and checksum, with held_reason),
    and the file runs again once a contract is back. A folder never loaded is still rejected for the lack of
    a contract (test_new_payer_onboarded_with_only_a_contract_and_a_file_reaches_gold)."""
    from tests.helpers import file_fingerprints

    landing = copy_sample(tmp_path / "landing")
    contracts = copy_contracts(tmp_path / "contracts")
    wh, instance = tmp_path / "wh.duckdb", dg.DagsterInstance.ephemeral()
    nw = "northwind/northwind_claims_001.csv"
    assert materialize_graph(landing, wh, contracts=contracts, instance=instance).success
    silver = file_fingerprints(wh, "silver.silver_claim_lines_validated")
    log = query(wh, "SELECT * EXCLUDE (load_id) FROM silver.silver_data_quality_log ORDER BY ALL")
    gold = query(wh, "SELECT * FROM gold.claims_monthly_summary ORDER BY ALL")
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE source_file = ?", [nw])[0][0] > 0
    moved = (contracts / "northwind.yaml").rename(tmp_path / "northwind.yaml")
    result = materialize_graph(landing, wh, contracts=contracts, instance=instance, partitions=[nw])
    assert result.success
    assert query(wh, "SELECT status, held_reason FROM landing.landing_file_registry WHERE source_file = ?", [nw]) == [
        ("accepted", (f"{nw}: held, not read, while its payer's contract is invalid (payer contract "
                     f"{contracts / 'northwind.yaml'} is missing, and files of northwind/ were loaded with the one "
                     "it held (removed, or moved away?))"))]
    assert any(e.user_message.endswith("dbt processes 0 landed file(s): ; 1 held while their payer's contract is "
                                       "invalid or missing") for e in instance.all_logs(result.run_id))
    assert file_fingerprints(wh, "silver.silver_claim_lines_validated") == silver
    assert query(wh, "SELECT * EXCLUDE (load_id) FROM silver.silver_data_quality_log ORDER BY ALL") == log
    assert query(wh, "SELECT * FROM gold.claims_monthly_summary ORDER BY ALL") == gold
    moved.rename(contracts / "northwind.yaml")
    assert materialize_graph(landing, wh, contracts=contracts, instance=instance, partitions=[nw]).success
    assert file_fingerprints(wh, "silver.silver_claim_lines_validated") == silver


def test_the_registry_keeps_the_last_valid_contract_of_a_payer_whose_contract_is_invalid_now():
    """Its loaded rows were read with that contract, and the quarantine-rate gate reads its limit."""
    from medflow_assets.landing.assets import write_registry
    from medflow_assets.landing.contracts import load_contracts
    from medflow_assets.settings import CONTRACTS_DIR

    contracts = load_contracts(CONTRACTS_DIR)
    con = duckdb.connect()
    write_registry(con, [], contracts)
    stored = dict(con.execute("SELECT payer, contract_json FROM landing.payer_contracts").fetchall())
    assert sorted(stored) == ["bluepeak", "cascade", "northwind"]
    without_cascade = {k: v for k, v in contracts.items() if k != "cascade"}
    write_registry(con, [], without_cascade, keep_contracts={"cascade"})  # cascade.yaml invalid now
    assert dict(con.execute("SELECT payer, contract_json FROM landing.payer_contracts").fetchall()) == stored
    write_registry(con, [], without_cascade)  # cascade.yaml removed
    assert sorted(p for (p,) in con.execute("SELECT payer FROM landing.payer_contracts").fetchall()) == [
        "bluepeak", "northwind"]


def test_a_held_file_keeps_its_row_or_gets_one_that_says_why_with_its_write_time_and_is_not_held_once_gone():
    """write_registry's `held`: files of a payer whose contract is invalid (zone.held_file)."""
    from datetime import datetime

    from medflow_assets.landing.assets import write_registry
    from medflow_assets.landing.zone import LandingObject, held_file

    con = duckdb.connect()
    write_registry(con, [_landed("cascade/loaded.txt", "a" * 64)], {}, seen_at=datetime(2026, 11, 1, 8, 0, 0))
    written = datetime(2026, 10, 30, 7, 15, 0)
    held = [held_file(LandingObject(k, f"/landing/{k}", 10, "10:1", modified_at=written), "payer contract x: bad")
            for k in ("cascade/loaded.txt", "cascade/new.txt")]
    write_registry(con, [], {}, seen_at=datetime(2026, 11, 2, 8, 0, 0), held=held)
    rows = "SELECT source_file, status, checksum, held_reason, first_landed_at FROM landing.landing_file_registry ORDER BY 1"
    reason = "held, not read, while its payer's contract is invalid (payer contract x: bad)"
    assert con.execute(rows).fetchall() == [
        ("cascade/loaded.txt", "accepted", "a" * 64, f"cascade/loaded.txt: {reason}", datetime(2026, 11, 1, 8, 0, 0)),
        ("cascade/new.txt", "rejected", None, f"cascade/new.txt: {reason}", written)]
    write_registry(con, [], {}, gone={k: "gone" for k in ("cascade/loaded.txt", "cascade/new.txt")})
    assert con.execute("SELECT source_file, status, held_reason FROM landing.landing_file_registry ORDER BY 1"
                       ).fetchall() == [("cascade/loaded.txt", "missing", None), ("cascade/new.txt", "rejected", None)]


def test_a_files_first_landing_is_its_write_time_kept_through_corrections_and_new_after_it_left():
    """first_landed_at orders a line's versions across files (dbt_project/macros/line_versions.sql)."""
    from datetime import datetime

    from medflow_assets.landing.assets import write_registry

    con = duckdb.connect()
    written, seen = datetime(2026, 11, 1, 8, 0, 0), datetime(2026, 11, 28, 9, 0, 0)

    def landed_at():
        return con.execute("SELECT first_landed_at FROM landing.landing_file_registry").fetchone()[0]

    f = _landed("cascade/c.txt", "a" * 64)
    f.modified_at = written
    write_registry(con, [f], {}, seen_at=seen)
    assert landed_at() == written  # the write time, not the scan's
    corrected = _landed("cascade/c.txt", "b" * 64)
    corrected.modified_at = datetime(2026, 11, 20, 8, 0, 0)
    write_registry(con, [corrected], {}, seen_at=datetime(2026, 11, 29, 9, 0, 0))
    assert landed_at() == written  # a correction keeps the file's place
    write_registry(con, [], {}, seen_at=datetime(2026, 11, 30, 9, 0, 0), gone={"cascade/c.txt": "gone"})
    back = _landed("cascade/c.txt", "c" * 64)
    back.modified_at = datetime(2026, 12, 1, 8, 0, 0)
    write_registry(con, [back], {}, seen_at=datetime(2026, 12, 1, 9, 0, 0))
    assert landed_at() == datetime(2026, 12, 1, 8, 0, 0)  # back after it left the zone: it lands anew
    unknown = _landed("cascade/d.txt", "d" * 64)  # a zone that does not tell the write time: the scan's
    write_registry(con, [unknown], {}, seen_at=datetime(2026, 12, 2, 9, 0, 0))
    assert con.execute("SELECT first_landed_at FROM landing.landing_file_registry WHERE source_file = "
                       "'cascade/d.txt'").fetchone()[0] == datetime(2026, 12, 2, 9, 0, 0)


def test_two_files_not_valid_csv_are_both_rejected_and_the_third_flows(tmp_path):
    landing = copy_sample(tmp_path / "landing")
    for f in (landing / "northwind" / "northwind_claims_001.csv", landing / "bluepeak" / "bluepeak_claims_001.csv"):
        lines = f.read_text().splitlines()
        f.write_text("\n".join(lines[:9] + [lines[9] + ",EXTRA"] + lines[10:]) + "\n")   # line 10: a column too many
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh)
    assert result.success
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "landed_files_parsed"]
    assert not check.passed and check.metadata["files_not_parsed"].value == 2
    assert query(wh, "SELECT source_file, split_part(error, ' (', 1) FROM landing.landing_file_registry "
                     "WHERE status = 'rejected' ORDER BY 1") == [
        ("bluepeak/bluepeak_claims_001.csv", "bluepeak/bluepeak_claims_001.csv is not valid CSV at line 10"),
        ("northwind/northwind_claims_001.csv", "northwind/northwind_claims_001.csv is not valid CSV at line 10")]
    assert query(wh, "SELECT DISTINCT source_file FROM bronze.bronze_claim_lines") == [("cascade/cascade_claims_001.txt",)]
    assert query(wh, "SELECT DISTINCT payer FROM gold.claims_monthly_summary") == [("cascade",)]


def test_a_file_whose_name_ends_in_a_space_and_is_not_valid_csv_is_rejected_by_name(tmp_path):
    """DuckDB's error names the file's path, which MedFlow reads from the message without the spaces around it:
    a landed name ending in a space (read when a contract's file_glob is *) was not found in the registry, and
    the whole run failed (found by a landing review). It is rejected by name, and the other files flow."""
    landing = copy_sample(tmp_path / "landing")
    contracts = copy_contracts(tmp_path / "contracts")
    nw = contracts / "northwind.yaml"
    nw.write_text(nw.read_text().replace('file_glob: "*.csv"', 'file_glob: "*"'))
    src = landing / "northwind" / "northwind_claims_001.csv"
    lines = src.read_text().splitlines()
    (landing / "northwind" / "odd name.csv ").write_text("\n".join(lines[:9] + [lines[9] + ",EXTRA"] + lines[10:]) + "\n")
    src.unlink()
    wh = tmp_path / "wh.duckdb"
    assert materialize_graph(landing, wh, contracts=contracts).success
    assert query(wh, "SELECT source_file, split_part(error, ' (', 1) FROM landing.landing_file_registry "
                     "WHERE status = 'rejected' ORDER BY 1") == [
        ("northwind/odd name.csv ", "northwind/odd name.csv  is not valid CSV at line 10")]
    assert query(wh, "SELECT DISTINCT payer FROM gold.claims_monthly_summary ORDER BY 1") == [("bluepeak",), ("cascade",)]


# (billed, allowed, paid) in each payer's amount encoding: the parsed amounts, or None for invalid_amount. A
# text that is not exactly the encoding is rejected, never rounded or read another way.
AMOUNT_CASES = {
    ("northwind", ","): [
        (("1234.5", "1000", ".50"), ("1234.50", "1000.00", "0.50")),
        (("12.345", "10.00", "5.00"), None),          # a fraction of a cent
        (("1,234.56", "10.00", "5.00"), None),        # a thousands separator in a plain decimal
        (("$12.50", "10.00", "5.00"), None),
        (("(12.50)", "10.00", "5.00"), None),
    ],
    ("bluepeak", ","): [
        (("$1,234.56", "1000.00", "$0.5"), ("1234.56", "1000.00", "0.50")),
        (("$1.234,56", "$1.000,00", "$900,00"), None),  # a European format: not 1.23456
        (("$1.234,56", "$1.000,00", "$1.000,00"), None),
        (("$12.345", "$10.00", "$5.00"), None),
        (("$1,23.00", "$1.00", "$0.50"), None),        # commas only between groups of three digits
    ],
    ("cascade", "|"): [
        (("123456", "100000", "0"), ("1234.56", "1000.00", "0.00")),
        (("1234.56", "1000", "900"), None),           # cents carry no decimal point
        (("0x10", "8", "4"), None),
        (("1_000", "800", "400"), None),
    ],
}


def test_an_amount_not_exactly_in_its_payer_encoding_is_invalid_not_changed(tmp_path):
    landing = copy_sample(tmp_path / "sample")
    out = tmp_path / "landing"
    expected = {}
    for (payer, delim), cases in AMOUNT_CASES.items():
        [path] = (landing / payer).iterdir()
        lines = path.read_text().splitlines()
        header = next(csv.reader([lines[0]], delimiter=delim))
        cols = [header.index(c) for c in {"northwind": ("billed_amount", "allowed_amount", "paid_amount"),
                                          "bluepeak": ("Billed", "Allowed", "Paid"),
                                          "cascade": ("BILL_AMT_CENTS", "ALLOW_AMT_CENTS", "PAID_AMT_CENTS")}[payer]]
        status = header.index({"northwind": "status", "bluepeak": "Status", "cascade": "STAT_CD"}[payer])
        paid = [r for r in csv.reader(lines[1:], delimiter=delim) if r[status] in ("paid", "PAID", "P")]
        rows = []
        for i, (texts, parsed) in enumerate(cases):
            row = list(paid[i])
            for c, t in zip(cols, texts):
                row[c] = t
            rows.append(row)
            expected[(f"{payer}/{path.name}", i + 1)] = parsed
        (out / payer).mkdir(parents=True)
        with (out / payer / path.name).open("w", newline="") as f:
            csv.writer(f, delimiter=delim, lineterminator="\n").writerows([header, *rows])
    wh = tmp_path / "wh.duckdb"
    materialize_graph(out, wh)  # the gate stops gold (half the rows are quarantined): silver is what counts
    got = {(f, n): (rules, amounts) for f, n, rules, *amounts in query(wh, """
        SELECT source_file, source_row_number, failed_rules, billed_amount::VARCHAR, allowed_amount::VARCHAR,
               paid_amount::VARCHAR FROM silver.silver_claim_lines_validated""")}
    assert set(got) == set(expected)
    for key, parsed in expected.items():
        rules, amounts = got[key]
        if parsed is None:
            assert rules == ["invalid_amount"], (key, rules, amounts)
            assert None in amounts, (key, amounts)
        else:
            assert (rules, tuple(amounts)) == ([], parsed), key


# (cells to set on a clean paid northwind line, the rules silver must name)
RULE_CASES = [
    ({"status": "denied", "billed_amount": "200.00", "allowed_amount": "100.00", "paid_amount": "50.00",
      "paid_date": ""}, ["paid_amount_on_unpaid_status"]),
    ({"status": "pending", "paid_amount": "10.00", "paid_date": ""}, ["paid_amount_on_unpaid_status"]),
    ({"status": "denied", "paid_amount": "0.00", "paid_date": ""}, []),
    ({"status": "reversed", "billed_amount": "100.00", "allowed_amount": "80.00", "paid_amount": "70.00"},
     ["amounts_out_of_order"]),  # a reversal with positive amounts would add money
    ({"status": "reversed", "billed_amount": "-100.00", "allowed_amount": "-80.00", "paid_amount": "-9999.00"},
     ["amounts_out_of_order"]),
    ({"status": "reversed", "billed_amount": "-100.00", "allowed_amount": "-80.00", "paid_amount": "-70.00"}, []),
    ({"line_number": "1.5"}, ["invalid_claim_line_number"]),  # a cast alone reads 2
    ({"line_number": "1e2"}, ["invalid_claim_line_number"]),
    ({"line_number": "0x10"}, ["invalid_claim_line_number"]),
    ({"service_date": "24-01-05", "paid_date": ""}, ["invalid_service_date"]),  # strptime's %Y reads the year 24
    ({"service_date": "2024-1-5", "paid_date": "2024-02-01"}, []),
    ({"paid_date": "24-02-01"}, ["invalid_paid_date"]),
    ({"service_date": "1850-03-01", "paid_date": "", "birth_date": ""}, ["invalid_service_date"]),
    ({"paid_date": "2999-01-01"}, ["future_paid_date"]),
]


def test_impossible_lines_are_quarantined_by_the_rule_they_break(tmp_path):
    """Statuses and amounts that contradict each other, line numbers and dates a cast or strptime would
    guess at, and ids that differ only by a tab: each is quarantined naming its rule, or is the same value."""
    from medflow_assets.synth.generator import generate

    generate(tmp_path / "gen", 400, seed=71, defect_rate=0.0, payers=["northwind"], manifest_dir=tmp_path / "m")
    [made] = (tmp_path / "gen" / "northwind").iterdir()
    header, *rows = list(csv.reader(made.open(newline="")))
    col = {name: i for i, name in enumerate(header)}
    paid = [r for r in rows if r[col["status"]] == "paid"]
    out = []
    for (cells, _), row in zip(RULE_CASES, paid):
        row = list(row)
        for name, value in cells.items():
            row[col[name]] = value
        out.append(row)
    # the same claim line twice, the first copy's id with a tab after it; a member id with a tab around it
    tabbed, plain, member, same_member = list(paid[20]), list(paid[20]), list(paid[21]), list(paid[22])
    tabbed[col["claim_id"]] += "\t"
    member[col["member_id"]] = "\t" + paid[21][col["member_id"]] + "\t"
    same_member[col["member_id"]] = paid[21][col["member_id"]].lower()  # one claim: one member, written two ways
    out += [tabbed, plain, member, same_member]
    # one claim whose lines name two members (and a third line naming none): every line of it is quarantined
    base = paid[-1]
    other = next(r[col["member_id"]] for r in paid if r[col["member_id"]] != base[col["member_id"]])
    mixed = [list(base), list(base), list(base)]
    mixed[1][col["line_number"]], mixed[1][col["member_id"]] = "98", other
    mixed[2][col["line_number"]], mixed[2][col["member_id"]] = "99", ""
    out += mixed
    landing = tmp_path / "landing"
    (landing / "northwind").mkdir(parents=True)
    with (landing / "northwind" / "northwind_rules.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *out])
    wh = tmp_path / "wh.duckdb"
    materialize_graph(landing, wh)  # the gate stops gold (over 10% quarantined): silver is what counts
    got = dict(query(wh, "SELECT source_row_number, failed_rules FROM silver.silver_claim_lines_validated"))
    assert {n: got[n] for n in range(1, len(RULE_CASES) + 1)} == {
        i + 1: rules for i, (_, rules) in enumerate(RULE_CASES)}
    n = len(RULE_CASES)
    assert (got[n + 1], got[n + 2]) == ([], ["duplicate_line"])
    assert query(wh, "SELECT claim_id FROM silver.silver_claim_lines WHERE source_row_number = ?", [n + 1]) == [
        (plain[col["claim_id"]],)]
    assert got[n + 3] == got[n + 4] == []
    assert [got[n + 5], got[n + 6], got[n + 7]] == [
        ["claim_member_mismatch"], ["claim_member_mismatch"], ["missing_member_id", "claim_member_mismatch"]]
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE claim_id = ?",
                 [base[col["claim_id"]]]) == [(0,)]
    assert query(wh, """SELECT rows_failed FROM silver.silver_data_quality_log
                        WHERE rule_id = 'claim_member_mismatch'""") == [(3,)]
    [(keys, in_members)] = query(wh, f"""
        SELECT count(DISTINCT v.member_key), count(DISTINCT m.member_key) FROM silver.silver_claim_lines_validated v
        JOIN silver.silver_members m USING (payer, member_key) WHERE v.source_row_number IN ({n + 3}, {n + 4})""")
    assert (keys, in_members) == (1, 1)  # the tabbed and the lower-case member id are the same member
    # the pandas peer (benchmarks/) applies the same rules, row by row
    from benchmarks.pandas_peer import RULES, validated
    from medflow_assets.landing.contracts import load_contracts
    from medflow_assets.settings import CONTRACTS_DIR, DEV_PII_KEY

    peer = validated(landing, load_contracts(CONTRACTS_DIR), DEV_PII_KEY)
    assert {int(r["source_row_number"]): [x for x in RULES if r[x]] for _, r in peer.iterrows()} == got
    assert peer.loc[peer["source_row_number"].isin([n + 3, n + 4]), "member_key"].nunique() == 1
