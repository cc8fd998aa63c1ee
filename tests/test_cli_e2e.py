"""The README's first command on this checkout: install (idempotent) and materialize the whole graph with
`dagster asset materialize --select '*'` on the committed sample, no environment variable set."""

import contextlib
import os
import shutil
import subprocess

from medflow_assets.settings import PROJECT_ROOT
from tests.helpers import query


@contextlib.contextmanager
def set_aside(paths, keep):
    """Move these files and folders of the working tree into `keep` for the duration, and put them back afterwards (what
    the test made in their place goes), so a developer's own warehouse and manifest survive the test."""
    moved = []
    try:
        for i, path in enumerate(paths):
            if path.exists():
                moved.append((path, keep / f"{i}-{path.name}"))
                shutil.move(path, moved[-1][1])
        yield
    finally:
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        for path, kept in moved:
            shutil.move(kept, path)


def test_readme_materialize_command_builds_gold_from_the_sample(tmp_path):
    warehouse = PROJECT_ROOT / "data" / "warehouse" / "medflow.duckdb"
    # a fresh clone has no dbt manifest and no parse: the definitions must prepare them themselves
    manifest = PROJECT_ROOT / "dbt_project" / "target" / "manifest.json"
    parses = PROJECT_ROOT / "dbt_project" / "target" / "parses"
    keep = tmp_path / "kept"
    keep.mkdir()
    with set_aside([warehouse, warehouse.with_name(warehouse.name + ".wal"), manifest, parses], keep):
        assert not parses.exists()
        run_readme_command_and_check(tmp_path, warehouse, manifest)
        # the parse of the default settings kept its manifest, the same as the copy dbt's tools read
        [prepared] = parses.glob("*/manifest-*.json")
        assert prepared.read_bytes() == manifest.read_bytes()


def run_readme_command_and_check(tmp_path, warehouse, manifest):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDFLOW_")}
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    assert not warehouse.exists() and not manifest.exists()
    proc = subprocess.run(["bash", ".ci/materialize"], check=False, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stdout + proc.stderr
    assert "DEVELOPMENT pseudonymization key" in proc.stdout + proc.stderr
    assert manifest.exists()
    counts = dict(query(warehouse, """
        SELECT 'bronze', count(*) FROM bronze.bronze_claim_lines UNION ALL
        SELECT 'silver', count(*) FROM silver.silver_claim_lines UNION ALL
        SELECT 'quarantine', count(*) FROM silver.silver_claims_quarantine UNION ALL
        SELECT 'gold_months', count(*) FROM gold.claims_monthly_summary UNION ALL
        SELECT 'gold_providers', count(*) FROM gold.provider_performance"""))
    assert counts["bronze"] == 6006
    assert counts["bronze"] == counts["silver"] + counts["quarantine"]
    assert counts["gold_months"] > 30 and counts["gold_providers"] > 20


def test_medflow_load_without_dagster_home_uses_the_projects_instance(tmp_path, monkeypatch, capsys):
    from medflow_assets.landing import first_load
    from tests.helpers import medflow_env

    home = tmp_path / "dagster_home"
    monkeypatch.setattr(first_load, "DEFAULT_DAGSTER_HOME", home)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    (tmp_path / "landing").mkdir()
    with medflow_env(landing_path=tmp_path / "landing", warehouse_path=tmp_path / "wh.duckdb"):
        assert first_load.main([]) == 1  # an empty landing zone: nothing to run, said so
    out = capsys.readouterr()
    assert f"medflow-load: DAGSTER_HOME not set; using {home}" in out.out
    assert "no landed files found" in out.err
    assert os.environ["DAGSTER_HOME"] == str(home) and home.is_dir()


def _medflow_load(tmp_path, log, **env_values):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDFLOW_")}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), MEDFLOW_WAREHOUSE_PATH=str(tmp_path / "w.duckdb"), DO_NOT_TRACK="1",
               **env_values)
    (tmp_path / "home").mkdir(exist_ok=True)
    shutil.copy(PROJECT_ROOT / "data" / "dagster_home" / "dagster.yaml", tmp_path / "home" / "dagster.yaml")
    with open(log, "w") as out:
        return subprocess.Popen([str(PROJECT_ROOT / ".venv" / "bin" / "medflow-load")], env=env, cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT)


def test_a_medflow_load_after_one_killed_mid_run_frees_its_pool_slot_and_loads(tmp_path, monkeypatch):
    """A medflow-load killed in its run (kill -9, the out-of-memory killer) left the run STARTED with the
    `duckdb_warehouse` pool slot, and every later run waited for it for ever (found by a review). The next
    medflow-load marks that run failed, frees the slot and loads."""
    import signal
    import time

    import dagster as dg

    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _medflow_load(tmp_path, first_log)
    deadline = time.time() + 180
    while "medflow_dbt_bronze_silver - STEP_START" not in first_log.read_text():
        assert first.poll() is None and time.time() < deadline, first_log.read_text()[-1500:]
        time.sleep(0.2)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    second = _medflow_load(tmp_path, second_log)
    try:
        assert second.wait(timeout=180) == 0, second_log.read_text()[-1500:]
    finally:
        if second.poll() is None:
            os.kill(second.pid, signal.SIGKILL)
            second.wait()
    text = second_log.read_text()
    assert "of an earlier medflow-load never finished (its process was killed?); marked failed and its pool slot " \
           "freed" in text
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))  # the shipped dagster.yaml reads it
    with dg.DagsterInstance.get() as instance:
        statuses = [r.status for r in reversed(instance.get_runs())]  # oldest first
    assert statuses == [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS]
    assert query(tmp_path / "w.duckdb", "SELECT count(*) > 0 FROM gold.claims_monthly_summary") == [(True,)]


def test_medflow_load_names_a_bad_setting_in_one_line(tmp_path):
    proc = _medflow_load(tmp_path, tmp_path / "out.log", MEDFLOW_DUCKDB_THREADS="0")
    assert proc.wait(timeout=120) == 2
    text = (tmp_path / "out.log").read_text()
    assert "medflow-load: MEDFLOW_DUCKDB_THREADS='0' must be 1 or more." in text and "Traceback" not in text
