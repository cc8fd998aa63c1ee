"""Bronze is stored in two shard tables under the view bronze.bronze_claim_lines (macros/bronze_shards.sql):
each file's rows live in exactly one shard, a file that moves to the other shard moves in one transaction, and
a warehouse made when bronze was one table is taken over without losing a row."""

import shutil

import duckdb

from medflow_assets.synth.generator import generate
from tests.helpers import file_fingerprints, materialize_graph, query

SHARDS = ("bronze.bronze_claim_lines_shard_0", "bronze.bronze_claim_lines_shard_1")


def _rows_per_shard(wh) -> dict[str, tuple[int, int]]:
    """source_file -> (rows in shard 0, rows in shard 1)."""
    return {f: (a, b) for f, a, b in query(wh, f"""
        SELECT source_file, count(*) FILTER (WHERE shard = 0), count(*) FILTER (WHERE shard = 1)
        FROM (SELECT source_file, 0 AS shard FROM {SHARDS[0]} UNION ALL SELECT source_file, 1 FROM {SHARDS[1]})
        GROUP BY 1""")}


def _bronze_fingerprints(wh) -> dict[str, tuple]:
    return file_fingerprints(wh, "bronze.bronze_claim_lines")


def _conserved(wh) -> bool:
    (bad,) = query(wh, """
        SELECT count(*) FROM (SELECT source_file, count(*) n FROM bronze.bronze_claim_lines GROUP BY 1) b
        FULL JOIN (SELECT source_file, count(*) n FROM silver.silver_claim_lines_validated GROUP BY 1) v
        USING (source_file) WHERE coalesce(b.n, -1) <> coalesce(v.n, -2)""")[0]
    return bad == 0


def test_each_file_is_in_one_shard_and_both_shards_load_files(generated_100k):
    wh = generated_100k["warehouse"]
    per_file = _rows_per_shard(wh)
    assert len(per_file) == 6
    for f, (a, b) in per_file.items():
        assert (a == 0) != (b == 0), f"{f} has rows in both shards or none: {a}, {b}"
    in_shard_0 = sum(1 for a, _ in per_file.values() if a)
    assert in_shard_0 == 3  # six files of about the same size, split by bytes: three each
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines") == [(sum(a + b for a, b in per_file.values()),)]


def test_a_file_moving_to_the_other_shard_keeps_its_rows_until_its_new_version_loads(tmp_path):
    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    generate(landing, 9000, seed=21, defect_rate=0.02, manifest_dir=tmp_path / "m0")
    assert materialize_graph(landing, wh).success
    before = _bronze_fingerprints(wh)
    # three files, largest first: one to shard 0, the next two to shard 1. A file loaded alone goes to shard 0.
    moving = sorted(f for f, (a, b) in _rows_per_shard(wh).items() if b)
    assert len(moving) == 2
    key = moving[0]
    path = landing / key
    original = path.read_text().splitlines()

    # a new version of the file that is not valid CSV: it is rejected and the file keeps its rows, in shard 1
    broken = list(original)
    broken[5] += ",EXTRA"
    path.write_text("\n".join(broken) + "\n")
    rejected = materialize_graph(landing, wh, partitions=[key])
    assert rejected.success
    (check,) = [e for e in rejected.get_asset_check_evaluations() if e.check_name == "landed_files_parsed"]
    assert not check.passed
    assert check.description.startswith(f"{key} is not valid CSV at line 6")
    assert _rows_per_shard(wh)[key] == (0, before[key][0])
    assert _bronze_fingerprints(wh) == before
    assert _conserved(wh)

    # a valid correction (its last 100 lines removed) loads into shard 0 and leaves none in shard 1
    path.write_text("\n".join(original[:-100]) + "\n")
    assert materialize_graph(landing, wh, partitions=[key]).success
    assert _rows_per_shard(wh)[key] == (before[key][0] - 100, 0)
    after = _bronze_fingerprints(wh)
    assert {f: after[f] for f in before if f != key} == {f: before[f] for f in before if f != key}
    assert _conserved(wh)


def _to_one_table_bronze(wh, keep_in_shard_0: str | None = None) -> None:
    """Bronze as MedFlow stored it before the shards: one table, same columns. With keep_in_shard_0, a
    takeover run that failed half-way: shard 0 was built (its half of the old table's files, by the hash of
    their names, and that file, which the run loaded into it), shard 1 and the view were not."""
    with duckdb.connect(str(wh)) as con:
        con.execute("CREATE TABLE bronze.one_table AS SELECT * FROM bronze.bronze_claim_lines")
        con.execute("DROP VIEW bronze.bronze_claim_lines")
        con.execute(f"DROP TABLE {SHARDS[1]}")
        if keep_in_shard_0 is None:
            con.execute(f"DROP TABLE {SHARDS[0]}")
        else:
            con.execute(f"DELETE FROM {SHARDS[0]}")
            con.execute(f"INSERT INTO {SHARDS[0]} SELECT * FROM bronze.one_table "
                        "WHERE hash(source_file) % 2 = 0 OR source_file = ?", [keep_in_shard_0])
        con.execute("ALTER TABLE bronze.one_table RENAME TO bronze_claim_lines")


def _land_and_run_a_new_file(tmp_path, landing, wh):
    batch = generate(tmp_path / "batch", 1800, seed=42, defect_rate=0.02, payers=["northwind"],
                     row_offset=1_000_000, file_tag="batch2", manifest_dir=tmp_path / "m1")[0]
    shutil.copy(batch.path, landing / "northwind" / batch.path.name)
    key = f"northwind/{batch.path.name}"
    assert materialize_graph(landing, wh, partitions=[key]).success
    return key, batch.lines


def _assert_taken_over(wh, before, key, lines, silver_before):
    assert query(wh, "SELECT table_type FROM information_schema.tables WHERE table_schema = 'bronze' "
                     "AND table_name = 'bronze_claim_lines'") == [("VIEW",)]
    after = _bronze_fingerprints(wh)
    assert {f: after[f] for f in before} == before          # every old row, once, unchanged
    assert after[key][0] == lines
    per_file = _rows_per_shard(wh)
    assert all((a == 0) != (b == 0) for a, b in per_file.values())
    assert per_file[key] == (lines, 0)
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines_validated")[0][0] == silver_before + lines
    assert _conserved(wh)
    return per_file


def _six_file_warehouse(tmp_path, seed):
    """Six files (two per payer): by a hash of their names, three go to each shard in a takeover."""
    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    generate(landing, 9000, seed=seed, defect_rate=0.02, files_per_payer=2, manifest_dir=tmp_path / "m0")
    assert materialize_graph(landing, wh).success
    silver = query(wh, "SELECT count(*) FROM silver.silver_claim_lines_validated")[0][0]
    return landing, wh, _bronze_fingerprints(wh), silver


def test_a_warehouse_whose_bronze_is_one_table_is_taken_over_by_the_shards(tmp_path):
    landing, wh, before, silver_before = _six_file_warehouse(tmp_path, seed=41)
    _to_one_table_bronze(wh)
    key, lines = _land_and_run_a_new_file(tmp_path, landing, wh)
    per_file = _assert_taken_over(wh, before, key, lines, silver_before)
    old_files_per_shard = [sum(1 for f, v in per_file.items() if v[k] and f != key) for k in (0, 1)]
    assert old_files_per_shard == [3, 3]


def test_a_takeover_that_failed_half_way_does_not_load_a_file_twice(tmp_path):
    landing, wh, before, silver_before = _six_file_warehouse(tmp_path, seed=43)
    # a file whose name hashes to shard 1 is already in shard 0 (loaded there by the half-failed run)
    (moved,) = query(wh, "SELECT min(source_file) FROM bronze.bronze_claim_lines WHERE hash(source_file) % 2 = 1")[0]
    _to_one_table_bronze(wh, keep_in_shard_0=moved)
    key, lines = _land_and_run_a_new_file(tmp_path, landing, wh)
    per_file = _assert_taken_over(wh, before, key, lines, silver_before)
    assert per_file[moved] == (before[moved][0], 0)
