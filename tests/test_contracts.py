import re
from pathlib import Path

import pytest

from medflow_assets.landing.contracts import ContractError, load_contract, load_contracts
from medflow_assets.landing.zone import inspect_file
from medflow_assets.settings import CONTRACTS_DIR


def test_shipped_contracts_load_with_distinct_layouts():
    contracts = load_contracts(CONTRACTS_DIR)
    assert set(contracts) == {"northwind", "bluepeak", "cascade"}
    assert {c.delimiter for c in contracts.values()} == {",", "|"}
    assert {c.amount_encoding for c in contracts.values()} == {"dollars", "currency", "cents"}
    assert {c.date_format for c in contracts.values()} == {"%Y-%m-%d", "%m/%d/%Y", "%Y%m%d"}
    assert contracts["bluepeak"].defaults == {"member_email": None}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


BASE = """payer: {payer}
file_glob: "*.csv"
delimiter: ","
date_format: "%Y-%m-%d"
amount_encoding: dollars
status_map: {{paid: paid}}
columns:
  claim_id: a
  claim_line_number: b
  member_id: c
  provider_npi: d
  diagnosis_code: e
  procedure_code: f
  service_date: g
  billed_amount: h
  allowed_amount: i
  paid_amount: j
  claim_status: k
"""


def test_minimal_contract_is_accepted(tmp_path):
    for date_format in ("%y%m%d", "%d %b %Y", "%Y%j", "%B %d, %Y %H:%M"):  # every date form names a whole date
        assert load_contract(_write(tmp_path, "acme", BASE.format(payer="acme").replace(
            'date_format: "%Y-%m-%d"', f'date_format: "{date_format}"'))).date_format == date_format
    c = load_contract(_write(tmp_path, "acme", BASE.format(payer="acme")))
    assert c.required_columns == list("abcdefghijk")
    assert c.missing_columns(["a", "b", "c"]) == list("defghijk")


@pytest.mark.parametrize("date_format, good, bad", [
    ("%Y-%m-%d", ["2024-01-05", "2024-1-5"], ["24-01-05", "2024-01-05x", "2024/01/05"]),
    ("%m/%d/%Y", ["07/09/2024", "7/9/2024"], ["7/9/24", "07/09/20245"]),
    ("%Y%m%d", ["20241105"], ["2024115", "202411055"]),
    ("%d.%m.%Y", ["05.11.2024"], ["05x11x2024"]),  # a dot is a dot, not any character
])
def test_a_date_must_be_exactly_in_its_contracts_format(date_format, good, bad):
    from medflow_assets.landing.contracts import date_pattern

    pattern = date_pattern(date_format)
    assert [bool(re.fullmatch(pattern, t)) for t in good + bad] == [True] * len(good) + [False] * len(bad)


@pytest.mark.parametrize("mutation, message", [
    (lambda s: s.replace("amount_encoding: dollars", "amount_encoding: euros"), "amount_encoding must be one of"),
    (lambda s: s.replace("  claim_status: k\n", ""), "required fields not mapped to a file column: ['claim_status']"),
    (lambda s: s.replace("{paid: paid}", "{paid: approved}"), "are not canonical statuses"),
    (lambda s: s + "  favourite_colour: z\n", "unknown canonical fields ['favourite_colour']"),
    (lambda s: s + "color: blue\n", "unknown keys ['color']"),
    (lambda s: s.replace('delimiter: ","', 'delimiter: ",,"'), "delimiter must be one character"),
    (lambda s: s.replace('date_format: "%Y-%m-%d"', 'date_format: "%Y-%m-%d %Z"'),
     "date_format '%Y-%m-%d %Z': directive '%Z' is not supported"),
    (lambda s: s.replace('date_format: "%Y-%m-%d"', 'date_format: "%Y-%m-%d%"'), "ends with a lone '%'"),
    # DuckDB cannot read a file whose delimiter is its quote character: a bronze error naming no payer
    (lambda s: s.replace('delimiter: ","', "delimiter: '\"'"), "delimiter '\"' cannot be used"),
    # Path.match raises on an empty pattern: the sensor's scan of every payer stopped
    (lambda s: s.replace('file_glob: "*.csv"', 'file_glob: ""'), "file_glob '' is not a file name pattern"),
    (lambda s: s.replace('file_glob: "*.csv"', 'file_glob: .'), "file_glob '.' is not a file name pattern"),
    # strptime fills a missing year, month or day from 1900-01-01: every date would be read, wrongly
    (lambda s: s.replace('date_format: "%Y-%m-%d"', 'date_format: "%m/%d"'), "date_format '%m/%d': needs a year"),
    (lambda s: s.replace('date_format: "%Y-%m-%d"', 'date_format: "%Y-%m"'), "date_format '%Y-%m': needs a year"),
    # every file would be rejected as naming a column twice
    (lambda s: s.replace("  claim_status: k\n", "  claim_status: A\n"), "columns name file columns 'a' and 'A'"),
])
def test_invalid_contract_names_file_and_problem(tmp_path, mutation, message):
    path = _write(tmp_path, "acme", mutation(BASE.format(payer="acme")))
    with pytest.raises(ContractError) as err:
        load_contract(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_contract_values_are_read_as_written_not_as_yaml_numbers_or_booleans(tmp_path):
    """YAML 1.1 reads 01 as the number 1 and NO as false: a payer's status code 01 became '1' (its lines all
    unknown_status), a column named No became 'False' (every file rejected). Every value is text as written."""
    text = (BASE.format(payer="acme").replace("status_map: {paid: paid}",
                                              "status_map: {01: paid, 02: denied, NO: pending, 1.50: adjusted}")
            .replace("  claim_status: k\n", "  claim_status: No\n  place_of_service: 007\n")
            + "defaults:\n  department: 2024-01-05\n  denial_reason_code: ~\nmax_quarantine_rate: 0.25\n")
    c = load_contract(_write(tmp_path, "acme", text))
    assert c.status_map == {"01": "paid", "02": "denied", "NO": "pending", "1.50": "adjusted"}
    assert c.columns["claim_status"] == "No" and c.columns["place_of_service"] == "007"
    assert c.defaults == {"department": "2024-01-05", "denial_reason_code": None}
    assert c.max_quarantine_rate == 0.25


def test_contract_file_name_must_match_payer(tmp_path):
    with pytest.raises(ContractError, match="file name must be acme.yaml"):
        load_contract(_write(tmp_path, "other", BASE.format(payer="acme")))


def test_file_missing_columns_is_rejected_with_names(tmp_path):
    contract = load_contracts(CONTRACTS_DIR)["northwind"]
    folder = tmp_path / "northwind"
    folder.mkdir()
    f = folder / "bad.csv"
    header = [c for c in contract.required_columns if c not in ("paid_amount", "status")]
    f.write_text(",".join(header) + "\n" + ",".join("x" for _ in header) + "\n")
    lf = inspect_file(f, "northwind", contract, tmp_path)
    assert not lf.accepted
    assert "northwind/bad.csv" in lf.error
    assert "missing columns: paid_amount, status" in lf.error


def test_file_of_unknown_payer_is_rejected(tmp_path):
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "x.csv").write_text("a,b\n1,2\n")
    lf = inspect_file(folder / "x.csv", "mystery", None, tmp_path)
    assert "no payer contract for folder 'mystery'" in lf.error


def test_an_invalid_contract_is_set_aside_by_payer_when_asked_and_raises_otherwise(tmp_path):
    for payer in ("acme", "zenith"):
        _write(tmp_path, payer, BASE.format(payer=payer))
    broken = _write(tmp_path, "broken", BASE.format(payer="broken").replace('delimiter: ","', 'delimiter: ",,"'))
    invalid: dict[str, str] = {}
    assert set(load_contracts(tmp_path, invalid)) == {"acme", "zenith"}
    assert list(invalid) == ["broken"]
    assert str(broken) in invalid["broken"] and "delimiter must be one character" in invalid["broken"]
    with pytest.raises(ContractError, match="delimiter must be one character"):
        load_contracts(tmp_path)
    with pytest.raises(ContractError, match="no payer contracts"):
        load_contracts(tmp_path / "empty", {})


@pytest.mark.parametrize("text, message", [
    (BASE.format(payer="acme").replace("columns:", "max_quarantine_rate: ten\ncolumns:"),
     "max_quarantine_rate must be a number between 0 and 1 (0.10 = 10%), not 'ten'"),
    (BASE.format(payer="acme").replace("columns:", "max_quarantine_rate:\ncolumns:"),
     "max_quarantine_rate must be a number between 0 and 1 (0.10 = 10%), not None"),
    (re.sub(r"status_map:.*\n", "status_map: [P, D]\n", BASE.format(payer="acme")), "status_map must be a mapping"),
    (re.sub(r"status_map:.*\n", "status_map:\n", BASE.format(payer="acme")), "status_map is empty"),
    (BASE.format(payer="acme").replace("columns:", "defaults: [x]\ncolumns:"), "defaults must be a mapping"),
])
def test_a_contract_value_of_the_wrong_kind_is_a_contract_error_naming_it(tmp_path, text, message):
    """Not a crash that would stop the other payers (load_contracts sets ContractErrors aside per payer)."""
    with pytest.raises(ContractError) as err:
        load_contract(_write(tmp_path, "acme", text))
    assert message in str(err.value)


def test_unreadable_contract_files_are_set_aside_and_editor_files_ignored(tmp_path):
    _write(tmp_path, "zenith", BASE.format(payer="zenith"))
    (tmp_path / "latin.yaml").write_bytes((BASE.format(payer="latin") + "description: caf\xe9\n").encode("latin-1"))
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / ".#zenith.yaml").symlink_to(tmp_path / "gone")  # an editor's lock file: a dangling link
    invalid: dict[str, str] = {}
    assert list(load_contracts(tmp_path, invalid)) == ["zenith"]
    assert sorted(invalid) == ["folder", "latin"]
    assert "cannot be read as UTF-8 text (UnicodeDecodeError" in invalid["latin"]
    assert "cannot be read as UTF-8 text (IsADirectoryError" in invalid["folder"]
