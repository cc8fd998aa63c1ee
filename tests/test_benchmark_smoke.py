"""The benchmark command at 100K, once: it must complete and conserve rows (time is not asserted here;
BENCHMARKS.md holds the measured numbers)."""

import json
import subprocess
import sys
from decimal import Decimal

from medflow_assets.settings import PROJECT_ROOT


def test_benchmark_smoke_100k_completes_and_conserves(tmp_path):
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--scales", "100k", "--runs", "1", "--work", str(tmp_path / "work"),
         "--results-dir", str(tmp_path / "results"), "--name", "smoke", "--incremental-scales",
         "--adjustment-scales", "100k"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "results" / "smoke.json").read_text())["scales"]["100k"]
    medflow, floor = results["medflow"][0], results["floor"][0]
    assert medflow["ok"] and medflow["conserved"] and medflow["bronze"] > 100_000
    assert medflow["quarantine"] > 0
    # the floor replays the same SQL: same rows, same money
    assert floor["ok"] and (floor["bronze"], floor["silver"], floor["gold_paid"]) == (
        medflow["bronze"], medflow["silver"], medflow["gold_paid"])
    # the hand-written pandas peer is an independent implementation of the same rules: it must agree
    pandas = results["pandas"][0]
    assert pandas["ok"] and (pandas["bronze"], pandas["silver"], pandas["quarantine"], pandas["gold_paid"]) == (
        medflow["bronze"], medflow["silver"], medflow["quarantine"], medflow["gold_paid"])
    checks = results["checks"][0]
    assert checks["ok"] and checks["detail"]["silver.silver_claim_lines"]["passed"]
    assert "| 100k |" in (tmp_path / "results" / "smoke.md").read_text()
    # a cascade file's lines sent again as adjustments and reversals: each good one replaces its line, none is
    # counted twice, and gold pays less (half of each adjusted payment, nothing for each reversed line)
    adj = results["adjustments"][0]
    assert adj["ok"] and adj["conserved"] and adj["lines_unchanged"], adj
    assert adj["adjusted"] > 1000 and adj["reversed"] > 100
    assert adj["superseded"] == adj["lines"] - (adj["quarantine"] - medflow["quarantine"]) > 0
    assert Decimal(adj["gold_paid"]) < Decimal(medflow["gold_paid"])
