"""All Pandera checks and the quarantine-rate gate on an existing warehouse, in one process, so their time
and peak memory can be measured apart from the pipeline.

  python benchmarks/checks.py --warehouse benchmarks/.work/10m/medflow/medflow.duckdb
"""

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from medflow_assets.quality.checks import BRONZE_SILVER_CHECKS, GOLD_CHECKS, quarantine_rates
from medflow_assets.quality.factory import connect_ibis, validate_table
from medflow_assets.resources import WarehouseResource
from medflow_assets.settings import load_settings


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--warehouse", type=Path, required=True)
    args = ap.parse_args(argv)
    s = load_settings()
    con = connect_ibis(WarehouseResource(path=str(args.warehouse), memory_limit=s.memory_limit,
                                         checks_memory_limit=s.checks_memory_limit, threads=s.threads))
    out = {}
    t0 = time.perf_counter()
    for check in BRONZE_SILVER_CHECKS + GOLD_CHECKS:
        v = validate_table(con, check.relation, check.model, list(check.key_columns))
        out[check.relation] = {"rows": v.rows_checked, "rules": v.rules_checked, "passed": v.passed,
                               "seconds": round(v.duration_s, 3)}
    g0 = time.perf_counter()
    files = quarantine_rates(con.con)
    out["quarantine_rate_gate"] = {"files": len(files), "seconds": round(time.perf_counter() - g0, 3)}
    out["total_seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
