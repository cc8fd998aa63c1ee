import csv
import hashlib

import duckdb
import pytest

from medflow_assets.synth import reference as ref
from medflow_assets.synth.cli import main as synth_main
from medflow_assets.synth.generator import generate


def luhn_npi_valid(npi: str) -> bool:
    digits = [int(c) for c in "80840" + npi]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return total % 10 == 0


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    a = generate(tmp_path / "a", 3000, seed=5, manifest_dir=tmp_path / "ma")
    b = generate(tmp_path / "b", 3000, seed=5, manifest_dir=tmp_path / "mb")
    c = generate(tmp_path / "c", 3000, seed=6, manifest_dir=tmp_path / "mc")
    assert [_sha(f.path) for f in a] == [_sha(f.path) for f in b]
    assert [_sha(f.path) for f in a] != [_sha(f.path) for f in c]


def test_three_payers_have_genuinely_different_layouts(tmp_path):
    files = {f.payer: f.path for f in generate(tmp_path / "l", 3000, seed=1, defect_rate=0,
                                                manifest_dir=tmp_path / "m")}
    nw = next(csv.DictReader(files["northwind"].open()))
    bp = next(csv.DictReader(files["bluepeak"].open()))
    cc = next(csv.DictReader(files["cascade"].open(), delimiter="|"))
    assert nw["service_date"][4] == "-" and "." in nw["billed_amount"]
    assert bp["Service Date"][2] == "/" and bp["Billed"].startswith(("$", "-$")) and ", " in bp["Patient Name"]
    assert len(cc["SVC_DT"]) == 8 and cc["SVC_DT"].isdigit() and cc["BILL_AMT_CENTS"].lstrip("-").isdigit()
    assert cc["STAT_CD"] in {"P", "D", "H", "A", "R"}


def test_clean_rows_follow_the_code_sets_and_amount_rules(tmp_path):
    manifest = tmp_path / "m"
    generate(tmp_path / "l", 20_000, seed=3, defect_rate=0, manifest_dir=manifest, truth=True)
    con = duckdb.connect()
    t = f"read_parquet('{manifest}/truth_*.parquet')"
    npis = [r[0] for r in con.execute(f"SELECT DISTINCT npi FROM {t}").fetchall()]
    assert npis and all(luhn_npi_valid(n) for n in npis)
    bad = con.execute(f"""SELECT count(*) FROM {t} WHERE status <> 'reversed'
                          AND NOT (paid <= allowed AND allowed <= billed)""").fetchone()[0]
    assert bad == 0
    statuses = dict(con.execute(f"SELECT status, count(*) FROM {t} GROUP BY 1").fetchall())
    assert set(statuses) == {"paid", "denied", "pending", "adjusted", "reversed"}
    assert con.execute(f"SELECT count(*) FROM {t} WHERE status = 'denied' AND denial_code IS NULL").fetchone()[0] == 0
    assert {r[0] for r in con.execute(f"SELECT DISTINCT dx FROM {t}").fetchall()} <= set(ref.ICD10_CODES)


def test_defect_manifest_lists_each_planted_defect_kind(tmp_path):
    manifest = tmp_path / "m"
    files = generate(tmp_path / "l", 30_000, seed=11, defect_rate=0.05, manifest_dir=manifest)
    rows = list(csv.DictReader((manifest / "manifest.csv").open()))
    assert len(rows) == sum(f.defects for f in files)
    assert {r["defect"] for r in rows} == set(ref.DEFECT_RULES)
    assert all(r["rule_id"] == ref.DEFECT_RULES[r["defect"]] for r in rows)
    # duplicates add a line: total lines = requested + duplicates
    dups = sum(1 for r in rows if r["defect"] == "duplicate_line")
    assert sum(f.lines for f in files) == 30_000 + dups


def test_cli_rejects_bad_arguments_with_message(tmp_path, capsys):
    assert synth_main(["--out", str(tmp_path / "x"), "--lines", "0"]) == 2
    assert "lines must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("rows_per_file, expected_files", [(1000, 7), (10_000, 1)])
def test_rows_per_file_bounds_file_size(tmp_path, rows_per_file, expected_files):
    files = generate(tmp_path / "l", 7000, seed=2, rows_per_file=rows_per_file, payers=["northwind"],
                     manifest_dir=tmp_path / "m")
    assert len(files) == expected_files
    assert all(f.lines <= rows_per_file + 50 for f in files)
