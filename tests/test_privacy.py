"""No clear PII planted by the generator appears in silver, gold, the run's logs or asset metadata."""

import hmac
import json
import logging
import re
import shutil

import dagster as dg
import duckdb
import ibis
import pytest

from medflow_assets.quality.checks import BRONZE_SILVER_CHECKS
from medflow_assets.settings import DBT_PROJECT_DIR
from medflow_assets.transform.connection_plugin import hmac_pads
from tests.helpers import check_result, copy_sample, materialize_graph, query, table_names

TOKEN = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+|\(\d{3}\) \d{3}-\d{4}|\d{3}-\d{3}-\d{4}|\d{3}-\d{2}-\d{4}"
                   r"|\d{4}-\d{2}-\d{2}|\d{2}/\d{2}/\d{4}|\d+|[A-Za-z]+")


def planted_values(manifest_dir) -> dict[str, set[str]]:
    """Every clear PII value in every format the generator wrote (lower-cased)."""
    con = duckdb.connect()
    t = f"read_parquet('{manifest_dir}/truth_*.parquet')"
    names = {v for (v,) in con.execute(f"SELECT DISTINCT first_name FROM {t} UNION SELECT last_name FROM {t}").fetchall()}
    exact = set()
    for (email, phone, ssn, dob, mid) in con.execute(
            f"SELECT DISTINCT email, phone10, ssn9, birth_date, member_id FROM {t}").fetchall():
        exact |= {email, phone, f"{phone[:3]}-{phone[3:6]}-{phone[6:]}", f"({phone[:3]}) {phone[3:6]}-{phone[6:]}",
                  ssn, f"{ssn[:3]}-{ssn[3:5]}-{ssn[5:]}", dob.isoformat(), dob.strftime("%m/%d/%Y"),
                  dob.strftime("%Y%m%d"), mid}
    return {"names": {n.lower() for n in names}, "exact": {e.lower() for e in exact}}


def leaks_in_text(text: str, planted) -> set[str]:
    tokens = {t.lower() for t in TOKEN.findall(text)}
    return (tokens & planted["names"]) | (tokens & planted["exact"])


@pytest.fixture(scope="module")
def planted(generated_100k):
    p = planted_values(generated_100k["manifest"])
    assert len(p["names"]) >= 50 and len(p["exact"]) > 10_000
    return p


def test_bronze_does_hold_the_planted_values(generated_100k, planted):
    """Guard against a vacuous scan: the same scan finds the values where they are allowed (bronze)."""
    wh = generated_100k["warehouse"]
    sample = query(wh, "SELECT member_email, member_ssn, member_first_name FROM bronze.bronze_claim_lines "
                       "WHERE payer = 'northwind' LIMIT 50")
    found = set().union(*(leaks_in_text(" ".join(r), planted) for r in sample))
    assert len(found) >= 50


def test_no_clear_pii_in_silver_or_gold_tables(generated_100k, planted):
    wh = generated_100k["warehouse"]
    tables = table_names(wh, ("silver", "gold"))
    assert "silver.silver_claim_lines" in tables and "gold.provider_performance" in tables
    con = duckdb.connect(str(wh), read_only=True)
    con.execute("CREATE TEMP TABLE names AS SELECT unnest(?) AS v", [sorted(planted["names"])])
    con.execute("CREATE TEMP TABLE exact AS SELECT unnest(?) AS v", [sorted(planted["exact"])])
    leaks = []
    for table in tables:
        schema, name = table.split(".")
        cols = [c for (c,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "AND data_type IN ('VARCHAR', 'VARCHAR[]')", [schema, name]).fetchall()]
        for col in cols:
            vals = f"(SELECT DISTINCT lower(CAST({col} AS VARCHAR)) AS x FROM {table} WHERE {col} IS NOT NULL)"
            n = con.execute(f"""SELECT count(*) FROM {vals} d
                                WHERE x IN (SELECT v FROM exact)
                                   OR EXISTS (SELECT 1 FROM names WHERE contains(d.x, names.v))""").fetchone()[0]
            if n:
                leaks.append((table, col, n))
    con.close()
    assert leaks == []


def test_no_clear_pii_in_run_logs_or_metadata(generated_100k, planted):
    result = generated_100k["result"]
    records = generated_100k["instance"].all_logs(result.run_id)
    assert len(records) > 50
    text = "\n".join(f"{r.user_message}\n{r.dagster_event!r}" for r in records)
    assert "dagster/row_count" in text  # metadata is part of what was scanned
    assert leaks_in_text(text, planted) == set()



def test_failing_rows_are_named_by_lineage_or_grain_never_by_pii(generated_100k, planted, tmp_path):
    """Break a rule on rows of every bronze and silver table (in a copy of the warehouse): each check fails,
    and its failing keys and description carry no planted value."""
    wh = tmp_path / "broken.duckdb"
    shutil.copy(generated_100k["warehouse"], wh)
    with duckdb.connect(str(wh)) as con:
        con.execute("UPDATE bronze.bronze_claim_lines_shard_0 SET payer = upper(member_email) "
                    "WHERE source_row_number <= 5")
        con.execute("UPDATE silver.silver_claim_lines_validated SET department = '#' || member_key, "
                    "claim_status = 'lost' WHERE source_row_number <= 5")
        con.execute("UPDATE silver.silver_claim_lines_validated SET failed_rules = NULL "
                    "WHERE source_row_number BETWEEN 6 AND 8")
        con.execute("UPDATE silver.silver_members SET gender = 'X' WHERE member_key IN "
                    "(SELECT member_key FROM silver.silver_members LIMIT 5)")
        con.execute("UPDATE silver.silver_data_quality_log SET rows_failed = rows_checked + 1 "
                    "WHERE rule_id = 'invalid_npi'")
        ibis_con = ibis.duckdb.from_connection(con)
        results = {c.name: c.run(ibis_con, logging.getLogger("test")) for c in BRONZE_SILVER_CHECKS}
    failed = {name for name, r in results.items() if not r.passed}
    assert {"pandera_BronzeClaimLines", "pandera_SilverClaimLinesValidated", "pandera_SilverClaimLines",
            "pandera_SilverMembers", "pandera_SilverDataQualityLog"} <= failed
    shown = "\n".join(f"{r.description}\n{r.metadata}" for r in results.values())
    assert "failing_keys" in shown and "source_row_number=1" in shown and "claim_id=" in shown
    # a failing claim line is named with its file too
    [silver] = [r for name, r in results.items() if name == "pandera_SilverClaimLines"]
    assert "source_file=" in str(silver.metadata["failing_keys"])
    assert leaks_in_text(shown, planted) == set()

def test_no_clear_pii_in_dbt_logs_and_artifacts(generated_100k, planted):
    targets = sorted(p.name.split("-")[0] for p in generated_100k["dbt_targets"].iterdir())
    assert targets == ["medflow_dbt_bronze_silver", "medflow_dbt_gold"]  # the run's two dbt invocations
    files = [p for p in generated_100k["dbt_targets"].rglob("*") if p.is_file()
             and p.suffix in (".log", ".json", ".sql")]
    assert {"dbt.log", "run_results.json"} <= {p.name for p in files}
    leaks = set()
    for p in files:
        leaks |= leaks_in_text(p.read_text(errors="replace"), planted)
    assert leaks == set()


def _run_with_broken_file(tmp_path, landing, path, lines):
    """Write `lines` as the landed file `path`, run the whole graph; the run succeeds and the
    landed_files_parsed check fails. Returns (warehouse, result, check)."""
    path.write_text("\n".join(lines) + "\n")
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh)
    assert result.success
    check = check_result(result, "landed_files_parsed")
    assert not check.passed
    return wh, result, check


def test_malformed_csv_file_is_rejected_naming_file_and_line_without_quoting_it_and_others_flow(tmp_path, capsys):
    """DuckDB's CSV error repeats the offending line (patient data). The file is rejected whole, named with its
    line in the registry and the landed_files_parsed check; the run's output, dbt's log and run_results.json carry
    neither the line nor its values; the run's other files reach silver and gold."""
    landing = copy_sample(tmp_path / "landing")
    f = landing / "northwind" / "northwind_claims_001.csv"
    lines = f.read_text().splitlines()
    lines[5] += ',EXTRA,"Zebulon Quartermaine 999-88-7777"'   # line 6 of the file: one column too many
    secrets = [lines[5].split(",")[3], lines[5].split(",")[5], "Zebulon", "999-88-7777"]  # first name, email
    wh, result, check = _run_with_broken_file(tmp_path, landing, f, lines)
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.description.startswith("northwind/northwind_claims_001.csv is not valid CSV at line 6 "
                                        "(Expected Number of Columns: 23 Found: 24)")
    assert query(wh, "SELECT source_file, status, error FROM landing.landing_file_registry "
                     "WHERE status <> 'accepted'") == [
        ("northwind/northwind_claims_001.csv", "rejected", check.description)]
    out = capsys.readouterr()
    assert "CSV Error on Line: 6" in out.out                    # dbt's report of the first attempt, scrubbed
    assert "Rejected landed file northwind/northwind_claims_001.csv is not valid CSV at line 6" in out.err + out.out
    folders = sorted((DBT_PROJECT_DIR / "target").glob("medflow_dbt_bronze_silver-*"), key=lambda p: p.stat().st_mtime)
    failed_attempt = next(p for p in reversed(folders) if "CSV Error" in (p / "dbt.log").read_text())
    texts = [check.description, out.out, out.err, (failed_attempt / "dbt.log").read_text(),
             (failed_attempt / "run_results.json").read_text()]
    assert "Original Line: (not shown" in texts[3]
    for text in texts:
        for secret in secrets:
            assert secret not in text, secret
    # none of the file's rows are anywhere; the two other files went through silver to gold
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines "
                     "WHERE source_file = 'northwind/northwind_claims_001.csv'") == [(0,)]
    assert query(wh, "SELECT DISTINCT source_file FROM silver.silver_claim_lines_validated ORDER BY 1") == [
        ("bluepeak/bluepeak_claims_001.csv",), ("cascade/cascade_claims_001.txt",)]
    assert query(wh, "SELECT DISTINCT payer FROM gold.claims_monthly_summary ORDER BY 1") == [
        ("bluepeak",), ("cascade",)]

    # a corrected file under the same name (the bad line taken out): landing accepts it again and its run loads it
    f.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    result = materialize_graph(landing, wh, partitions=["northwind/northwind_claims_001.csv"])
    assert result.success
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "landed_files_parsed"]
    assert check.passed
    assert query(wh, "SELECT status FROM landing.landing_file_registry "
                     "WHERE source_file = 'northwind/northwind_claims_001.csv'") == [("accepted",)]
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines "
                     "WHERE source_file = 'northwind/northwind_claims_001.csv'") == [(len(lines) - 2,)]


def _duckdb_csv_error(tmp_path, text: str) -> str:
    f = tmp_path / "claims.csv"
    f.write_text(text)
    with pytest.raises(duckdb.Error) as err:
        duckdb.sql(f"SELECT * FROM read_csv('{f}', delim=',', header=true, auto_detect=false, quote='\"', "
                   "escape='\"', columns={'a': 'VARCHAR', 'b': 'VARCHAR', 'c': 'VARCHAR'})").fetchall()
    return str(err.value)


@pytest.mark.parametrize("text, problem", [
    # a quoted field holding a newline: DuckDB quotes the record over two lines
    ('a,b,c\n1,"Zebulon\nQuartermaine 999-88-7777",6,EXTRA\n2,x,y\n', "Expected Number of Columns: 3 Found: 4"),
    # a quote never closed: DuckDB quotes everything to the end of the file
    ('a,b,c\n1,"Zebulon,2\n3,Quartermaine 999-88-7777,9\n4,k,l\n', "Value with unterminated quote found."),
    ('a,b,c\n1,Zebulon,Quartermaine,999-88-7777\n', "Expected Number of Columns: 3 Found: 4"),
    # the record holds lines that look like DuckDB's own text after it (hints, reader options)
    ('a,b,c\n1,"Zebulon\nPossible fixes:\n  file = Quartermaine 999-88-7777\n  delimiter = x",6,EXTRA\n',
     "Expected Number of Columns: 3 Found: 4"),
    ('a,b,c\n1,"Zebulon,2\nfile = Quartermaine 999-88-7777\n4,k,l\n', "Value with unterminated quote found."),
])
def test_csv_errors_are_scrubbed_of_every_line_of_the_record(tmp_path, text, problem):
    from medflow_assets.transform.assets import malformed_landed_files
    from medflow_assets.transform.dbt_core import scrub

    raw = _duckdb_csv_error(tmp_path, text)
    assert "Zebulon" in raw and "999-88-7777" in raw      # what DuckDB says, before scrubbing
    clean = scrub(raw)
    for secret in ("Zebulon", "Quartermaine", "999-88-7777"):
        assert secret not in clean
    assert "Original Line: (not shown" in clean and problem in clean and "delimiter = , (Set By User)" in clean
    ((location, reason),) = malformed_landed_files([clean])
    assert location == str(tmp_path / "claims.csv")
    assert reason == (f"{location} is not valid CSV at line 2 ({problem}); the line itself is not shown "
                      "(it holds patient data)")


def test_a_landed_file_with_a_quote_never_closed_is_rejected_without_quoting_the_rest_of_it(tmp_path, capsys):
    landing = copy_sample(tmp_path / "landing")
    f = landing / "cascade" / "cascade_claims_001.txt"
    lines = f.read_text().splitlines()
    delimiter = "|"
    fields = lines[5].split(delimiter)
    secrets = [v for v in fields if len(v) > 6][:3] + [lines[7].split(delimiter)[3]]  # values after the quote too
    fields[3] = '"' + fields[3]                                                       # opened, never closed
    lines[5] = delimiter.join(fields)
    # a later line that starts like DuckDB's reader options (it is quoted as part of the record)
    later = lines[9].split(delimiter)
    secrets.append(later[3])
    lines[9] = delimiter.join([f"file = {later[0]}", *later[1:]])
    wh, _, check = _run_with_broken_file(tmp_path, landing, f, lines)
    assert check.description.startswith("cascade/cascade_claims_001.txt is not valid CSV at line ")
    out = capsys.readouterr()
    folders = sorted((DBT_PROJECT_DIR / "target").glob("medflow_dbt_bronze_silver-*"), key=lambda p: p.stat().st_mtime)
    failed_attempt = next(p for p in reversed(folders) if "CSV Error" in (p / "dbt.log").read_text())
    registry = query(wh, "SELECT error FROM landing.landing_file_registry WHERE status = 'rejected'")
    assert registry == [(check.description,)]
    texts = [check.description, out.out, out.err, (failed_attempt / "dbt.log").read_text(),
             (failed_attempt / "run_results.json").read_text()]
    for text in texts:
        for secret in secrets:
            assert secret not in text, secret


def test_a_landed_file_duckdb_cannot_parse_at_all_is_rejected_and_the_others_flow(tmp_path, capsys):
    """A carriage return alone inside a line puts DuckDB's CSV parser in an invalid state (an error without a
    line number): that file is rejected by name, the run's other files reach gold."""
    landing = copy_sample(tmp_path / "landing")
    f = landing / "northwind" / "northwind_claims_001.csv"
    lines = f.read_text().splitlines()
    fields = lines[5].split(",")
    secret = fields[3]
    fields[3] = f"Zebulon\r{secret}"
    lines[5] = ",".join(fields)
    wh, _, check = _run_with_broken_file(tmp_path, landing, f, lines)
    assert check.description.startswith("northwind/northwind_claims_001.csv is not valid CSV (DuckDB's CSV parser "
                                        "reached an invalid state")
    assert query(wh, "SELECT source_file FROM landing.landing_file_registry WHERE status = 'rejected'") == [
        ("northwind/northwind_claims_001.csv",)]
    assert query(wh, "SELECT DISTINCT payer FROM gold.claims_monthly_summary ORDER BY 1") == [
        ("bluepeak",), ("cascade",)]
    out = capsys.readouterr()
    assert "Zebulon" not in out.out + out.err + check.description
    assert secret not in out.out + out.err + check.description


def test_header_text_never_reaches_dbt_and_a_rejected_file_keeps_no_header(tmp_path, capsys):
    """Bronze reads a landed file's columns by position: no header cell enters SQL, dbt's artifacts or logs.
    Here one file's header has an extra cell that is a data value (accepted: the registry keeps only the
    contract's column names of a header), and another's header line is joined with its first row (rejected
    at landing: a header cell is a number): neither text is anywhere, and the rejected file's registry row
    keeps no header."""
    landing = copy_sample(tmp_path / "landing")
    extra = landing / "cascade" / "cascade_claims_001.txt"
    lines = extra.read_text().splitlines()
    extra.write_text("\n".join([lines[0] + "|ZZHDR 123-45-6789"] + [line + "|x" for line in lines[1:]]) + "\n")
    joined = landing / "northwind" / "northwind_claims_001.csv"
    lines = joined.read_text().splitlines()
    first_row = lines[1].split(",")
    secrets = ["ZZHDR", "123-45-6789", first_row[3], first_row[5]]  # the extra cell; first name, email
    joined.write_text("\n".join([lines[0] + "," + lines[1]] + lines[2:]) + "\n")
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh)
    assert result.success
    assert query(wh, "SELECT source_file, status, header_json IS NULL FROM landing.landing_file_registry "
                     "WHERE payer IN ('cascade', 'northwind') ORDER BY 1") == [
        ("cascade/cascade_claims_001.txt", "accepted", False), ("northwind/northwind_claims_001.csv", "rejected", True)]
    assert query(wh, "SELECT count(*) > 0 FROM silver.silver_claim_lines WHERE payer = 'cascade'") == [(True,)]
    out = capsys.readouterr()
    texts = {"stdout": out.out, "stderr": out.err,
             "registry": str(query(wh, "SELECT * FROM landing.landing_file_registry"))}
    for folder in (DBT_PROJECT_DIR / "target").glob(f"*-{result.run_id[:8]}-*"):
        for f in folder.rglob("*"):
            if f.is_file() and f.suffix in (".sql", ".json", ".log"):
                texts[str(f)] = f.read_text(errors="replace")
    leaks = {(name, s) for name, text in texts.items() for s in secrets if s in text}
    assert leaks == set()
    assert any("c1" in text for name, text in texts.items() if name.endswith("bronze_claim_lines_shard_0.sql"))


def test_a_registry_that_kept_whole_header_lines_keeps_only_the_contract_names_after_the_next_landing(tmp_path):
    """Registries written before landing kept only the contract's column names hold whole header lines (a
    broken one can hold a data row). The next landing run, whatever its files, nulls every other cell of
    every file's header, and the file still loads (its columns are found where they were)."""
    landing = copy_sample(tmp_path / "landing")
    wh = tmp_path / "wh.duckdb"
    assert materialize_graph(landing, wh).success
    cascade, northwind = "cascade/cascade_claims_001.txt", "northwind/northwind_claims_001.csv"
    (before,) = query(wh, "SELECT header_json FROM landing.landing_file_registry WHERE source_file = ?", [cascade])[0]
    with duckdb.connect(str(wh)) as con:  # as an older MedFlow wrote it: the header line as read, extra cell too
        con.execute("UPDATE landing.landing_file_registry SET header_json = ? WHERE source_file = ?",
                    [json.dumps([*json.loads(before), "ZZOLD 555-12-3456"]), cascade])
    result = materialize_graph(landing, wh, partitions=[northwind])
    assert result.success
    (after,) = query(wh, "SELECT header_json FROM landing.landing_file_registry WHERE source_file = ?", [cascade])[0]
    assert json.loads(after) == [*json.loads(before), None]
    assert "ZZOLD" not in str(query(wh, "SELECT * FROM landing.landing_file_registry"))
    lines = query(wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE source_file = ?", [cascade])
    assert materialize_graph(landing, wh, partitions=[cascade]).success
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE source_file = ?", [cascade]) == lines
    assert lines[0][0] > 0


def test_a_line_shifted_by_an_unquoted_delimiter_is_quarantined_without_showing_the_members_zip(tmp_path):
    """DuckDB reads a line with one delimiter too many and an empty last field as if the delimiter were not
    there (README: the extra column it does not catch): the line's later values move one column, so its
    provider NPI column holds the member's ZIP code. The line is quarantined, and silver does not keep the
    ZIP (it keeps provider_npi only when it has an NPI's form)."""
    landing = copy_sample(tmp_path / "landing")
    path = landing / "northwind" / "northwind_claims_001.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    row = next(i for i, line in enumerate(lines[1:], start=1) if line.endswith(",paid,"))
    cells = lines[row].split(",")
    cells[header.index("zip_code")] = "99501"
    cells[header.index("last_name")] = "Nakamura, Jr."  # unquoted: one comma too many
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    wh = tmp_path / "wh.duckdb"
    assert materialize_graph(landing, wh).success
    quarantined = query(wh, "SELECT * FROM silver.silver_claims_quarantine WHERE source_file = ? "
                            "AND source_row_number = ?", ["northwind/northwind_claims_001.csv", row])
    assert len(quarantined) == 1 and "unknown_status" in str(quarantined)
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines_validated WHERE source_file = ? "
                     "AND source_row_number = ? AND provider_npi IS NULL",
                 ["northwind/northwind_claims_001.csv", row]) == [(1,)]
    for table in table_names(wh, ("silver", "gold")):
        assert "99501" not in str(query(wh, f"SELECT * FROM {table}")), table


def test_safe_harbor_zip3_areas_of_few_people_become_000(tmp_path):
    """Three-digit ZIP areas of 20,000 people or fewer (the HHS list, seeds/safe_harbor_restricted_zip3.csv)
    are reported as 000 in silver claim lines and members; other areas keep their three digits."""
    landing = copy_sample(tmp_path / "landing")
    path = landing / "northwind" / "northwind_claims_001.csv"
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    zip_col, member_col = header.index("zip_code"), header.index("member_id")
    planted = {1: "03601", 2: "89301-1234", 3: "10027"}  # data rows 1-3: restricted, restricted (ZIP+4), allowed
    members = {}
    for row, zip_code in planted.items():
        fields = lines[row].split(",")
        fields[zip_col] = zip_code
        members[row] = fields[member_col]
        lines[row] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(landing, wh)
    assert result.success
    got = dict(query(wh, """SELECT source_row_number, zip3 FROM silver.silver_claim_lines_validated
                            WHERE source_file = 'northwind/northwind_claims_001.csv' AND source_row_number <= 3"""))
    assert got == {1: "000", 2: "000", 3: "100"}
    restricted = [z for (z,) in query(wh, "SELECT zip3 FROM reference.safe_harbor_restricted_zip3")]
    assert len(restricted) == 17 and "036" in restricted and "893" in restricted
    for table in ("silver.silver_claim_lines_validated", "silver.silver_members"):
        assert query(wh, f"SELECT count(*) FROM {table} WHERE zip3 IN (SELECT zip3 FROM "
                         "reference.safe_harbor_restricted_zip3)")[0][0] == 0
    assert query(wh, "SELECT count(*) FROM silver.silver_members WHERE zip3 = '000'")[0][0] >= 1
    # the Pandera schemas hold the same rule, and passed
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["pandera_SilverMembers"].passed and checks["pandera_SilverClaimLines"].passed


def test_the_pii_key_is_never_stored_in_the_warehouse_dbt_artifacts_logs_or_events(tmp_path, capsys):
    key = "privacy-test-key-7f3a9c51"
    ipad, opad = hmac_pads(key)
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(copy_sample(tmp_path / "landing"), wh, pii_key=key)
    assert result.success
    with duckdb.connect(str(wh), read_only=True) as con:
        # the HMAC macro lived only in dbt's sessions (a TEMP macro): not in the warehouse's catalog
        assert con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = 'medflow_pii_hmac'"
                           ).fetchone() == (0,)
        # and the key was used: a member key is the HMAC of its normalized member id under this key
        member_id, member_key = con.execute(
            "SELECT b.member_id, s.member_key FROM bronze.bronze_claim_lines b JOIN "
            "silver.silver_claim_lines_validated s USING (source_file, source_row_number) "
            "WHERE s.member_key IS NOT NULL LIMIT 1").fetchone()
    assert member_key == hmac.new(key.encode(), f"member:{member_id.upper()}".encode(), "sha256").hexdigest()
    targets = [p for p in (DBT_PROJECT_DIR / "target").glob(f"*-{result.run_id[:8]}-*") if p.is_dir()]
    assert len(targets) == 2  # the bronze + silver and the gold invocations
    blobs = {str(wh): wh.read_bytes(), "stdout+stderr": "".join(capsys.readouterr()).encode(),
             "events": "\n".join(str(e) for e in result.all_events).encode()}
    blobs.update({str(f): f.read_bytes() for t in targets for f in t.rglob("*") if f.is_file()})
    for name, blob in blobs.items():
        for secret in (key, ipad, opad):
            assert secret.encode() not in blob, f"{secret[:12]}... found in {name}"
