"""Two runs launched at once for different files both succeed: every warehouse writer is in the
duckdb_warehouse pool (limit 1 in the instance), so the second run's steps wait instead of failing on
DuckDB's file lock."""

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from medflow_assets import resources
from medflow_assets.quality.checks import GOLD_CHECKS
from medflow_assets.resources import open_warehouse
from medflow_assets.settings import PROJECT_ROOT
from medflow_assets.synth.generator import generate
from medflow_assets.transform import assets as transform_assets
from tests.helpers import materialize_graph, query

DAGSTER = str(Path(sys.executable).parent / "dagster")
LOAD = str(Path(sys.executable).parent / "medflow-load")


def test_two_runs_for_different_files_at_once_both_succeed(tmp_path):
    landing, wh, home = tmp_path / "landing", tmp_path / "wh.duckdb", tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "data" / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    generate(landing, 3000, seed=41, defect_rate=0.0, payers=["northwind"], manifest_dir=tmp_path / "m0")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MEDFLOW_")},
           "MEDFLOW_LANDING_PATH": str(landing), "MEDFLOW_WAREHOUSE_PATH": str(wh), "DAGSTER_HOME": str(home)}
    first = subprocess.run([LOAD], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600,
                           check=False)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    keys = []
    for i, payer in enumerate(["bluepeak", "cascade"]):
        f = generate(tmp_path / f"new{i}", 1200, seed=50 + i, defect_rate=0.0, payers=[payer],
                     manifest_dir=tmp_path / f"m{i + 1}")[0]
        (landing / payer).mkdir(exist_ok=True)
        shutil.copy(f.path, landing / payer / f.path.name)
        keys.append(f"{payer}/{f.path.name}")
    add = ("import sys, dagster as dg; i = dg.DagsterInstance.get(); "
           "i.add_dynamic_partitions('landing_file', sys.argv[1:])")
    subprocess.run([sys.executable, "-c", add, *keys], env=env, check=True, timeout=120)
    # output to files, not pipes: a run blocked on a full pipe while holding the pool slot would stall both
    logs = [tmp_path / f"run{i}.log" for i in range(len(keys))]
    procs = [subprocess.Popen([DAGSTER, "asset", "materialize", "--select", "*", "--partition", key, "-m",
                               "medflow_assets.definitions"], env=env, cwd=PROJECT_ROOT,
                              stdout=log.open("w"), stderr=subprocess.STDOUT) for key, log in zip(keys, logs)]
    for p in procs:
        p.wait(timeout=600)
    outputs = [log.read_text() for log in logs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert "RUN_SUCCESS" in out
        assert "Could not set lock" not in out
    assert query(wh, "SELECT count(DISTINCT source_file) FROM silver.silver_claim_lines") == [(3,)]
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines") == [(3000 + 1200 + 1200,)]
    # gold was refreshed by whichever run finished last and covers all three files
    assert query(wh, "SELECT sum(lines) FROM gold.claims_monthly_summary") == [(5400,)]


def hold_warehouse(wh: Path) -> subprocess.Popen:
    """Another process holding the warehouse file's lock until a line is written to its stdin."""
    hold = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.readline()"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(wh)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_step_waits_while_another_process_still_holds_the_warehouse(tmp_path, caplog):
    """open_warehouse waits for a lock another process holds for a moment, and fails clearly when told not
    to wait."""
    wh = tmp_path / "wh.duckdb"
    duckdb.connect(str(wh)).close()
    # the holder keeps the lock until told to let go (no timing: the order of events is what is asserted)
    holder = hold_warehouse(wh)
    with pytest.raises(duckdb.IOException, match="lock"):
        open_warehouse(str(wh), wait_s=0)
    released = threading.Event()

    def release():
        time.sleep(1.0)
        released.set()
        holder.stdin.write("go\n")
        holder.stdin.flush()

    threading.Thread(target=release, daemon=True).start()
    con = open_warehouse(str(wh), wait_s=60)
    con.close()
    holder.wait(timeout=30)
    assert released.is_set()  # it opened only after the holder let go: it waited
    assert any("held by another process; waiting" in r.getMessage() for r in caplog.records)


def built_and_held(tmp_path, monkeypatch, module):
    """The sample materialized, then its warehouse held by another process past a 0.2 s wait, until the first
    step that fails for it (through `module.held_elsewhere`) has failed: then the holder lets go."""
    wh = tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(PROJECT_ROOT / "data" / "landing", wh, instance=instance).success
    holder = hold_warehouse(wh)
    monkeypatch.setattr(resources, "LOCK_WAIT_S", 0.2)
    held_elsewhere = module.held_elsewhere

    def let_go_after_the_first_failure(warehouse):
        if holder.poll() is None:
            holder.stdin.write("go\n")
            holder.stdin.flush()
            holder.wait(timeout=30)
        return held_elsewhere(warehouse)

    monkeypatch.setattr(module, "held_elsewhere", let_go_after_the_first_failure)
    return wh, instance, holder


@pytest.mark.parametrize("held_at", ["before dbt", "when dbt connects"])
def test_a_dbt_step_held_out_past_the_wait_is_retried_by_its_retry_policy(tmp_path, monkeypatch, held_at):
    """A process outside MedFlow (a DuckDB session left open) holds the warehouse past the wait, found by the
    step before dbt or by dbt's own connection (the file taken in between): the step fails with a message
    saying so and its retry policy runs it again, which succeeds once the file is free. A run-level retry
    does not do this (run retries are for runs whose process died)."""
    wh, instance, holder = built_and_held(tmp_path, monkeypatch, transform_assets)
    if held_at == "when dbt connects":  # the step's own wait saw the file free
        monkeypatch.setattr(transform_assets, "_prepare", lambda context, warehouse: None)
    result = materialize_graph(PROJECT_ROOT / "data" / "landing", wh, instance=instance, partitions=[],
                               selection=dg.AssetSelection.groups("gold"))
    assert result.success
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retried] == ["medflow_dbt_gold"]
    assert "is held by another process" in retried[0].event_specific_data.error.to_string()
    assert holder.returncode == 0
    assert query(wh, "SELECT count(*) > 0 FROM gold.claims_monthly_summary") == [(True,)]


@pytest.mark.parametrize("step", ["gold_quality", "quality__data_quality_scorecard"])
def test_a_check_step_or_the_scorecard_held_out_past_the_wait_is_retried(tmp_path, monkeypatch, step):
    """The Pandera check steps and the scorecard read or write the warehouse too: held past the wait by a
    process outside MedFlow, they fail saying so and their retry policy runs them again, like the dbt steps;
    each check is reported once, by the attempt that ran."""
    wh, instance, holder = built_and_held(tmp_path, monkeypatch, resources)
    selection = (dg.AssetSelection.checks(*[c.key for c in GOLD_CHECKS])
                 if step == "gold_quality" else dg.AssetSelection.assets(["quality", "data_quality_scorecard"]))
    result = materialize_graph(PROJECT_ROOT / "data" / "landing", wh, instance=instance, partitions=[],
                               selection=selection)
    assert result.success
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retried] == [step]
    assert "is held by another process" in retried[0].event_specific_data.error.to_string()
    assert holder.returncode == 0
    if step == "gold_quality":
        evaluations = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        names = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations]
        assert sorted(names) == sorted((c.asset_key.to_user_string(), c.name) for c in GOLD_CHECKS)
        assert all(e.passed for e in evaluations)
    else:
        [(runs,)] = query(wh, "SELECT count(DISTINCT run_id) FROM quality.scorecard_history")
        assert runs == 2  # the first load's measurement and this run's, once


def test_a_step_failing_for_a_cause_that_is_not_transient_fails_at_once_naming_it(tmp_path, monkeypatch):
    """TRANSIENT_RETRY is for causes that pass (a held warehouse, an unreadable landing zone); a bug or a
    broken warehouse fails the step at the first attempt, with the error in its message, not four times."""
    from medflow_assets.landing import assets as landing_assets

    def broken(*args, **kwargs):
        raise RuntimeError("the registry cannot be written")

    monkeypatch.setattr(landing_assets, "write_registry", broken)
    result = materialize_graph(PROJECT_ROOT / "data" / "landing", tmp_path / "wh.duckdb",
                               selection=dg.AssetSelection.assets("landing_files"))
    assert not result.success
    assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []
    [failure] = result.get_step_failure_events()
    assert failure.step_key == "landing_files"
    assert ("landing failed: RuntimeError: the registry cannot be written (not retried: it is not a transient "
            "cause") in failure.event_specific_data.error.to_string()
