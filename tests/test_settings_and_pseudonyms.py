import hashlib
import hmac
import logging

import duckdb
import pytest

from medflow_assets.landing.contracts import load_contracts
from medflow_assets.settings import DEV_PII_KEY, SettingsError, announce_key, load_settings
from medflow_assets.transform.connection_plugin import hmac_macro_sql


def test_defaults_need_no_environment():
    s = load_settings({})
    assert s.target == "dev" and s.uses_dev_key
    assert s.warehouse_path.name == "medflow.duckdb" and s.landing_path.name == "landing"


def test_prod_without_key_stops_with_clear_message():
    with pytest.raises(SettingsError) as err:
        load_settings({"MEDFLOW_TARGET": "prod"})
    assert "MEDFLOW_PII_KEY is not set" in str(err.value) and "nothing was read or written" in str(err.value)


def test_prod_refuses_weak_or_development_key():
    with pytest.raises(SettingsError, match="too weak"):
        load_settings({"MEDFLOW_TARGET": "prod", "MEDFLOW_PII_KEY": "short"})
    with pytest.raises(SettingsError, match="too weak"):
        load_settings({"MEDFLOW_TARGET": "prod", "MEDFLOW_PII_KEY": DEV_PII_KEY})
    ok = load_settings({"MEDFLOW_TARGET": "prod", "MEDFLOW_PII_KEY": "x" * 40})
    assert not ok.uses_dev_key


def test_unknown_target_is_refused():
    with pytest.raises(SettingsError, match="MEDFLOW_TARGET='staging'"):
        load_settings({"MEDFLOW_TARGET": "staging"})


@pytest.mark.parametrize("env, message", [
    ({"MEDFLOW_DUCKDB_THREADS": "abc"}, "MEDFLOW_DUCKDB_THREADS='abc' is not a whole number of threads."),
    ({"MEDFLOW_DUCKDB_THREADS": "0"}, "MEDFLOW_DUCKDB_THREADS='0' must be 1 or more."),
    ({"MEDFLOW_DUCKDB_MEMORY_LIMIT": "800MBB"}, "MEDFLOW_DUCKDB_MEMORY_LIMIT='800MBB' is not a memory size DuckDB"),
    ({"MEDFLOW_CHECKS_MEMORY_LIMIT": "lots"}, "MEDFLOW_CHECKS_MEMORY_LIMIT='lots' is not a memory size DuckDB"),
    ({"MEDFLOW_PII_KEY": "k" * 40 + "\n"}, "MEDFLOW_PII_KEY begins or ends with white space"),
    ({"MEDFLOW_TARGET": "prod", "MEDFLOW_PII_KEY": " " * 40}, "MEDFLOW_PII_KEY begins or ends with white space"),
    ({"MEDFLOW_LANDING_URL": "s3://b/p", "MEDFLOW_S3_ENDPOINT_URL": "127.0.0.1:8333"},
     "MEDFLOW_S3_ENDPOINT_URL='127.0.0.1:8333' must start with http:// or https://."),
])
def test_a_bad_setting_is_a_settings_error_naming_the_variable(env, message):
    """Found by a review: these failed late, inside a run, with DuckDB's or boto's words and no variable."""
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert message in str(err.value)


def test_memory_sizes_duckdb_reads_are_accepted():
    for size in ("800MB", "2 gb", "1.5GiB", "1000B"):
        assert load_settings({"MEDFLOW_DUCKDB_MEMORY_LIMIT": size}).memory_limit == size


def test_landing_settle_time_is_seconds_with_a_default():
    assert load_settings({}).landing_settle_seconds == 60.0
    assert load_settings({"MEDFLOW_LANDING_SETTLE_SECONDS": "2.5"}).landing_settle_seconds == 2.5
    with pytest.raises(SettingsError, match="MEDFLOW_LANDING_SETTLE_SECONDS='soon' is not a number of seconds"):
        load_settings({"MEDFLOW_LANDING_SETTLE_SECONDS": "soon"})
    for bad in ("-1", "inf", "nan"):
        with pytest.raises(SettingsError, match="must be a finite number of seconds, 0 or more"):
            load_settings({"MEDFLOW_LANDING_SETTLE_SECONDS": bad})


def test_dev_key_use_is_logged_without_the_key(caplog):
    with caplog.at_level(logging.WARNING):
        announce_key(load_settings({}))
    assert "DEVELOPMENT pseudonymization key" in caplog.text
    assert DEV_PII_KEY not in caplog.text


@pytest.mark.parametrize("key", ["k", DEV_PII_KEY, "z" * 100])
def test_sql_hmac_equals_python_hmac(key):
    con = duckdb.connect()
    con.execute(hmac_macro_sql(key))
    for msg in ["member:NWM000000001", "phone:5551234567", ""]:
        got = con.execute("SELECT medflow_pii_hmac(?)", [msg]).fetchone()[0]
        assert got == hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest()


def test_silver_members_pseudonyms_are_python_hmacs_of_the_true_values(generated_100k):
    """Every member the generated 100K set's files name (three payers, three name layouts, upper-case names
    at cascade) has exactly one silver_members row, and its five pseudonyms are Python's keyed HMAC-SHA256
    of the normalized true values (no email key where the payer's layout has no email column). Names and
    emails are hashed once per distinct value and joined back: a wrong join shows here as a missing or
    mismatched key."""
    def key(domain: str, value: str) -> str:
        return hmac.new(DEV_PII_KEY.encode(), f"{domain}:{value}".encode(), hashlib.sha256).hexdigest()

    # the truth keeps the member id of a row whose file leaves it out (that planted defect)
    truth = duckdb.connect().execute(
        "SELECT DISTINCT payer, member_id, first_name, last_name, email, phone10, ssn9, year(birth_date) "
        f"FROM read_parquet('{generated_100k['manifest']}/truth_*.parquet') "
        "WHERE defect IS DISTINCT FROM 'missing_member_id'").fetchall()
    contracts = load_contracts(load_settings({}).contracts_path)
    sends_email = {payer for payer, c in contracts.items() if "member_email" in c.columns}
    assert sends_email and sends_email != {"bluepeak", "cascade", "northwind"}  # one layout has no email
    expected = {(payer, key("member", mid.upper()), key("name", f"{first} {last}".lower()),
                 key("email", email.lower()) if payer in sends_email else None,
                 key("phone", phone), key("ssn", ssn), year)
                for payer, mid, first, last, email, phone, ssn, year in truth}
    with duckdb.connect(str(generated_100k["warehouse"]), read_only=True) as con:
        got = con.execute("SELECT payer, member_key, name_key, email_key, phone_key, ssn_key, birth_year "
                          "FROM silver.silver_members").fetchall()
    assert len(expected) > 10_000 and len({(p, m) for p, m, *_ in expected}) == len(expected)
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == expected


def test_one_person_gets_one_pseudonym_per_field_whatever_the_payer_formatting(tmp_path):
    """Names, emails, phones and SSNs are normalized before hashing: inner and unusual whitespace (tabs,
    doubled and no-break spaces), composed or decomposed accents and accent-free spellings, phone
    extensions, SSN separators, and a payer that sends "First Last" in one column."""
    import csv
    import shutil
    import unicodedata

    from medflow_assets.settings import CONTRACTS_DIR
    from tests.helpers import copy_sample, materialize_graph, query

    landing = copy_sample(tmp_path / "landing")

    def edit(path, delim, edits):
        rows = list(csv.reader(path.open(newline=""), delimiter=delim))
        for i, values in edits.items():
            for col, v in values.items():
                rows[i][rows[0].index(col)] = v
        with path.open("w", newline="") as f:
            csv.writer(f, delimiter=delim, lineterminator="\n").writerows(rows)
        return rows

    nfc, nfd = unicodedata.normalize("NFC", "José"), unicodedata.normalize("NFD", "José")
    def nw(mid, first, last, email, phone, ssn):
        return {"member_id": mid, "first_name": first, "last_name": last, "email": email, "phone": phone,
                "ssn": ssn}

    rows = edit(landing / "northwind" / "northwind_claims_001.csv", ",", {
        1: nw("XM1", "Anna", "Smith", "anna.smith@example.com", "(555) 123-4567", "123-45-6789"),
        2: nw("XM1", "Anna\t", "Smith", "anna.smith@example.com\t", "555-123-4567 x204", "123 45 6789"),
        3: nw("XM1", "Anna", "Smith", "Anna.Smith@Example.com ", "555.123.4567 ext. 7", "123456789"),
        4: nw("XM2", "Mary \f Ann", "Jones", "m@example.com", "5551112222", "012-34-5678"),
        5: nw("XM2", "Mary\u00a0Ann", "Jones", "m@example.com", "+1 555 111 2222", "012 34 5678"),
        6: nw("XM3", nfc, "Garcia", "j@example.com", "5552223333", "345-67-8901"),
        7: nw("XM3", nfd, "Garcia", "j@example.com", "555-222-3333 Ext: 12", "345-67-8901"),
        8: nw("XM4", "Zed", "Lane", "z@example.com", "5553334444", "12345678"),  # not padded: its own key
    })
    edit(landing / "cascade" / "cascade_claims_001.txt", "|", {
        1: {"MBR_ID": "xm3", "MBR_FNAME": "JOSE", "MBR_LNAME": "GARCIA", "MBR_EMAIL": " J@EXAMPLE.COM",
            "MBR_PHONE": "15552223333", "MBR_SSN": "345678901"}})
    # a payer with northwind's layout but the name as "First Last" in one column
    contracts = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, contracts)
    text = (CONTRACTS_DIR / "northwind.yaml").read_text().replace("payer: northwind", "payer: delta")
    text = text.replace("  member_first_name: first_name\n  member_last_name: last_name\n",
                        "  member_full_name: patient_name\n")
    (contracts / "delta.yaml").write_text(text)
    header = rows[0]
    first, last = header.index("first_name"), header.index("last_name")
    delta_header = [c for c in header if c not in ("first_name", "last_name")] + ["patient_name"]
    delta_row = [v for i, v in enumerate(rows[1]) if i not in (first, last)] + ["Anna  Smith"]
    delta_row[delta_header.index("claim_id")] = "DL0000000001"
    (landing / "delta").mkdir()
    with (landing / "delta" / "delta_claims_001.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([delta_header, delta_row])

    wh = tmp_path / "wh.duckdb"
    materialize_graph(landing, wh, contracts=contracts)

    def key(domain: str, value: str) -> str:
        return hmac.new(DEV_PII_KEY.encode(), f"{domain}:{value}".encode(), hashlib.sha256).hexdigest()

    expected = {"XM1": ("anna smith", "anna.smith@example.com", "5551234567", "123456789"),
                "XM2": ("mary ann jones", "m@example.com", "5551112222", "012345678"),
                "XM3": ("jose garcia", "j@example.com", "5552223333", "345678901"),
                "XM4": ("zed lane", "z@example.com", "5553334444", "12345678")}
    for mid, (name, email, phone, ssn) in expected.items():
        got = query(wh, "SELECT DISTINCT name_key, email_key, phone_key, ssn_key FROM silver.silver_members "
                        "WHERE member_key = ? AND email_key IS NOT NULL", [key("member", mid)])
        assert got == [(key("name", name), key("email", email), key("phone", phone), key("ssn", ssn))], mid
    assert query(wh, "SELECT DISTINCT payer, name_key FROM silver.silver_members WHERE member_key = ? "
                     "AND payer = 'delta'", [key("member", "XM1")]) == [("delta", key("name", "anna smith"))]
    assert query(wh, "SELECT count(*) FROM silver.silver_members WHERE payer = 'delta' AND name_key IS NULL") == [
        (0,)]


def test_duckdb_threads_setting_reaches_dbts_connection(tmp_path, monkeypatch):
    """MEDFLOW_DUCKDB_THREADS is DuckDB's thread count in dbt's connection too (profiles.yml), not only in
    the checks' and landing's."""
    from dbt.cli.main import dbtRunner

    from medflow_assets.settings import DBT_PROJECT_DIR

    monkeypatch.setenv("MEDFLOW_DUCKDB_THREADS", "1")
    monkeypatch.setenv("MEDFLOW_WAREHOUSE_PATH", str(tmp_path / "wh.duckdb"))
    shown = dbtRunner().invoke(["show", "--inline", "select current_setting('threads') as threads", "--quiet",
                                "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR),
                                "--target-path", str(tmp_path / "target")])
    assert shown.success, shown.exception
    assert [tuple(row) for row in shown.result.results[0].agate_table.rows] == [(1,)]
