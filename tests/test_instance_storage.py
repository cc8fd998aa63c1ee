"""The shipped instance (data/dagster_home/dagster.yaml) stores runs in Dagster's SQLite files with connections
kept (medflow_assets/instance_storage.py): the same files Dagster's default storage reads and writes, a few
connections per run instead of one per statement, bounded, safe across fork, wipe and exit."""

import contextlib
import multiprocessing
import os
import shutil
import sqlite3
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from medflow_assets.instance_storage import (
    KEEP_ENGINES,
    PooledSqliteEventLogStorage,
    PooledSqliteRunStorage,
)
from medflow_assets.settings import PROJECT_ROOT

SHIPPED = PROJECT_ROOT / "data" / "dagster_home" / "dagster.yaml"
PLAIN = "telemetry:\n  enabled: false\n"  # Dagster's default storage


@dg.asset
def upstream() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 3})


@dg.asset(deps=[upstream], check_specs=[dg.AssetCheckSpec("positive", asset="downstream")])
def downstream():
    yield dg.MaterializeResult(metadata={"rows": 2})
    yield dg.AssetCheckResult(check_name="positive", passed=True, metadata={"bad": 0})


ASSETS = [upstream, downstream]


def _home(tmp_path: Path, monkeypatch, yaml: str | None = None) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    if yaml is None:
        shutil.copy(SHIPPED, home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text(yaml)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def _materialize(instance) -> str:
    result = dg.materialize(ASSETS, instance=instance)
    assert result.success
    return result.run_id


def _rows_of_latest(instance, key: str) -> int:
    event = instance.get_latest_materialization_event(dg.AssetKey(key))
    return event.asset_materialization.metadata["rows"].value


def test_the_shipped_instance_uses_dagsters_files_and_dagsters_default_storage_reads_them(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch)
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PooledSqliteRunStorage)
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        instance.add_dynamic_partitions("landing_file", ["northwind/a.csv"])
        pooled_run = _materialize(instance)
    for path in ["history/runs.db", "history/runs/index.db", f"history/runs/{pooled_run}.db",
                 "schedules/schedules.db"]:
        assert (home / path).is_file(), path

    (home / "dagster.yaml").write_text(PLAIN)  # the same folder opened with Dagster's default storage
    with dg.DagsterInstance.get() as instance:
        assert type(instance.event_log_storage) is SqliteEventLogStorage
        assert type(instance.run_storage) is SqliteRunStorage
        assert instance.get_run_by_id(pooled_run).is_success
        assert _rows_of_latest(instance, "downstream") == 2
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("downstream"), "positive")])
        assert next(iter(check.values())).run_id == pooled_run
        assert instance.get_dynamic_partitions("landing_file") == ["northwind/a.csv"]
        plain_run = _materialize(instance)

    shutil.copy(SHIPPED, home / "dagster.yaml")  # and back: the pooled storage reads what the default wrote
    with dg.DagsterInstance.get() as instance:
        assert {r.run_id for r in instance.get_runs()} == {pooled_run, plain_run}
        assert len(instance.all_logs(pooled_run)) == len(instance.all_logs(plain_run)) > 10
        assert instance.get_latest_materialization_event(dg.AssetKey("upstream")).run_id == plain_run


@contextlib.contextmanager
def _connects():
    """The database files of every SQLite connection opened inside the block (SQLAlchemy calls dbapi2.connect)."""
    opened: list[str] = []
    real = sqlite3.dbapi2.connect

    def counting(*args, **kwargs):
        opened.append(Path(args[0]).name if args else kwargs.get("database"))
        return real(*args, **kwargs)

    sqlite3.dbapi2.connect = counting
    try:
        yield opened
    finally:
        sqlite3.dbapi2.connect = real


def _connections_opened(monkeypatch, instance_yaml: str | None, tmp_path: Path) -> int:
    _home(tmp_path, monkeypatch, instance_yaml)
    with dg.DagsterInstance.get() as instance:
        _materialize(instance)  # the first run creates the files
        with _connects() as opened:
            _materialize(instance)
    return len(opened)


def test_a_run_opens_a_few_connections_not_one_per_statement(tmp_path, monkeypatch):
    plain = _connections_opened(monkeypatch, PLAIN, tmp_path / "plain")
    pooled = _connections_opened(monkeypatch, None, tmp_path / "pooled")
    assert plain > 50, plain  # Dagster's default: a new connection for every statement (70 for this small run)
    assert pooled == 2, pooled  # the run's new database: its creation and Dagster's schema check inside it


def test_connections_stay_bounded_over_many_runs_and_an_evicted_database_reopens(tmp_path, monkeypatch):
    _home(tmp_path, monkeypatch)
    with dg.DagsterInstance.get() as instance:
        runs = [_materialize(instance) for _ in range(KEEP_ENGINES + 4)]
        engines = instance.event_log_storage.engines
        assert len(engines) == KEEP_ENGINES
        # database files this process holds open (SQLite may keep a second descriptor of a file it closed while
        # another connection holds it, and reuses it: files are counted, not descriptors)
        open_dbs = {p for p in (os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                                if os.path.exists(f"/proc/self/fd/{fd}"))
                    if p.startswith(str(tmp_path)) and p.endswith(".db")}
        assert len(open_dbs) <= KEEP_ENGINES + 2, open_dbs  # + runs.db and schedules.db
        assert len(open_dbs) < len(runs)
        first = instance.all_logs(runs[0])  # its engine was closed long ago
        assert first and all(e.run_id == runs[0] for e in first)
        assert instance.get_run_by_id(runs[0]).is_success


def _in_child(instance, queue) -> None:
    """Reads and runs through the instance its parent made (and used); reports the run and which databases it
    connected to (it must open its own connections: SQLite forbids using a parent's after fork)."""
    try:
        with _connects() as opened:
            runs_before = len(instance.get_runs())
            queue.put((runs_before, _materialize(instance), sorted(set(opened))))
    except Exception as e:  # noqa: BLE001 -- reported to the parent, which fails the test
        queue.put(f"error: {e!r}")


def test_a_forked_child_opens_its_own_connections_and_the_parent_goes_on(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch)
    with dg.DagsterInstance.get() as instance:
        before = _materialize(instance)  # the parent holds connections to runs.db and index.db now
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_in_child, args=(instance, queue))
        child.start()
        child.join(120)
        assert child.exitcode == 0
        reported = queue.get(timeout=5)
        assert not isinstance(reported, str), reported
        runs_before, child_run, opened = reported
        assert runs_before == 1
        assert {"runs.db", "index.db", f"{child_run}.db"} <= set(opened)
        after = _materialize(instance)
        assert {r.run_id for r in instance.get_runs()} == {before, child_run, after}
        assert instance.get_latest_materialization_event(dg.AssetKey("downstream")).run_id == after
    for db in ["history/runs.db", "history/runs/index.db"]:
        con = sqlite3.connect(home / db)
        assert con.execute("pragma integrity_check").fetchone() == ("ok",)
        con.close()


def test_wipe_closes_the_connections_before_the_files_go_and_dispose_closes_the_rest(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch)
    with dg.DagsterInstance.get() as instance:
        old = _materialize(instance)
        instance.wipe()
        assert not (home / "history" / "runs" / f"{old}.db").exists()
        held = [os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{fd}")]
        assert not [p for p in held if p.startswith(str(home)) and p.endswith("(deleted)")]
        assert instance.get_runs() == []
        new = _materialize(instance)
        assert [r.run_id for r in instance.get_runs()] == [new]
        storages = [instance.run_storage, instance.event_log_storage]
        assert all(len(s.engines) >= 1 for s in storages)
    assert [len(s.engines) for s in storages] == [0, 0]


@pytest.mark.parametrize("storage, method, params", [(SqliteEventLogStorage, "_connect", ["self", "shard"]),
                                                     (SqliteEventLogStorage, "has_table", ["self", "table_name"]),
                                                     (SqliteRunStorage, "connect", ["self"])])
def test_dagsters_methods_the_pooled_storage_replaces_are_still_there(storage, method, params):
    """An upgrade of Dagster that renames or reshapes them would leave the pooled storage's override unused."""
    import inspect

    assert method in vars(storage)
    assert list(inspect.signature(getattr(storage, method)).parameters) == params
