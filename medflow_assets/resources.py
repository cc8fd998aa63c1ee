"""Resources: the DuckDB warehouse, the landing zone and dbt (run in process), built from settings."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from medflow_assets.landing.partitions import TRANSIENT_RETRY
from medflow_assets.landing.resource import LandingResource, landing_resource
from medflow_assets.settings import DBT_PROJECT_DIR, WAREHOUSE_STORAGE_VERSION, Settings
from medflow_assets.transform.dbt_core import DbtCoreResource

__all__ = ["DbtCoreResource", "LandingResource", "WarehouseResource", "build_resources"]

WAREHOUSE_POOL = "duckdb_warehouse"  # every writer of the DuckDB file runs in this pool (limit 1)
LOCK_WAIT_S = 60.0
_LOCKED = "could not set lock on file"  # DuckDB's error when another process holds the file


def warehouse_locked(message: str) -> bool:
    """Whether a DuckDB (or dbt) error says another process holds the warehouse file."""
    return _LOCKED in message.lower()


_log = logging.getLogger("medflow.warehouse")


def held_elsewhere(warehouse: WarehouseResource) -> dg.Failure:
    """Another process (not a MedFlow step: those queue on the pool) holds the warehouse file: transient, so
    the step's retry policy tries again."""
    return dg.Failure(description=f"The warehouse {warehouse.path} is held by another process (a DuckDB session "
                                  f"left open?) past the {LOCK_WAIT_S:.0f} s wait; the step's retry policy runs it again "
                                  f"(up to {TRANSIENT_RETRY.max_retries} retries with backoff).", allow_retries=True)


@contextmanager
def only_transient_retried(step: str, warehouse: WarehouseResource):
    """A step's retry policy (TRANSIENT_RETRY) retries whatever it raises. Inside this block, a warehouse held
    by another process is retried, a dg.Failure keeps its own allow_retries, and any other exception fails the
    step at once, named: the same input would fail the same way again (a retried bug cost ~15 s and four
    copies of its error)."""
    try:
        yield
    except (dg.Failure, dg.RetryRequested):
        raise
    except duckdb.IOException as exc:
        if warehouse_locked(str(exc)):
            raise held_elsewhere(warehouse) from exc
        raise _not_retried(step, exc) from exc
    except Exception as exc:
        raise _not_retried(step, exc) from exc


def _not_retried(step: str, exc: Exception) -> dg.Failure:
    return dg.Failure(description=f"{step} failed: {type(exc).__name__}: {exc} (not retried: it is not a transient "
                                  "cause, so it would fail the same way again)", allow_retries=False)


def open_warehouse(path: str, read_only: bool = False, config: dict | None = None,
                   wait_s: float | None = None) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, waiting (up to wait_s) while another process still holds the file's lock. The pool
    keeps two runs' steps apart, but a process can hold the lock for a moment after its step ended (its
    connection is released when the last reference goes); without the wait the other run's step fails."""
    wait_s = LOCK_WAIT_S if wait_s is None else wait_s
    config = dict(config or {})
    if not read_only:
        config.setdefault("storage_compatibility_version", WAREHOUSE_STORAGE_VERSION)
    deadline, delay, warned = time.monotonic() + wait_s, 0.1, False
    while True:
        try:
            return duckdb.connect(path, read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if not warehouse_locked(str(exc)) or time.monotonic() >= deadline:
                raise
            if not warned:
                _log.warning(f"the warehouse {path} is held by another process; waiting up to {wait_s:.0f} s")
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. Row-level work happens in SQL here, never in pandas."""

    path: str
    memory_limit: str = "800MB"
    checks_memory_limit: str = "512MB"  # read-only validation connections (they spill beyond)
    threads: int = 2

    @contextmanager
    def connect(self, read_only: bool = False):
        p = Path(self.path)
        if not read_only:
            p.parent.mkdir(parents=True, exist_ok=True)
        con = open_warehouse(str(p), read_only=read_only,
                             config={"memory_limit": self.memory_limit, "threads": self.threads})
        try:
            yield con
        finally:
            con.close()


def build_resources(settings: Settings) -> dict:
    return {
        "landing": landing_resource(settings),
        "warehouse": WarehouseResource(path=str(settings.warehouse_path), memory_limit=settings.memory_limit,
                                       checks_memory_limit=settings.checks_memory_limit, threads=settings.threads),
        "dbt": DbtCoreResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR),
                               target_root=str(DBT_PROJECT_DIR / "target")),
    }
