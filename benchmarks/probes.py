"""Two A/B probes behind design choices (README, BENCHMARKS.md), each alternating its two variants:

  python benchmarks/probes.py checks --warehouse benchmarks/.work/10m/medflow/medflow.duckdb --rounds 3
      every Pandera check and the gate on a built warehouse, with fast_builtin_check (factory.py) and with
      Pandera's own expressions; fails if any count differs.
  python benchmarks/probes.py silver-order --floor-db benchmarks/.work/10m/floor/medflow.duckdb \
      --script benchmarks/.work/10m/floor.sql --rounds 2
      silver_claim_lines_validated and silver_members (the floor's SQL) on a copy of the floor's warehouse
      without them: one after the other, as dbt runs them now, and side by side on two cursors, as before.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import floor
from medflow_assets.quality import factory
from medflow_assets.quality.checks import BRONZE_SILVER_CHECKS, GOLD_CHECKS, quarantine_rates
from medflow_assets.resources import WarehouseResource
from medflow_assets.settings import load_settings
from medflow_assets.transform.connection_plugin import hmac_macro_sql


def probe_checks(warehouse: Path, rounds: int) -> dict:
    s = load_settings()
    con = factory.connect_ibis(WarehouseResource(path=str(warehouse), memory_limit=s.memory_limit,
                                                 checks_memory_limit=s.checks_memory_limit, threads=s.threads))
    fast = factory.fast_builtin_check
    walls: dict[str, list[float]] = {"pandera": [], "fast": []}
    first = None
    try:
        for _ in range(rounds):
            for mode in ("pandera", "fast"):
                factory.fast_builtin_check = fast if mode == "fast" else (lambda check, column: None)
                t0 = time.perf_counter()
                out = {}
                for c in BRONZE_SILVER_CHECKS + GOLD_CHECKS:
                    v = factory.validate_table(con, c.relation, c.model, list(c.key_columns))
                    out[c.relation] = [v.rows_checked, v.rules_checked, v.failures, v.structural]
                out["quarantine_rate_gate"] = quarantine_rates(con.con)
                walls[mode].append(round(time.perf_counter() - t0, 2))
                first = first or out
                if out != first:
                    raise SystemExit(f"{mode}: the checks answered differently")
    finally:
        factory.fast_builtin_check = fast
        con.disconnect()
    return {"rounds": walls, "median_s": {m: statistics.median(w) for m, w in walls.items()}}


def _statement(statements: list[str], relation: str) -> str:
    return next(st for st in statements if f'"silver"."{relation}"' in st.split("AS", 1)[0])


def probe_silver_order(floor_db: Path, script: Path, rounds: int) -> dict:
    statements = floor.script_statements(script)
    pair = {name: _statement(statements, name) for name in ("silver_claim_lines_validated", "silver_members")}
    s = load_settings()
    walls: dict[str, list[dict]] = {"one after the other": [], "side by side": []}
    with tempfile.TemporaryDirectory(dir=floor_db.parent) as tmp:
        db = Path(tmp) / floor_db.name
        for _ in range(rounds):
            for mode, rows in walls.items():
                shutil.copy(floor_db, db)
                con = floor.connect(db, s.memory_limit, s.threads)
                for name in pair:
                    con.execute(f"DROP TABLE silver.{name}")
                con.execute("CHECKPOINT")
                took = {}

                def run(name, con=con, took=took):
                    cursor = con.cursor()  # its own connection: the HMAC macro is per connection
                    cursor.execute(hmac_macro_sql(s.pii_key))
                    t = time.perf_counter()
                    cursor.execute(pair[name])
                    took[name] = round(time.perf_counter() - t, 2)

                t0 = time.perf_counter()
                if mode == "one after the other":
                    for name in pair:
                        run(name)
                else:
                    threads = [threading.Thread(target=run, args=(name,)) for name in pair]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    if len(took) != len(pair):
                        raise SystemExit("a statement failed (see the thread's traceback above)")
                rows.append({"wall_s": round(time.perf_counter() - t0, 2), **took})
                con.close()
    return {"rounds": walls, "median_wall_s": {m: statistics.median(r["wall_s"] for r in rs)
                                                for m, rs in walls.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="probe", required=True)
    c = sub.add_parser("checks")
    c.add_argument("--warehouse", type=Path, required=True)
    c.add_argument("--rounds", type=int, default=3)
    o = sub.add_parser("silver-order")
    o.add_argument("--floor-db", type=Path, required=True)
    o.add_argument("--script", type=Path, required=True)
    o.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    if args.probe == "checks":
        out = probe_checks(args.warehouse, args.rounds)
    else:
        out = probe_silver_order(args.floor_db, args.script, args.rounds)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
