"""The floor: MedFlow's own bronze -> silver -> gold SQL as one bare DuckDB script.

No Dagster, no dbt at run time, no checks, no checksums: the model SQL dbt compiled for a MedFlow run
(same files, same contracts) is replayed as CREATE TABLE statements in dependency order, on a DuckDB
connection with the same memory limit and the same HMAC macro.

  python benchmarks/floor.py compile --target-dir dbt_project/target/<run> --out floor.sql
  python benchmarks/floor.py run --script floor.sql --db /path/medflow.duckdb [--shards-side-by-side]

A script runs its statements one after the other, bronze's shard tables included. With
--shards-side-by-side the shard statements run at once on two cursors, as dbt's two threads run them in
MedFlow (for comparison; `run.py` measures the plain script).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medflow_assets.settings import DBT_PROJECT_DIR, WAREHOUSE_STORAGE_VERSION, load_settings
from medflow_assets.transform.connection_plugin import hmac_macro_sql

# The first query of the model's post-hook on a full build (dbt_project/macros/line_versions.sql): the rows of
# the claims held in more than one file, whose line versions and members it then compares. Hooks are not in
# dbt's compiled model SQL, and on the benchmark's data (no claim in two files) this query is all the hook does.
CLAIMS_IN_TWO_FILES = """CREATE OR REPLACE TEMP TABLE floor_claims_in_two_files AS
SELECT * FROM {table} t WHERE (t.payer, t.claim_id) IN (
  SELECT (payer, claim_id) FROM {table}
  WHERE claim_id IS NOT NULL
  GROUP BY ALL HAVING min(hash(source_file)) <> max(hash(source_file)));"""


def compile_script(target_dir: Path) -> str:
    manifest = json.loads((target_dir / "manifest.json").read_text())
    models = {uid: n for uid, n in manifest["nodes"].items() if n["resource_type"] == "model"}
    order, seen = [], set()

    def visit(uid):
        if uid in seen or uid not in models:
            return
        seen.add(uid)
        for dep in models[uid]["depends_on"]["nodes"]:
            visit(dep)
        order.append(uid)

    for uid in sorted(models):
        visit(uid)
    statements = []
    for uid in order:
        node = models[uid]
        compiled = target_dir / "compiled" / "medflow" / node["original_file_path"]
        if not compiled.exists():  # not in this dbt step's selection
            continue
        sql = compiled.read_text()
        kind = "VIEW" if node["config"].get("materialized") == "view" else "TABLE"
        statements.append(f'CREATE OR REPLACE {kind} "{node["schema"]}"."{node["alias"]}" AS\n{sql};')
        if node["alias"] == "silver_claim_lines_validated":
            statements.append(CLAIMS_IN_TWO_FILES.format(table=f'"{node["schema"]}"."{node["alias"]}"'))
    return "\n\n".join(statements) + "\n"


def _run_side_by_side(con, statements: list[str]) -> None:
    errors = []

    def run(statement):
        try:
            con.cursor().execute(statement)
        except duckdb.Error as e:  # re-raised in the main thread
            errors.append(e)

    workers = [threading.Thread(target=run, args=(st,)) for st in statements]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def connect(db: Path, memory_limit: str, threads: int) -> duckdb.DuckDBPyConnection:
    """A connection with the settings MedFlow's dbt profile gives DuckDB, and the HMAC macro (per connection:
    a cursor needs it again)."""
    con = duckdb.connect(str(db), config={"memory_limit": memory_limit, "threads": threads,
                                          "storage_compatibility_version": WAREHOUSE_STORAGE_VERSION,
                                          "preserve_insertion_order": False})
    con.execute(hmac_macro_sql(load_settings().pii_key))
    return con


def script_statements(script: Path) -> list[str]:
    return [st.rstrip(";\n") for st in script.read_text().split(";\n\n") if st.strip()]


def run_script(script: Path, db: Path, memory_limit: str, threads: int, shards_side_by_side: bool = False) -> float:
    t0 = time.perf_counter()
    db.parent.mkdir(parents=True, exist_ok=True)
    con = connect(db, memory_limit, threads)
    for schema in ("bronze", "silver", "gold", "reference"):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    seeds = DBT_PROJECT_DIR / "seeds"
    for seed in sorted(seeds.glob("*.csv")):  # dbt seeds; every one of their columns is text
        con.execute(f"CREATE OR REPLACE TABLE reference.{seed.stem} AS FROM read_csv('{seed}', all_varchar=true)")
    statements = script_statements(script)
    shards = [st for st in statements if '"bronze"."bronze_claim_lines_shard_' in st.split("AS", 1)[0]]
    if shards_side_by_side:
        _run_side_by_side(con, shards)
    for statement in statements:
        if not (shards_side_by_side and statement in shards):
            con.execute(statement)
            if '"bronze"."bronze_claim_lines"' in statement.split("AS", 1)[0]:
                # MedFlow's incremental models read the run's file list (landing.dbt_selection, written by
                # Dagster); here every file bronze holds is in the run.
                con.execute("CREATE SCHEMA IF NOT EXISTS landing")
                con.execute("CREATE OR REPLACE TABLE landing.dbt_selection AS "
                            "SELECT DISTINCT source_file FROM bronze.bronze_claim_lines")
                # silver_data_quality_log lists the run's accepted files from the landing registry
                con.execute("CREATE OR REPLACE TABLE landing.landing_file_registry AS "
                            "SELECT DISTINCT payer, source_file, file_checksum AS checksum, 'accepted' AS status "
                            "FROM bronze.bronze_claim_lines")
    con.close()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compile")
    c.add_argument("--target-dir", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run")
    r.add_argument("--script", type=Path, required=True)
    r.add_argument("--db", type=Path, required=True)
    r.add_argument("--shards-side-by-side", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "compile":
        args.out.write_text(compile_script(args.target_dir))
        return 0
    s = load_settings()
    seconds = run_script(args.script, args.db, s.memory_limit, s.threads, args.shards_side_by_side)
    print(json.dumps({"seconds": round(seconds, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
