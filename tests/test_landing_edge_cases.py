"""Landed files that used to break a run, corrupt lineage or vanish without a word (found by an adversarial
review): unusable headers, compressed files, files MedFlow does not read, deleted files, file names that are
glob patterns, and rows whose values only the blocking silver schema used to catch."""

import csv
import gzip
import io
import os

import dagster as dg

from medflow_assets.synth.generator import generate
from tests.helpers import check_result, copy_sample, materialize_graph, query, unconserved_files

NW = "northwind/northwind_claims_001.csv"



def _rows(path):
    return list(csv.reader(path.open(newline="")))


def _write(path, rows, line_end=""):
    buf = io.StringIO()
    csv.writer(buf, lineterminator=line_end + "\n").writerows(rows)
    path.write_text(buf.getvalue())



def test_unusable_headers_and_compressed_files_are_rejected_by_name_and_the_rest_reaches_gold(tmp_path):
    landing = copy_sample(tmp_path / "landing")
    rows = _rows(landing / NW)
    header = rows[0]
    # a delimiter at the end of every line: a column without a name
    _write(landing / "northwind" / "northwind_trailing.csv", [r + [""] for r in rows[:20]])
    # the same column twice (names compare ignoring case, as in DuckDB)
    _write(landing / "northwind" / "northwind_twice.csv",
           [header + ["DEPARTMENT"]] + [r + ["x"] for r in rows[1:20]])
    # two extra cells with the same value (a data row's, say): the value is not repeated in any message
    _write(landing / "northwind" / "northwind_twice_extra.csv",
           [header + ["Zebulon 999-88-7777", "zebulon 999-88-7777"]] + [r + ["x", "y"] for r in rows[1:20]])
    (landing / "northwind" / "northwind_zipped.csv").write_bytes(gzip.compress((landing / NW).read_bytes()))
    # no header: the first line is patient data, and no trace of it may be kept
    _write(landing / "northwind" / "northwind_headless.csv", rows[1:20])
    # lines ended by a carriage return alone (old Mac): the header line cannot be read as CSV
    _write(landing / "northwind" / "northwind_cr.csv", rows[:20])
    (landing / "northwind" / "northwind_cr.csv").write_bytes(
        (landing / "northwind" / "northwind_cr.csv").read_bytes().replace(b"\n", b"\r"))
    # no header, and a first field longer than Python's csv module reads
    _write(landing / "northwind" / "northwind_headless_long.csv",
           [[*rows[1][:12], "x" * 200_000, *rows[1][13:]], *rows[2:20]])
    # the header line joined with the file's only record (no line break after the header): every contract
    # column is named, and DuckDB would read a header and no rows; the record is not lost without a word
    _write(landing / "northwind" / "northwind_joined.csv", [header + rows[7]])
    first_row = rows[1]
    wh = tmp_path / "wh.duckdb"

    result = materialize_graph(landing, wh)

    check = check_result(result, "files_match_payer_contracts")
    assert not check.passed
    n = len(header) + 1
    assert (f"northwind/northwind_trailing.csv: header column {n} of {n} has no name (a delimiter at the end of "
            "the header line?); every column needs its own name") in check.description
    assert (f"northwind/northwind_twice.csv: header names column 'DEPARTMENT' twice (columns "
            f"{header.index('department') + 1} and {n}; names are compared ignoring case)") in check.description
    assert (f"northwind/northwind_twice_extra.csv: header names a column that is not in the contract twice "
            f"(columns {n} and {n + 1}; names are compared ignoring case)") in check.description
    assert "Zebulon" not in str(result.all_events) and "999-88-7777" not in str(result.all_events)
    assert "northwind/northwind_zipped.csv: is gzip-compressed" in check.description
    joined_at = len(header) + next(i for i, v in enumerate(rows[7], start=1) if v[:1].isdigit())
    assert (f"northwind/northwind_joined.csv: header column {joined_at} of {2 * len(header)} is a number or a "
            "date, not a column name (a data row on the header line, with no line break after the header?). "
            "Fix the header and land it again.") in check.description
    assert "northwind/northwind_headless.csv: columns do not match the northwind contract" in check.description
    assert ("northwind/northwind_cr.csv: its header line cannot be read as ','-delimited CSV (new-line "
            "character seen in unquoted field") in check.description
    assert ("northwind/northwind_headless_long.csv: its header line cannot be read as ','-delimited CSV (field "
            "larger than field limit") in check.description
    assert check.metadata["files_rejected"].value == 8
    registry = query(wh, "SELECT source_file, status, header_json FROM landing.landing_file_registry "
                         "WHERE source_file <> ALL(['bluepeak/bluepeak_claims_001.csv', "
                         "'cascade/cascade_claims_001.txt', ?]) ORDER BY 1", [NW])
    assert [(f, s) for f, s, _ in registry] == [
        ("northwind/northwind_cr.csv", "rejected"), ("northwind/northwind_headless.csv", "rejected"),
        ("northwind/northwind_headless_long.csv", "rejected"), ("northwind/northwind_joined.csv", "rejected"),
        ("northwind/northwind_trailing.csv", "rejected"),
        ("northwind/northwind_twice.csv", "rejected"), ("northwind/northwind_twice_extra.csv", "rejected"),
        ("northwind/northwind_zipped.csv", "rejected")]
    assert [h for _, _, h in registry] == [None] * 8  # a rejected file's first line is not kept
    registry_text = str(query(wh, "SELECT * FROM landing.landing_file_registry"))
    for row in (first_row, rows[7]):
        for value in (row[header.index("first_name")], row[header.index("ssn")], row[header.index("email")],
                      row[header.index("member_id")]):
            assert value not in registry_text
    # the run went on: every accepted file reached silver and gold, and nothing of the rejected ones
    assert result.success
    assert query(wh, "SELECT count(DISTINCT source_file) FROM silver.silver_claim_lines") == [(3,)]
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines WHERE source_file LIKE 'northwind/%' "
                     "AND source_file <> ?", [NW]) == [(0,)]
    assert {r[0] for r in query(wh, "SELECT DISTINCT payer FROM gold.claims_monthly_summary")} == {
        "northwind", "bluepeak", "cascade"}
    assert unconserved_files(wh) == []


def test_files_medflow_does_not_read_are_named_in_a_warning(tmp_path):
    landing = copy_sample(tmp_path / "landing")
    (landing / "claims_for_nobody.csv").write_text("a,b\n1,2\n")
    (landing / "northwind" / "2025").mkdir()
    (landing / "northwind" / "2025" / "northwind_claims_009.csv").write_bytes((landing / NW).read_bytes())
    (landing / "northwind" / "2025" / "again").symlink_to(landing / "northwind")  # a link loop: not followed
    (landing / "northwind" / "northwind_claims_010.CSV").write_bytes((landing / NW).read_bytes())
    (landing / "northwind" / ".DS_Store").write_text("finder")        # hidden: neither read nor reported
    (landing / "_archive").mkdir()
    (landing / "_archive" / "old.csv").write_text("a\n1\n")              # a folder starting with _: the same
    # neither a file nor a folder: a link to a file or payer folder that is gone, a named pipe
    (landing / "northwind" / "northwind_claims_011.csv").symlink_to(tmp_path / "gone.csv")
    (landing / "ghostpayer").symlink_to(tmp_path / "gone_folder")
    os.mkfifo(landing / "northwind" / "northwind_pipe.csv")
    os.symlink(tmp_path / "gone.csv", os.fsencode(landing / "northwind") + b"/northwind_\xe9t\xe9.csv")  # Latin-1
    wh = tmp_path / "wh.duckdb"

    result = materialize_graph(landing, wh)

    assert result.success
    check = check_result(result, "every_landed_file_read")
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    odd = "not a regular file (a broken symbolic link, a pipe or a device)"
    assert check.description == (
        "claims_for_nobody.csv: not in a payer folder (files are read from <landing>/<payer>/<file>); "
        f"ghostpayer: {odd}; "
        "northwind/2025/northwind_claims_009.csv: in a subfolder of northwind/ (only files directly in a payer "
        f"folder are read); northwind/northwind_\\xe9t\\xe9.csv: {odd}; "
        "northwind/northwind_claims_010.CSV: name does not match the northwind contract's "
        "file_glob '*.csv' (rename the file, or change file_glob in the contract); "
        f"northwind/northwind_claims_011.csv: {odd}; northwind/northwind_pipe.csv: {odd}")
    assert check.metadata["files_not_read"].value == 7
    assert query(wh, "SELECT count(*) FROM landing.landing_file_registry") == [(3,)]


def test_a_deleted_file_keeps_its_rows_and_later_runs_still_succeed(tmp_path):
    landing = copy_sample(tmp_path / "landing")
    wh, instance = tmp_path / "wh.duckdb", dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance).success
    gone = "cascade/cascade_claims_001.txt"
    kept = query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines WHERE source_file = ?", [gone])[0][0]
    silver_before = query(wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE source_file = ?", [gone])
    gold_before = query(wh, "SELECT payer, sum(lines), sum(paid_amount) FROM gold.claims_monthly_summary "
                            "GROUP BY 1 ORDER BY 1")
    original = landing / gone
    saved = original.read_bytes()
    original.unlink()
    # the file's partition is still known, so a run over every partition asks for it
    rows = _rows(landing / NW)
    _write(landing / NW, rows[:1001])  # and another file changes in the same run

    result = materialize_graph(landing, wh, instance=instance,
                               partitions=["bluepeak/bluepeak_claims_001.csv", gone, NW])

    assert result.success
    assert f"{gone} is no longer in" in check_result(result, "files_match_payer_contracts").description
    assert query(wh, "SELECT status, error LIKE '%no longer in%kept' FROM landing.landing_file_registry "
                     "WHERE source_file = ?", [gone]) == [("missing", True)]
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines WHERE source_file = ?", [gone]) == [(kept,)]
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE source_file = ?", [gone]) == silver_before
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines WHERE source_file = ?", [NW]) == [(1000,)]
    assert unconserved_files(wh) == []
    gold_after = query(wh, "SELECT payer, sum(lines), sum(paid_amount) FROM gold.claims_monthly_summary "
                           "GROUP BY 1 ORDER BY 1")
    assert [g for g in gold_after if g[0] != "northwind"] == [g for g in gold_before if g[0] != "northwind"]

    # its rows are still loaded, so a copy of it under a new name is still a copy
    (landing / "cascade" / "cascade_claims_001_again.txt").write_bytes(saved)
    result = materialize_graph(landing, wh, instance=instance, partitions=["cascade/cascade_claims_001_again.txt"])
    assert result.success
    assert check_result(result, "no_file_landed_twice").description == (
        f"cascade/cascade_claims_001_again.txt is a copy of {gone} (not loaded)")
    (landing / "cascade" / "cascade_claims_001_again.txt").unlink()

    # put back, it is accepted again and its rows are the same
    original.write_bytes(saved)
    assert materialize_graph(landing, wh, instance=instance, partitions=[gone]).success
    assert query(wh, "SELECT status FROM landing.landing_file_registry WHERE source_file = ?", [gone]) == [
        ("accepted",)]
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines WHERE source_file = ?", [gone]) == [(kept,)]


def test_file_names_that_are_glob_patterns_are_read_as_exactly_that_file(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, 300, seed=41, defect_rate=0.0, payers=["northwind"], manifest_dir=tmp_path / "m")
    [plain] = (landing / "northwind").iterdir()
    rows = _rows(plain)
    # names DuckDB would expand: each would also read the plain file (and [v] would read none)
    names = {"northwind_claims_00?.csv": rows[1:4], "northwind_claims_*.csv": rows[4:6],
             "northwind_[v2].csv": rows[6:7]}
    lines = [r for r in rows[1:] if r not in rows[1:7]]
    _write(plain, [rows[0], *lines])
    for name, part in names.items():
        _write(landing / "northwind" / name, [rows[0], *part])
    wh = tmp_path / "wh.duckdb"

    result = materialize_graph(landing, wh)

    assert result.success
    counts = dict(query(wh, "SELECT source_file, count(*) FROM bronze.bronze_claim_lines GROUP BY 1"))
    assert counts == {f"northwind/{plain.name}": len(lines), "northwind/northwind_claims_00?.csv": 3,
                      "northwind/northwind_claims_*.csv": 2, "northwind/northwind_[v2].csv": 1}
    assert query(wh, "SELECT count(*) FROM silver.silver_claims_quarantine") == [(0,)]
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines") == [(len(rows) - 1,)]


def test_values_the_silver_schema_forbids_are_quarantined_with_a_rule_not_left_to_block_gold(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, 400, seed=43, defect_rate=0.0, payers=["northwind"], manifest_dir=tmp_path / "m")
    [path] = (landing / "northwind").iterdir()
    rows = _rows(path)
    col = {name: i for i, name in enumerate(rows[0])}
    paid = [i for i, r in enumerate(rows) if i and r[col["paid_date"]] and r[col["status"]] == "paid"]
    pending = [i for i, r in enumerate(rows) if i and r[col["status"]] == "pending"]
    edits = {
        paid[0]: {"department": "OB/GYN"},                    # normalized, kept: ob_gyn
        paid[1]: {"department": "Pédiatrics"},                # accents stripped, kept: pediatrics
        paid[2]: {"department": "3rd floor"},                 # not a department of the seed: invalid_department
        paid[3]: {"paid_date": "2001-01-01"},                 # before the service: paid_before_service
        paid[4]: {"birth_date": "1890-05-05"},                # invalid_birth_date
        paid[5]: {"birth_date": "2099-01-01"},                # born after the service: invalid_birth_date
        paid[6]: {"denial_code": "N/A"},                      # invalid_denial_reason_code
        paid[7]: {"paid_date": "soon"},                       # invalid_paid_date
        paid[8]: {"birth_date": "1990-02-31"},                # invalid_birth_date (does not parse)
        paid[9]: {"line_number": "0"},                        # invalid_claim_line_number
        paid[10]: {"service_date": "2099-01-01", "paid_date": "2099-01-05",
                   "birth_date": "2050-01-01"},               # future_service_date, future_paid_date
        pending[0]: {"billed_amount": "-1.00", "allowed_amount": "-2.00",
                     "paid_amount": "-3.00"},                 # negative_amount (the order paid <= allowed <= billed
                                                              # holds), and a pending line pays nothing
        paid[11]: {"department": "Jane Roe 222-33-4444"},     # free text: invalid_department, kept out of gold
    }
    for i, change in edits.items():
        for field, value in change.items():
            rows[i][col[field]] = value
    _write(path, rows)
    wh = tmp_path / "wh.duckdb"
    source = f"northwind/{path.name}"

    result = materialize_graph(landing, wh)

    assert result.success, "one bad row each must not stop gold"
    assert check_result(result, "pandera_SilverClaimLines").passed
    quarantined = dict(query(wh, "SELECT source_row_number, failed_rules FROM silver.silver_claims_quarantine "
                                 "WHERE source_file = ?", [source]))
    assert quarantined == {paid[2]: ["invalid_department"], paid[3]: ["paid_before_service"],
                           paid[4]: ["invalid_birth_date"], paid[5]: ["invalid_birth_date"],
                           paid[6]: ["invalid_denial_reason_code"], paid[7]: ["invalid_paid_date"],
                           paid[8]: ["invalid_birth_date"], paid[9]: ["invalid_claim_line_number"],
                           paid[10]: ["future_service_date", "future_paid_date"],
                           pending[0]: ["paid_amount_on_unpaid_status", "negative_amount"],
                           paid[11]: ["invalid_department"]}
    assert dict(query(wh, "SELECT source_row_number, department FROM silver.silver_claim_lines "
                          "WHERE source_row_number IN (?, ?)", [paid[0], paid[1]])) == {
        paid[0]: "ob_gyn", paid[1]: "pediatrics"}
    log = dict(query(wh, "SELECT rule_id, rows_failed FROM silver.silver_data_quality_log WHERE rows_failed > 0"))
    assert log == {"invalid_department": 2, "paid_before_service": 1, "invalid_birth_date": 3,
                   "invalid_denial_reason_code": 1, "invalid_paid_date": 1, "invalid_claim_line_number": 1,
                   "future_service_date": 1, "future_paid_date": 1, "negative_amount": 1,
                   "paid_amount_on_unpaid_status": 1}
    assert query(wh, "SELECT sum(lines) FROM gold.claims_monthly_summary") == [(len(rows) - 1 - 11,)]
    assert query(wh, "SELECT count(*) FROM gold.department_revenue WHERE department NOT IN "
                     "(SELECT department FROM reference.departments)") == [(0,)]
    assert unconserved_files(wh) == []
    # a member version with an impossible birth date keeps no birth year (the members schema passes)
    assert check_result(result, "pandera_SilverMembers").passed
    assert query(wh, "SELECT count(*) FROM silver.silver_members WHERE birth_year < 1900 OR birth_year > 2030") == [
        (0,)]
