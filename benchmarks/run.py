"""MedFlow at scale against the floor (same SQL, bare DuckDB) and a hand-written pandas peer.

  .venv/bin/python benchmarks/run.py --scales 100k 1m 10m --runs 3

For each scale: generate the data once with the project's generator (fixed seed), then per round run
(a) MedFlow: `medflow-load` (registers the landed files as partitions, then `dagster asset materialize
--select '*' --partition-range <first>...<last> -m medflow_assets.definitions`) from an empty warehouse,
(b) the floor, (c) the pandas peer, each as its own process, measuring wall time and the peak resident
memory of the whole process tree. Medians over the rounds are reported. Results go to
benchmarks/results/<name>.json and a markdown table to benchmarks/results/<name>.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.floor import compile_script
from benchmarks.proctree import Measured, run_measured
from medflow_assets.synth.generator import generate

# 20m is not in the default runs: it shows where the pandas peer stops (the targets are at 10M)
SCALES = {"1line": 1, "100k": 100_000, "1m": 1_000_000, "10m": 10_000_000, "20m": 20_000_000}
PY = sys.executable
BIN = Path(PY).parent
STEP_RE = re.compile(r'Finished execution of step "(\w+)" in (?:(\d+)m)?([\d.]+)(ms|s)')


def _env(landing: Path, warehouse: Path, dagster_home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDFLOW_")}
    env.update({"MEDFLOW_LANDING_PATH": str(landing), "MEDFLOW_WAREHOUSE_PATH": str(warehouse),
                "DAGSTER_HOME": str(dagster_home), "DO_NOT_TRACK": "1"})
    dagster_home.mkdir(parents=True, exist_ok=True)
    # the instance MedFlow ships (.ci/materialize and the README's commands use it): its storage, pools, retries
    shutil.copy(ROOT / "data" / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    return env


def ensure_data(work: Path, scale: str, seed: int) -> tuple[Path, dict]:
    landing = work / scale / "landing"
    summary = work / scale / "landing_manifest" / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("lines_requested") == SCALES[scale]:
        return landing, {"generated_s": None}
    shutil.rmtree(work / scale, ignore_errors=True)
    t0 = time.perf_counter()
    generate(landing, SCALES[scale], seed=seed, defect_rate=0.02, rows_per_file=1_000_000)
    return landing, {"generated_s": round(time.perf_counter() - t0, 1)}


def dbt_targets_of_run(log_path: Path, after: float) -> list[Path]:
    """dbt target folders of the MedFlow run logged in `log_path` (one per dbt step, named
    <step>-<run id[:8]>-<id>); by time when the log names no run."""
    m = re.search(r"medflow-load: run ([0-9a-f-]{36})", log_path.read_text(errors="replace"))
    folders = [p for p in (ROOT / "dbt_project" / "target").glob("medflow_dbt_*") if p.is_dir()]
    if m:
        return [p for p in folders if f"-{m.group(1)[:8]}-" in p.name]
    return [p for p in folders if p.stat().st_mtime >= after]


def breakdown(m: Measured, targets: list[Path]) -> dict:
    """Where the wall time went: Dagster steps from the run log, dbt node times from run_results.json."""
    steps: dict[str, float] = {}
    for name, minutes, value, unit in STEP_RE.findall(m.log_path.read_text(errors="replace")):
        steps[name] = float(minutes or 0) * 60 + float(value) / (1000 if unit == "ms" else 1)
    if not steps:
        return {}
    dbt_steps = sum(v for k, v in steps.items() if k.startswith("medflow_dbt_"))
    pandera = sum(v for k, v in steps.items() if k.endswith("_quality"))
    kinds: dict[str, float] = {}
    elapsed = 0.0
    for target in targets:
        rr = json.loads((target / "run_results.json").read_text()) if (target / "run_results.json").exists() else None
        if not rr:
            continue
        elapsed += rr["elapsed_time"]
        for r in rr["results"]:
            kind = r["unique_id"].split(".")[0]
            kinds[kind] = kinds.get(kind, 0.0) + r["execution_time"]
    return {
        "landing_step_s": round(steps.get("landing_files", 0.0), 2),
        "dbt_steps_s": round(dbt_steps, 2),
        "sql_s": round(kinds.get("model", 0.0) + kinds.get("seed", 0.0), 2),
        "dbt_tests_s": round(kinds.get("test", 0.0), 2),
        "pandera_checks_s": round(pandera, 2),
        "checks_s": round(kinds.get("test", 0.0) + pandera, 2),
        "dbt_overhead_s": round(dbt_steps - elapsed, 2),
        "other_steps_s": round(sum(steps.values()) - dbt_steps - pandera - steps.get("landing_files", 0.0), 2),
        "dagster_overhead_s": round(m.wall_s - sum(steps.values()), 2),
    }


def conservation(warehouse: Path) -> dict:
    con = duckdb.connect(str(warehouse), read_only=True)
    # superseded: good versions of a line that another file's version replaced (none in the generated data)
    b, s, v, q = con.execute("""SELECT (SELECT count(*) FROM bronze.bronze_claim_lines),
        (SELECT count(*) FROM silver.silver_claim_lines),
        (SELECT count(*) FROM silver.silver_claim_lines_validated WHERE len(failed_rules) = 0
                                                                    AND superseded_by IS NOT NULL),
        (SELECT count(*) FROM silver.silver_claims_quarantine)""").fetchone()
    paid = con.execute("SELECT sum(paid_amount) FROM gold.claims_monthly_summary").fetchone()[0]
    con.close()
    return {"bronze": b, "silver": s, "superseded": v, "quarantine": q, "conserved": b == s + v + q,
            "gold_paid": str(paid)}


def run_medflow(work: Path, scale: str, landing: Path, i: int) -> tuple[dict, Path | None]:
    wh_dir = work / scale / "medflow"
    shutil.rmtree(wh_dir, ignore_errors=True)
    warehouse = wh_dir / "medflow.duckdb"
    env = _env(landing, warehouse, wh_dir / "dagster_home")
    t0 = time.time()
    # medflow-load registers the landed files as partitions, then runs
    # `dagster asset materialize --select '*' --partition-range first...last` (one run for all files)
    m = run_measured([str(BIN / "medflow-load")], work / "logs" / f"medflow-{scale}-{i}.log", env=env, cwd=ROOT)
    targets = dbt_targets_of_run(m.log_path, t0)
    row = {"ok": m.returncode == 0, "wall_s": round(m.wall_s, 2), "peak_gib": round(m.peak_gib, 3),
           **breakdown(m, targets)}
    if row["ok"]:
        row.update(conservation(warehouse))
    return row, targets


def run_floor(work: Path, scale: str, targets: list[Path], i: int) -> dict:
    """The floor replays the SQL dbt compiled in MedFlow's run of this round (all its dbt steps)."""
    script = work / scale / "floor.sql"
    script.write_text("\n".join(compile_script(t) for t in sorted(targets, key=_step_order)))
    db_dir = work / scale / "floor"
    shutil.rmtree(db_dir, ignore_errors=True)
    m = run_measured([PY, str(ROOT / "benchmarks" / "floor.py"), "run", "--script", str(script),
                      "--db", str(db_dir / "medflow.duckdb")], work / "logs" / f"floor-{scale}-{i}.log", cwd=ROOT)
    row = {"ok": m.returncode == 0, "wall_s": round(m.wall_s, 2), "peak_gib": round(m.peak_gib, 3)}
    if row["ok"]:
        row.update(conservation(db_dir / "medflow.duckdb"))
    return row


ADD_PARTITION = ("import sys, dagster as dg; i = dg.DagsterInstance.get(); "
                 "i.add_dynamic_partitions('landing_file', [sys.argv[1]]); i.dispose()")


def run_landed_partition(work: Path, dst: Path, env: dict, log_name: str) -> Measured:
    """`dagster asset materialize --select '*' --partition <payer>/<file>` for the file just landed at `dst`
    (its partition added first), measured; the file leaves the landing zone afterwards."""
    key = f"{dst.parent.name}/{dst.name}"
    try:
        subprocess.run([PY, "-c", ADD_PARTITION, key], env=env, cwd=ROOT, check=True)
        return run_measured([str(BIN / "dagster"), "asset", "materialize", "--select", "*", "--partition", key,
                             "-m", "medflow_assets.definitions"], work / "logs" / f"{log_name}.log", env=env,
                            cwd=ROOT)
    finally:
        dst.unlink()


def run_incremental(work: Path, scale: str, landing: Path, i: int) -> dict:
    """One new 100K-line file landed on top of this scale's fresh warehouse: the run for its partition alone
    (landing, bronze + silver incremental, checks, gold rebuild), measured like the full run."""
    wh_dir = work / scale / "medflow"
    warehouse = wh_dir / "medflow.duckdb"
    env = _env(landing, warehouse, wh_dir / "dagster_home")
    before = conservation(warehouse)
    new_dir = work / scale / "incremental"
    shutil.rmtree(new_dir, ignore_errors=True)
    files = generate(new_dir / "landing", 100_000, seed=77 + i, payers=["cascade"], row_offset=4 * SCALES[scale],
                     file_tag=f"incremental{i}", manifest_dir=new_dir / "manifest")
    dst = landing / "cascade" / files[0].path.name
    shutil.copy(files[0].path, dst)
    m = run_landed_partition(work, dst, env, f"incremental-{scale}-{i}")
    row = {"ok": m.returncode == 0, "wall_s": round(m.wall_s, 2), "peak_gib": round(m.peak_gib, 3),
           "new_lines": files[0].lines}
    if row["ok"]:
        after = conservation(warehouse)
        row.update(after)
        row["added_rows_ok"] = after["bronze"] == before["bronze"] + files[0].lines
    return row


def write_adjustments(source: Path, dest: Path, lines: int) -> dict:
    """A cascade file that sends the first `lines` lines of `source` again, as a payer's adjustment file:
    of the paid lines, four in five adjusted (half the payment) and one in five reversed (every amount
    negated); every other line (denied, pending, planted defects) sent again unchanged."""
    with source.open(newline="") as f_in, dest.open("w", newline="") as f_out:
        rows = csv.reader(f_in, delimiter="|")
        out = csv.writer(f_out, delimiter="|", lineterminator="\n")
        header = next(rows)
        out.writerow(header)
        col = {name: i for i, name in enumerate(header)}
        amounts = [col["BILL_AMT_CENTS"], col["ALLOW_AMT_CENTS"], col["PAID_AMT_CENTS"]]
        counts = {"lines": 0, "adjusted": 0, "reversed": 0}
        for n, row in enumerate(rows):
            if n >= lines:
                break
            counts["lines"] += 1
            # (a paid line whose amounts are out of order stays as it was: silver rejected it, and its new
            # version must be rejected too, or it would add a line)
            if row[col["STAT_CD"]] == "P" and all(row[i].isdigit() for i in amounts) and (
                    int(row[amounts[2]]) <= int(row[amounts[1]]) <= int(row[amounts[0]])):
                if n % 5:
                    row[col["STAT_CD"]], row[col["PAID_AMT_CENTS"]] = "A", str(int(row[col["PAID_AMT_CENTS"]]) // 2)
                    counts["adjusted"] += 1
                else:
                    row[col["STAT_CD"]] = "R"
                    for i in amounts:
                        row[i] = str(-int(row[i])) if int(row[i]) else "0"
                    counts["reversed"] += 1
            out.writerow(row)
    return counts


def run_adjustments(work: Path, scale: str, landing: Path, i: int) -> dict:
    """A 100K-line adjustment file (write_adjustments) landed on top of this scale's warehouse: the run for its
    partition alone, every line a later version of one already loaded (dbt_project/macros/line_versions.sql)."""
    wh_dir = work / scale / "medflow"
    warehouse = wh_dir / "medflow.duckdb"
    env = _env(landing, warehouse, wh_dir / "dagster_home")
    before = conservation(warehouse)
    dst = landing / "cascade" / f"cascade_adjustments{i}.txt"
    made = write_adjustments(min((landing / "cascade").glob("*.txt")), dst, 100_000)
    m = run_landed_partition(work, dst, env, f"adjustments-{scale}-{i}")
    row = {"ok": m.returncode == 0, "wall_s": round(m.wall_s, 2), "peak_gib": round(m.peak_gib, 3), **made}
    if row["ok"]:
        after = conservation(warehouse)
        row.update(after)
        # every line was loaded before: silver holds as many lines, each once
        row["lines_unchanged"] = after["silver"] == before["silver"]
    return row


def _step_order(target: Path) -> int:
    return 0 if "bronze_silver" in target.name else 1


def run_checks_alone(work: Path, scale: str, landing: Path, i: int) -> dict:
    """Every Pandera check + the gate on MedFlow's fresh warehouse, as its own measured process (same
    MEDFLOW_* environment as the MedFlow run, so the dbt manifest it loads stays valid)."""
    wh_dir = work / scale / "medflow"
    warehouse = wh_dir / "medflow.duckdb"
    m = run_measured([PY, str(ROOT / "benchmarks" / "checks.py"), "--warehouse", str(warehouse)],
                     work / "logs" / f"checks-{scale}-{i}.log", cwd=ROOT,
                     env=_env(landing, warehouse, wh_dir / "dagster_home"))
    row = {"ok": m.returncode == 0, "wall_s": round(m.wall_s, 2), "peak_gib": round(m.peak_gib, 3)}
    if row["ok"]:
        row["detail"] = json.loads(m.log_path.read_text().strip().splitlines()[-1])
    return row


def run_pandas(work: Path, scale: str, landing: Path, i: int, timeout_s: float) -> dict:
    out = work / scale / "pandas_out"
    shutil.rmtree(out, ignore_errors=True)
    m = run_measured([PY, str(ROOT / "benchmarks" / "pandas_peer.py"), "--landing", str(landing), "--out", str(out)],
                     work / "logs" / f"pandas-{scale}-{i}.log", cwd=ROOT, timeout_s=timeout_s,
                     address_space_limit=23 * 2**30)
    row = {"ok": m.returncode == 0, "wall_s": round(m.wall_s, 2), "peak_gib": round(m.peak_gib, 3),
           "timed_out": m.timed_out}
    if row["ok"]:
        out_json = json.loads(m.log_path.read_text().strip().splitlines()[-1])
        row.update({"bronze": out_json["bronze_rows"], "silver": out_json["silver_rows"],
                    "superseded": out_json["superseded_rows"], "quarantine": out_json["quarantine_rows"],
                    "gold_paid": str(sum(Decimal(v) for v in out_json["paid_by_payer_month"].values()))})
    else:
        tail = m.log_path.read_text(errors="replace")[-400:]
        row["returncode"] = m.returncode
        if m.timed_out:
            row["failure"] = "timeout"
        elif "MemoryError" in tail:
            row["failure"] = "out of memory"
        elif m.returncode < 0:  # e.g. SIGSEGV when an allocation fails under the address-space limit
            row["failure"] = f"killed by {signal.Signals(-m.returncode).name} at {row['peak_gib']} GiB"
        else:
            row["failure"] = tail[-200:] or f"exit {m.returncode}"
    return row


def median(rows: list[dict], key: str):
    vals = [r[key] for r in rows if r.get("ok") and r.get(key) is not None]
    return round(statistics.median(vals), 2) if vals else None


def summarize(results: dict) -> str:
    lines = [("| scale | lines | MedFlow wall s | MedFlow peak GiB | floor wall s | floor peak GiB | MedFlow/floor "
              "| pandas wall s | pandas peak GiB | pandas/MedFlow | conserved |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scale, r in results["scales"].items():
        mf, fl, pd_ = r["medflow"], r.get("floor", []), r.get("pandas", [])
        mw, fw, pw = median(mf, "wall_s"), median(fl, "wall_s"), median(pd_, "wall_s")
        pfail = next((x.get("failure") for x in pd_ if not x.get("ok")), None)
        lines.append(
            f"| {scale} | {mf[0].get('bronze', '?') if mf else '?'} | {mw} | {median(mf, 'peak_gib')} | {fw} | "
            f"{median(fl, 'peak_gib')} | {round(mw / fw, 2) if mw and fw else '-'} | "
            f"{pw if pw else (pfail or '-')} | {median(pd_, 'peak_gib')} | "
            f"{round(pw / mw, 2) if pw and mw else '-'} | {all(x.get('conserved') for x in mf)} |")
    lines += ["", "Checks alone (every Pandera schema + the quarantine-rate gate, one process, medians):", "",
              "| scale | checks s (in process) | process wall s (with imports) | peak GiB | share of MedFlow wall |",
              "|---|---|---|---|---|"]
    for scale, r in results["scales"].items():
        ch = r.get("checks", [])
        for c in ch:
            if c.get("ok"):
                c["checks_s"] = c["detail"]["total_seconds"]
        cs, cw, mw = median(ch, "checks_s"), median(ch, "wall_s"), median(r["medflow"], "wall_s")
        lines.append(f"| {scale} | {cs} | {cw} | {median(ch, 'peak_gib')} | "
                     f"{f'{cs / mw:.1%}' if cs and mw else '-'} |")
    lines += ["", "Incremental: one new 100K-line file on top of the warehouse (its partition only, medians):", "",
              "| scale | incremental wall s | peak GiB | full refresh wall s | incremental / full |", "|---|---|---|---|---|"]
    for scale, r in results["scales"].items():
        inc = r.get("incremental", [])
        if inc:
            iw, mw = median(inc, "wall_s"), median(r["medflow"], "wall_s")
            lines.append(f"| {scale} | {iw} | {median(inc, 'peak_gib')} | {mw} | "
                         f"{f'{iw / mw:.1%}' if iw and mw else '-'} |")
    adj = {scale: r["adjustments"] for scale, r in results["scales"].items() if r.get("adjustments")}
    if adj:
        lines += ["", ("Adjustments: 100K lines of a landed file sent again (paid lines adjusted or reversed) on top "
                  "of the warehouse (medians):"), "",
                  "| scale | wall s | peak GiB | adjusted | reversed | superseded rows | silver lines unchanged |",
                  "|---|---|---|---|---|---|---|"]
        for scale, rows in adj.items():
            lines.append(f"| {scale} | {median(rows, 'wall_s')} | {median(rows, 'peak_gib')} | "
                         f"{rows[0].get('adjusted')} | {rows[0].get('reversed')} | {rows[0].get('superseded')} | "
                         f"{all(x.get('lines_unchanged') for x in rows)} |")
    cols = ("landing_step_s", "dbt_steps_s", "sql_s", "dbt_tests_s", "pandera_checks_s", "dbt_overhead_s",
            "other_steps_s", "dagster_overhead_s")
    lines += ["", "MedFlow time breakdown (medians, seconds):", "",
              "| scale | " + " | ".join(c.removesuffix("_s").replace("_", " ") for c in cols) + " |",
              "|---|" + "---|" * len(cols)]
    for scale, r in results["scales"].items():
        lines.append(f"| {scale} | " + " | ".join(str(median(r["medflow"], k)) for k in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", nargs="+", choices=list(SCALES), default=["100k", "1m", "10m"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--peers", nargs="*", choices=["floor", "pandas", "checks"], default=["floor", "pandas", "checks"])
    ap.add_argument("--incremental-scales", nargs="*", choices=list(SCALES), default=["10m"],
                    help="after each full run at these scales, land one new 100K-line file and run its partition")
    ap.add_argument("--adjustment-scales", nargs="*", choices=list(SCALES), default=["10m"],
                    help="after the incremental run at these scales, land a 100K-line adjustment file and run it")
    ap.add_argument("--pandas-runs-10m", type=int, default=1, help="pandas rounds at 10M and above (each takes minutes)")
    ap.add_argument("--pandas-timeout", type=float, default=1800)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work")
    ap.add_argument("--name", default=None, help="results file stem (default: timestamp)")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    results = {"started": datetime.now().isoformat(timespec="seconds"), "runs": args.runs, "scales": {}}
    for scale in args.scales:
        landing, gen = ensure_data(args.work, scale, args.seed)
        r = results["scales"][scale] = {"data": gen, "medflow": [], "floor": [], "pandas": [], "checks": [],
                                         "incremental": [], "adjustments": []}
        for i in range(args.runs):
            row, targets = run_medflow(args.work, scale, landing, i)
            r["medflow"].append(row)
            print(f"[{scale} #{i}] medflow {row}", flush=True)
            if "checks" in args.peers and row["ok"]:
                r["checks"].append(run_checks_alone(args.work, scale, landing, i))
                print(f"[{scale} #{i}] checks {r['checks'][-1]}", flush=True)
            if scale in args.incremental_scales and row["ok"]:
                r["incremental"].append(run_incremental(args.work, scale, landing, i))
                print(f"[{scale} #{i}] incremental {r['incremental'][-1]}", flush=True)
            if scale in args.adjustment_scales and row["ok"]:
                r["adjustments"].append(run_adjustments(args.work, scale, landing, i))
                print(f"[{scale} #{i}] adjustments {r['adjustments'][-1]}", flush=True)
            if "floor" in args.peers and targets:
                r["floor"].append(run_floor(args.work, scale, targets, i))
                print(f"[{scale} #{i}] floor {r['floor'][-1]}", flush=True)
            if "pandas" in args.peers and (SCALES[scale] < 10_000_000 or i < args.pandas_runs_10m):
                r["pandas"].append(run_pandas(args.work, scale, landing, i, args.pandas_timeout))
                print(f"[{scale} #{i}] pandas {r['pandas'][-1]}", flush=True)
    out_dir = args.results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or datetime.now().strftime("%Y%m%d-%H%M%S")
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    table = summarize(results)
    (out_dir / f"{name}.md").write_text(table)
    print(table)
    ok = all(x["ok"] and x.get("conserved") for s in results["scales"].values() for x in s["medflow"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
