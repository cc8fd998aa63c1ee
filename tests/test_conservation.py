"""Conservation: bronze rows = silver rows + quarantined rows, per file; quarantine = generator manifest."""

import csv
from pathlib import Path

import pytest

from tests.helpers import SAMPLE_MANIFEST, query


def _data_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f) - 1


def _per_file_counts(warehouse):
    return query(warehouse, """
        SELECT b.source_file, b.n, coalesce(s.n, 0), coalesce(q.n, 0)
        FROM (SELECT source_file, count(*) n FROM bronze.bronze_claim_lines GROUP BY 1) b
        LEFT JOIN (SELECT source_file, count(*) n FROM silver.silver_claim_lines GROUP BY 1) s USING (source_file)
        LEFT JOIN (SELECT source_file, count(*) n FROM silver.silver_claims_quarantine GROUP BY 1) q
          USING (source_file)
        ORDER BY 1""")


def _mismatches_against_manifest(warehouse, manifest_glob: str):
    """Rows where the quarantine and the manifest disagree (missing on either side or other rules)."""
    return query(warehouse, f"""
        WITH m AS (SELECT payer || '/' || file_name AS source_file, source_row_number, rule_id
                   FROM read_parquet('{manifest_glob}')),
             q AS (SELECT source_file, source_row_number, failed_rules FROM silver.silver_claims_quarantine)
        SELECT coalesce(m.source_file, q.source_file), coalesce(m.source_row_number, q.source_row_number),
               m.rule_id, q.failed_rules
        FROM m FULL JOIN q USING (source_file, source_row_number)
        WHERE m.rule_id IS NULL OR q.failed_rules IS NULL OR q.failed_rules <> [m.rule_id]
        LIMIT 20""")


def test_sample_every_file_conserves_rows(sample_run):
    counts = _per_file_counts(sample_run["warehouse"])
    assert {c[0] for c in counts} == {"northwind/northwind_claims_001.csv", "bluepeak/bluepeak_claims_001.csv",
                                      "cascade/cascade_claims_001.txt"}
    for source_file, bronze, silver, quarantined in counts:
        assert bronze == _data_lines(sample_run["landing"] / source_file), source_file
        assert bronze == silver + quarantined, source_file
        assert quarantined > 0 and silver > 0


def test_sample_quarantine_matches_manifest_row_by_row(sample_run):
    assert _mismatches_against_manifest(sample_run["warehouse"], f"{SAMPLE_MANIFEST}/manifest_*.parquet") == []


def test_100k_every_file_conserves_rows(generated_100k):
    counts = _per_file_counts(generated_100k["warehouse"])
    assert len(counts) == 6
    total = 0
    for source_file, bronze, silver, quarantined in counts:
        assert bronze == _data_lines(generated_100k["landing"] / source_file), source_file
        assert bronze == silver + quarantined, source_file
        total += bronze
    assert total >= 100_000


def test_100k_quarantine_count_per_rule_equals_manifest(generated_100k):
    wh, manifest = generated_100k["warehouse"], generated_100k["manifest"]
    got = dict(query(wh, "SELECT rule_id, sum(rows_failed) FROM silver.silver_data_quality_log "
                         "GROUP BY 1 HAVING sum(rows_failed) > 0"))
    want = dict(query(wh, f"SELECT rule_id, count(*) FROM read_parquet('{manifest}/manifest_*.parquet') GROUP BY 1"))
    assert len(want) >= 8
    assert got == want
    assert _mismatches_against_manifest(wh, f"{manifest}/manifest_*.parquet") == []


@pytest.mark.parametrize("table", ["silver.silver_claim_lines", "silver.silver_claims_quarantine"])
def test_lineage_points_back_to_bronze(generated_100k, table):
    orphans = query(generated_100k["warehouse"], f"""
        SELECT count(*) FROM {table} t ANTI JOIN bronze.bronze_claim_lines b
        USING (source_file, source_row_number, file_checksum)""")[0][0]
    assert orphans == 0


def test_source_row_number_is_the_rows_place_in_its_file(generated_100k):
    """dbt runs without preserve_insertion_order; each bronze row's number must still be its position in its
    own file. Every layout starts with claim id and line number."""
    wh, landing = generated_100k["warehouse"], generated_100k["landing"]
    files = sorted(p.relative_to(landing).as_posix() for p in landing.glob("*/*") if p.suffix in (".csv", ".txt"))
    assert len(files) == 6
    for source_file in files:
        with open(landing / source_file, newline="") as f:
            rows = list(csv.reader(f, delimiter="|" if source_file.endswith(".txt") else ","))[1:]
        in_file = [(n, r[0], r[1]) for n, r in enumerate(rows, start=1)]
        in_bronze = query(wh, "SELECT source_row_number, coalesce(claim_id, ''), coalesce(claim_line_number, '') "
                              "FROM bronze.bronze_claim_lines "
                              "WHERE source_file = ? ORDER BY source_row_number", [source_file])
        assert len(in_file) > 10_000, source_file
        assert in_bronze == in_file, source_file


def test_raw_text_is_kept_for_quarantined_rows_only(generated_100k):
    wh = generated_100k["warehouse"]
    raw = ["claim_line_number", "service_date", "paid_date", "billed_amount", "allowed_amount", "paid_amount",
           "claim_status", "diagnosis_code"]
    kept_on_accepted = query(wh, "SELECT count(*) FROM silver.silver_claim_lines_validated WHERE len(failed_rules) = 0 "
                                 "AND (" + " OR ".join(f"raw_{c} IS NOT NULL" for c in raw) + ")")[0][0]
    assert kept_on_accepted == 0
    # the quarantine shows each rejected row's text exactly as bronze holds it
    differs = query(wh, "SELECT count(*), count(*) FILTER (WHERE " + " OR ".join(
        f"q.{c} IS DISTINCT FROM b.{c}" for c in raw) + ") "
        "FROM silver.silver_claims_quarantine q JOIN bronze.bronze_claim_lines b "
        "USING (source_file, source_row_number)")[0]
    assert differs[0] > 1000 and differs[1] == 0


def test_warehouse_is_created_in_duckdb_1_5_storage_format(sample_run):
    tags = query(sample_run["warehouse"], "SELECT tags FROM duckdb_databases() WHERE path IS NOT NULL")
    assert tags == [({"storage_version": "v1.5.0+"},)]


def test_data_quality_log_rows_checked_equal_bronze_rows(generated_100k):
    bad = query(generated_100k["warehouse"], """
        SELECT l.source_file FROM silver.silver_data_quality_log l
        JOIN (SELECT source_file, count(*) n FROM bronze.bronze_claim_lines GROUP BY 1) b USING (source_file)
        WHERE l.rows_checked <> b.n""")
    assert bad == []
    n_rules = query(generated_100k["warehouse"], "SELECT count(*) FROM reference.dq_rules")[0][0]
    per_file = query(generated_100k["warehouse"],
                     "SELECT count(*) FROM silver.silver_data_quality_log GROUP BY source_file")
    assert {r[0] for r in per_file} == {n_rules}
