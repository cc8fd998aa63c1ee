"""The Definitions object: what the graph contains and how it is grouped."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from medflow_assets.definitions import defs
from medflow_assets.resources import DbtCoreResource
from medflow_assets.settings import DBT_PROJECT_DIR, PROJECT_ROOT
from tests.helpers import SAMPLE_LANDING, materialize_graph, query


def _specs():
    return {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}


def test_graph_has_landing_bronze_silver_gold_groups():
    groups = {}
    for key, spec in _specs().items():
        groups.setdefault(spec.group_name, set()).add(key)
    assert groups["landing"] == {"landing_files"}
    assert groups["quality"] == {"quality/data_quality_scorecard"}
    # bronze is a view over two shard tables that load side by side (macros/bronze_shards.sql)
    assert groups["bronze"] == {"bronze/bronze_claim_lines", "bronze/bronze_claim_lines_shard_0",
                                "bronze/bronze_claim_lines_shard_1"}
    assert {"silver/silver_claim_lines", "silver/silver_claims_quarantine",
            "silver/silver_data_quality_log"} <= groups["silver"]
    assert groups["gold"] == {"gold/claims_monthly_summary", "gold/claims_approval_funnel",
                              "gold/provider_performance", "gold/department_revenue",
                              "gold/payer_provider_stats", "gold/payer_department_stats"}


def test_bronze_depends_on_the_landing_registry():
    for shard in ("bronze/bronze_claim_lines_shard_0", "bronze/bronze_claim_lines_shard_1"):
        assert {d.asset_key.to_user_string() for d in _specs()[shard].deps} == {"landing_files"}
    deps = {d.asset_key.to_user_string() for d in _specs()["bronze/bronze_claim_lines"].deps}
    assert deps == {"bronze/bronze_claim_lines_shard_0", "bronze/bronze_claim_lines_shard_1"}


def test_every_step_touching_the_warehouse_is_in_the_duckdb_pool():
    for d in [*defs.assets, *defs.asset_checks]:
        assert d.op.pool == "duckdb_warehouse", d

def test_every_silver_and_gold_asset_has_a_check_and_a_blocking_one_where_it_gates():
    graph = defs.resolve_asset_graph()
    checks_by_asset: dict[str, list] = {}
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        checks_by_asset.setdefault(check_key.asset_key.to_user_string(), []).append(spec)
    # bronze's shard tables are checked through the view over them (bronze/bronze_claim_lines)
    layered = [k for k, spec in _specs().items()
               if spec.group_name in ("bronze", "silver", "gold") and "_shard_" not in k]
    assert len(layered) == 12
    for key in layered:
        names = {c.name for c in checks_by_asset.get(key, [])}
        assert any(n.startswith("pandera_") for n in names), f"{key} has no Pandera check"
    silver_blocking = {c.name for c in checks_by_asset["silver/silver_claim_lines"] if c.blocking}
    assert {"pandera_SilverClaimLines", "quarantine_rate_gate"} <= silver_blocking
    for gold in ("claims_monthly_summary", "claims_approval_funnel", "provider_performance", "department_revenue",
                 "payer_provider_stats", "payer_department_stats"):
        assert any(c.blocking and c.name.startswith("pandera_") for c in checks_by_asset[f"gold/{gold}"])


def test_dbt_runs_in_process(tmp_path, monkeypatch):
    """dbt runs through dbtRunner in the Dagster process: a run for one file builds bronze to gold and no
    process is started (dagster-dbt's DbtCliResource would start `dbt` once per step)."""
    assert isinstance(defs.resources["dbt"], DbtCoreResource)
    started = []
    real_popen = subprocess.Popen

    def recording_popen(args, *a, **kw):
        started.append(args)
        return real_popen(args, *a, **kw)

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    warehouse = tmp_path / "wh.duckdb"
    result = materialize_graph(SAMPLE_LANDING, warehouse, partitions=["cascade/cascade_claims_001.txt"])
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"bronze/bronze_claim_lines", "silver/silver_claim_lines_validated",
            "gold/claims_monthly_summary"} <= materialized
    assert query(warehouse, "SELECT count(*) FROM silver.silver_claim_lines")[0][0] > 0
    assert [args for args in started if args[:1] != ["uname"]] == []  # platform.processor() may run `uname -p`
    # silver_members waits for silver_claim_lines_validated (meta.order_after: side by side, two 10M-line
    # statements are slower than one after the other), without an edge in the asset graph
    (target,) = DBT_PROJECT_DIR.glob(f"target/medflow_dbt_bronze_silver-{result.run_id[:8]}-*")
    timing = {r["unique_id"].split(".")[-1]: {t["name"]: t for t in r["timing"]}
              for r in json.loads((target / "run_results.json").read_text())["results"]}
    assert (timing["silver_members"]["execute"]["started_at"]
            >= timing["silver_claim_lines_validated"]["execute"]["completed_at"])
    assert "silver/silver_claim_lines_validated" not in {
        d.asset_key.to_user_string() for d in _specs()["silver/silver_members"].deps}


def test_dbt_prunes_old_target_folders(tmp_path):
    """Each dbt invocation gets its own target folder (compiled SQL, run_results.json, dbt.log) and only the
    newest `keep_targets` are kept."""
    res = defs.resources["dbt"]
    pruned = DbtCoreResource(project_dir=res.project_dir, profiles_dir=res.profiles_dir,
                             target_root=str(tmp_path), keep_targets=5)
    for i in range(8):
        (tmp_path / f"medflow_dbt_gold-run{i}").mkdir()
        os.utime(tmp_path / f"medflow_dbt_gold-run{i}", (1_000_000 + i, 1_000_000 + i))
    (tmp_path / "manifest.json").write_text("{}")  # not a run folder: never pruned
    context = SimpleNamespace(op_def=SimpleNamespace(name="medflow_dbt_gold"), run=SimpleNamespace(run_id="abcdef0123456789"))
    new = pruned._target_path(context)
    assert new.name.startswith("medflow_dbt_gold-abcdef01-")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["manifest.json", *[f"medflow_dbt_gold-run{i}" for i in range(4, 8)]]


def test_sensors_and_the_instance_keep_files_flowing_without_a_hand_on_them(tmp_path, monkeypatch):
    """The landing sensors and the automation sensor start running; the instance of the README's commands
    retries a run whose process died (not one whose step failed) and keeps skipped sensor ticks (each holds
    the cursor) one day."""
    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorType, TickStatus

    from medflow_assets.settings import PROJECT_ROOT

    assert {s.name: s.default_status for s in defs.sensors} == {
        "local_landing_sensor": dg.DefaultSensorStatus.RUNNING, "s3_landing_sensor": dg.DefaultSensorStatus.RUNNING,
        "medflow_automation": dg.DefaultSensorStatus.RUNNING}
    shutil.copy(PROJECT_ROOT / "data" / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # its storage's folder (medflow_assets/instance_storage.py)
    with dg.DagsterInstance.get() as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        # a step that failed (a blocking check, a dbt error) would fail the same way again: not rerun whole
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.get_tick_retention_settings(InstigatorType.SENSOR)[TickStatus.SKIPPED] == 1


def test_the_manifest_is_parsed_again_when_project_content_changes_whatever_the_mtimes(tmp_path, monkeypatch):
    """dagster-dbt's asset graph comes from manifest.json: it is re-parsed when a project file's content
    changes, also when the new file carries an older mtime than the manifest (a release copied with
    `rsync -a`), and not when nothing changed."""
    from dagster_dbt import DbtProject

    from medflow_assets.transform import project as project_module

    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    project = DbtProject(project_dir=copy, profiles_dir=copy)
    parses = []
    real_parse = project_module.dbt_parse
    monkeypatch.setattr(project_module, "dbt_parse", lambda *a, **kw: parses.append(a) or real_parse(*a, **kw))

    manifest = project_module.ensure_manifest(project)
    assert len(parses) == 1 and "model.medflow.claims_monthly_summary" in manifest.read_text()
    project_module.ensure_manifest(project)
    assert len(parses) == 1  # unchanged: no parse

    old = 946_684_800  # 2000-01-01, older than the manifest; rsync -a sets folders' mtimes too
    gold = copy / "models" / "gold"
    summary = gold / "claims_monthly_summary.sql"
    summary.write_text(summary.read_text() + "\n-- released later\n")
    os.utime(summary, (old, old))
    os.utime(gold, (old, old))
    first = manifest
    manifest = project_module.ensure_manifest(project)
    assert manifest != first and first.exists()  # the earlier version's manifest is never rewritten
    assert len(parses) == 2 and "-- released later" in manifest.read_text()

    new_model = gold / "released_later.sql"
    new_model.write_text("select 1 as one\n")
    os.utime(new_model, (old, old))
    os.utime(gold, (old, old))
    manifest = project_module.ensure_manifest(project)
    assert len(parses) == 3 and "model.medflow.released_later" in manifest.read_text()


def test_going_back_to_settings_parsed_before_copies_their_manifest_and_parses_nothing(tmp_path, monkeypatch):
    """Each parse's settings (target, warehouse file name) keep their own dbt target folder: switching from a
    warehouse of one name to another's and back, or from dev to prod and back, parses each settings once, and
    the manifest returned is always the one of the current settings. A project file changed since is parsed
    again (dbt's partial parse, in that settings' folder)."""
    from dagster_dbt import DbtProject

    from medflow_assets.transform import project as project_module

    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    project = DbtProject(project_dir=copy, profiles_dir=copy)
    parses = []
    real_parse = project_module.dbt_parse
    monkeypatch.setattr(project_module, "dbt_parse",
                        lambda *a, **kw: parses.append(os.environ["MEDFLOW_WAREHOUSE_PATH"]) or real_parse(*a, **kw))
    monkeypatch.setenv("MEDFLOW_PII_KEY", "a-key-that-must-never-be-written-to-disk")

    def databases(manifest):
        nodes = json.loads(manifest.read_text())["nodes"].values()
        return {n["database"] for n in nodes if n["resource_type"] == "model"}

    seen = []
    for name, target in [("alpha", "dev"), ("beta", "dev"), ("alpha", "dev"), ("beta", "dev"), ("alpha", "prod"),
                         ("alpha", "dev"), ("alpha", "prod")]:
        monkeypatch.setenv("MEDFLOW_WAREHOUSE_PATH", str(tmp_path / "wh" / f"{name}.duckdb"))
        monkeypatch.setenv("MEDFLOW_TARGET", target)
        manifest = project_module.ensure_manifest(project)
        assert databases(manifest) == {name}
        seen.append((name, target, len(parses)))
    # alpha/dev, beta/dev and alpha/prod parsed once each; every later switch parsed nothing
    assert [n for *_, n in seen] == [1, 2, 2, 2, 3, 3, 3]
    shared = copy / "target" / "manifest.json"  # the copy dbt's own tools read: put back when removed
    shared.unlink()
    assert project_module.ensure_manifest(project) == manifest and len(parses) == 3
    assert shared.read_bytes() == manifest.read_bytes()
    folders = sorted((project.project_dir / "target" / "parses").iterdir())
    assert len(folders) == 3
    for folder in folders:  # the settings a folder is for, without the PII key (a parse never needs it)
        assert "a-key-that-must-never" not in (folder / "settings.json").read_text()
        assert (folder / "partial_parse.msgpack").exists()

    summary = copy / "models" / "gold" / "claims_monthly_summary.sql"
    summary.write_text(summary.read_text() + "\n-- released later\n")
    manifest = project_module.ensure_manifest(project)  # alpha/prod: its files changed
    assert len(parses) == 4 and "-- released later" in manifest.read_text()
    monkeypatch.setenv("MEDFLOW_TARGET", "dev")
    manifest = project_module.ensure_manifest(project)  # alpha/dev: parsed before the change, so again
    assert len(parses) == 5 and "-- released later" in manifest.read_text() and databases(manifest) == {"alpha"}


PREPARE = """
import json, sys, time
from dagster_dbt import DbtProject
from medflow_assets.transform import project as pm
real = pm.dbt_parse
def slow_parse(*a, **kw):  # every process is inside the window before the first parse ends
    print("PARSED", flush=True)
    time.sleep(2)
    return real(*a, **kw)
pm.dbt_parse = slow_parse
manifest = pm.ensure_manifest(DbtProject(project_dir=sys.argv[1], profiles_dir=sys.argv[1]))
assert "model.medflow.claims_monthly_summary" in json.loads(manifest.read_text())["nodes"]
print("MANIFEST", manifest, flush=True)
"""


def test_processes_preparing_the_manifest_at_once_parse_once_and_read_the_same_whole_file(tmp_path):
    """Sensor runs and CLI commands start at once: the first process parses under the parse lock, the others
    wait and read the manifest it wrote (dbt writes its files in place: two parses in one folder could read
    each other's half-written files)."""
    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    env = {**os.environ, "MEDFLOW_WAREHOUSE_PATH": str(tmp_path / "wh.duckdb"), "MEDFLOW_TARGET": "dev"}
    procs = [subprocess.Popen([sys.executable, "-c", PREPARE, str(copy)], env=env, cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    assert sum(out.count("PARSED") for out, _ in outs) == 1
    manifests = {line.split(" ", 1)[1] for out, _ in outs for line in out.splitlines() if line.startswith("MANIFEST")}
    assert len(manifests) == 1 and not list((copy / "target").rglob("*.tmp"))


def test_a_project_prepared_in_a_folder_the_process_cannot_write_is_read_without_parsing(tmp_path, monkeypatch):
    """A deployment can ship the project with its manifest prepared, in a folder its user cannot write: reading
    that manifest succeeds with every write refused and changes nothing on disk (the lock, the copy to
    target/manifest.json and settings.json are best effort)."""
    from dagster_dbt import DbtProject

    from medflow_assets.transform import project as project_module

    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    project = DbtProject(project_dir=copy, profiles_dir=copy)
    monkeypatch.setenv("MEDFLOW_WAREHOUSE_PATH", str(tmp_path / "wh.duckdb"))
    prepared = project_module.ensure_manifest(project)
    (copy / "target" / "manifest.json").unlink()

    def no_writes(*a, **kw):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(project_module, "dbt_parse", no_writes)
    monkeypatch.setattr(Path, "write_text", no_writes)
    monkeypatch.setattr(Path, "mkdir", no_writes)
    monkeypatch.setattr(project_module.shutil, "copyfile", no_writes)
    real_open = open

    def read_only_open(path, mode="r", *a, **kw):
        if set(mode) & set("wax+"):
            no_writes()
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", read_only_open)

    def tree():
        return sorted((str(p), p.stat().st_mtime_ns) for p in copy.rglob("*"))

    before = tree()
    assert project_module.ensure_manifest(project) == prepared
    assert tree() == before and not (copy / "target" / "manifest.json").exists()  # nothing written, touched or copied


def test_a_manifest_removed_before_it_was_read_is_prepared_again(tmp_path, monkeypatch):
    """Another process may prune a parse folder between this one finding its manifest and reading it: the
    manifest is then prepared again instead of the definitions failing to load."""
    from dagster_dbt import DbtProject
    from dagster_dbt.dbt_manifest import read_manifest_path

    from medflow_assets.transform import project as project_module

    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", ".user.yml"))
    project = DbtProject(project_dir=copy, profiles_dir=copy)
    monkeypatch.setenv("MEDFLOW_WAREHOUSE_PATH", str(tmp_path / "wh.duckdb"))
    prepared = project_module.ensure_manifest(project)
    read_manifest_path.cache_clear()  # as in a new process
    real_exists = Path.exists
    pruned = []

    def pruned_after_the_check(path):  # the folder goes right after ensure_manifest saw the manifest
        found = real_exists(path)
        if path == prepared and found and not pruned:
            shutil.rmtree(path.parent)
            pruned.append(path)
        return found

    monkeypatch.setattr(Path, "exists", pruned_after_the_check)
    assert project_module.ensure_manifest(project) == prepared and pruned == [prepared]
    monkeypatch.undo()
    assert "model.medflow.claims_monthly_summary" in json.loads(prepared.read_text())["nodes"]


def test_parse_folders_beyond_the_kept_number_go_when_no_parse_used_them_lately(tmp_path):
    from medflow_assets.transform import dbt_core

    env = {"MEDFLOW_TARGET": "dev", "MEDFLOW_PII_KEY": "k"}

    def folder_for(warehouse):
        return dbt_core.parse_folder(tmp_path, tmp_path / "project", {**env, "MEDFLOW_WAREHOUSE_PATH": warehouse})

    folders = [folder_for(f"/x/{i}.duckdb") for i in range(dbt_core.KEEP_PARSE_FOLDERS + 3)]
    assert len(set(folders)) == len(folders) == len(list((tmp_path / "parses").iterdir()))
    assert dbt_core.prune_parse_folders(tmp_path) == []  # 11 folders, all used just now: none removed
    long_ago = 946_684_800
    for i, folder in enumerate(folders[:5]):  # five folders no parse used for long (folders[4] last), the rest now
        os.utime(folder / "settings.json", (long_ago + i, long_ago + i))
    (folders[3] / "settings.json").unlink()  # as while a process writes it: the folder's own time counts
    os.utime(folders[3], (long_ago + 3, long_ago + 3))
    again = folder_for("/y/0.duckdb")
    assert again == folders[0]  # the same settings (another folder of the warehouse): the same parse folder
    # 11 folders, 8 kept: the three least recently used go; recently used ones stay whatever their number
    assert set(dbt_core.prune_parse_folders(tmp_path, keep=again)) == set(folders[1:4])
    left = set((tmp_path / "parses").iterdir())
    assert left == {folders[0], *folders[4:]} and len(left) == dbt_core.KEEP_PARSE_FOLDERS
    recent = folder_for("/x/new.duckdb")
    # nine folders: the one left that no parse used lately goes; those used lately all stay
    assert dbt_core.prune_parse_folders(tmp_path, keep=recent) == [folders[4]]
    assert set((tmp_path / "parses").iterdir()) == (left - {folders[4]}) | {recent}


def test_one_parse_serves_every_warehouse_of_a_name_and_each_run_connects_with_its_own_settings(tmp_path,
                                                                                                 monkeypatch):
    """dbt's parse never opens the warehouse, so MedFlow parses with its folder and DuckDB's settings left out
    (`parse_env`): a run on a warehouse of the same name in another folder, with another memory limit and thread
    count, parses nothing again, yet connects to its own file with its own settings. Another file name is parsed
    again: dbt-duckdb names the database after the file."""
    import duckdb

    from medflow_assets.transform import connection_plugin, dbt_core

    parses, seen = [], []
    real_parse, real_configure = dbt_core.dbt_parse, connection_plugin.Plugin.configure_cursor
    monkeypatch.setattr(dbt_core, "dbt_parse",
                        lambda *a, **kw: parses.append(os.environ["MEDFLOW_WAREHOUSE_PATH"]) or real_parse(*a, **kw))

    def recording_configure(plugin, cursor):  # dbt-duckdb applies the profile's settings to each cursor first
        real_configure(plugin, cursor)
        seen.append(cursor.execute("SELECT (SELECT path FROM duckdb_databases() WHERE database_name = "
                                   "current_database()), current_setting('memory_limit'), current_setting('threads')"
                                   ).fetchone())

    monkeypatch.setattr(connection_plugin.Plugin, "configure_cursor", recording_configure)
    one = ["cascade/cascade_claims_001.txt"]
    a, b, c = tmp_path / "a" / "wh.duckdb", tmp_path / "b" / "wh.duckdb", tmp_path / "c" / "other.duckdb"
    for wh in (a, b, c):
        wh.parent.mkdir()
    assert materialize_graph(SAMPLE_LANDING, a, partitions=one).success
    before = len(parses)  # 0 when an earlier test in this process already parsed for "wh.duckdb"
    assert parses == [f"{dbt_core.PARSE_ONLY_DIR}/wh.duckdb"] * before
    seen.clear()
    assert materialize_graph(SAMPLE_LANDING, b, partitions=one, duckdb_memory_limit="300MB", duckdb_threads="1").success
    assert len(parses) == before  # nothing parsed again
    with duckdb.connect() as con:
        con.execute("SET memory_limit = '300MB'")
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert seen and set(seen) == {(str(b), limit, 1)}
    lines = "SELECT count(*) FROM silver.silver_claim_lines"
    assert query(a, lines) == query(b, lines) and query(b, lines)[0][0] > 0
    assert materialize_graph(SAMPLE_LANDING, c, partitions=one).success
    assert parses[before:] == [f"{dbt_core.PARSE_ONLY_DIR}/other.duckdb"]
    assert query(c, lines) == query(a, lines)  # (a parse that opened its warehouse would have failed: no folder)
