"""Storage of MedFlow's embedded Dagster instance (`data/dagster_home/dagster.yaml`): Dagster's own SQLite
storage (the same files under $DAGSTER_HOME, the same tables and migrations, the same busy timeouts), except
that each storage keeps one SQLAlchemy engine per database file and reuses its connections.

Dagster's SQLite storages create an engine and open a new SQLite connection for every statement they run, and
close both after it. A one-line `medflow-load` opens ~700 of them (185 events written; the run's and the index's
databases read ~500 times: data versions, dynamic partitions, pool slots, schema checks), ~1.2 s of its ~9.5 s on
the Xeon host (BENCHMARKS.md, Results of session 30). With connections kept, each statement is a pool checkout.

What stays as Dagster has it: every statement in its own transaction (`conn.begin()`, committed when the
block ends), so another process (the webserver, the daemon, a sensor's run) sees each write as soon as it is
committed, as before; WAL journals and busy timeouts. What is new, and how it is kept safe:
- open files: a storage keeps at most KEEP_ENGINES engines (the index, the runs database, the latest runs'
  databases); the least recently used one is closed beyond that (a connection it lent out closes when returned);
- fork: a child process never uses its parent's connections (SQLite forbids it): the engines are keyed by
  process id, and a child starts with none;
- wipe: the engines are closed before Dagster deletes the files they hold;
- dispose (the instance's exit) closes them all.

It overrides three of Dagster's private methods (`SqliteEventLogStorage._connect` and `has_table`,
`SqliteRunStorage.connect`); `tests/test_instance_storage.py` fails when an upgrade renames or reshapes them
(the Dagster family is pinned to one version in pyproject.toml).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

KEEP_ENGINES = 8
# connections an engine keeps idle (a new database's first use takes two: Dagster's schema check inside its
# creation); more are opened while threads overlap, and closed when returned
POOL_SIZE = 2


class Engines:
    """SQLAlchemy engines by connection string, for this process, at most `keep` of them (least recently used
    closed first). An engine pools its SQLite connections (POOL_SIZE kept idle)."""

    def __init__(self, connect_args: dict | None = None, keep: int = KEEP_ENGINES):
        self._connect_args = {**(connect_args or {}), "check_same_thread": False}
        self._keep = keep
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._engines: OrderedDict[str, Engine] = OrderedDict()

    def get(self, conn_string: str) -> Engine:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's connections are not ours to use or close
                self._pid, self._engines = os.getpid(), OrderedDict()
            engine = self._engines.pop(conn_string, None)
            if engine is None:
                engine = create_engine(conn_string, poolclass=QueuePool, pool_size=POOL_SIZE, max_overflow=-1,
                                       connect_args=self._connect_args)
            self._engines[conn_string] = engine
            evicted = []
            while len(self._engines) > self._keep:
                evicted.append(self._engines.popitem(last=False)[1])
        for old in evicted:
            old.dispose()
        return engine

    def __len__(self) -> int:
        return len(self._engines)

    def close(self) -> None:
        with self._lock:
            engines = list(self._engines.values()) if self._pid == os.getpid() else []
            self._engines = OrderedDict()
        for engine in engines:
            engine.dispose()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's run-sharded SQLite event log (history/runs/<run_id>.db and index.db), connections kept."""

    def __init__(self, base_dir: str, inst_data=None):
        self.engines = Engines({"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        super().__init__(base_dir, inst_data=inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self.engines.get(self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def has_table(self, table_name: str) -> bool:
        """Dagster's own asks the index database through a new engine, once per asset event with tags."""
        engine = self.engines.get(self.conn_string_for_shard(INDEX_SHARD_NAME))
        with engine.connect() as conn:
            return bool(engine.dialect.has_table(conn, table_name))

    def wipe(self) -> None:
        self.engines.close()  # Dagster deletes the run databases' files
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self.engines.close()


class PooledSqliteRunStorage(SqliteRunStorage):
    """Dagster's SQLite run storage (history/runs.db), connections kept."""

    def __init__(self, conn_string: str, inst_data=None):
        self.engines = Engines()  # Dagster's run storage sets no busy timeout: SQLite's default (5 s)
        super().__init__(conn_string, inst_data)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engines.get(self._conn_string).connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self.engines.close()


class PooledSqliteStorage(DagsterSqliteStorage):
    """`storage: custom:` in dagster.yaml, with `base_dir` the instance's folder (Dagster's default SQLite
    storage takes $DAGSTER_HOME): the same files as Dagster's `DagsterSqliteStorage`."""

    def __init__(self, base_dir: str, inst_data=None):
        # DagsterSqliteStorage.__init__ with the pooled storages (calling it would open Dagster's own first)
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        # schedules.db (sensor cursors and ticks) stays Dagster's: a few statements a tick, and Dagster's instance
        # never disposes its schedule storage, so kept connections there would outlive the instance
        self._schedule_storage = SqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        DagsterStorage.__init__(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
