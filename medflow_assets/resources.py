"""Resources: the DuckDB warehouse, the landing zone and the dbt CLI, built from settings."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource

from medflow_assets.landing.resource import LandingResource, landing_resource
from medflow_assets.settings import DBT_PROJECT_DIR, Settings

__all__ = ["LandingResource", "MedflowDbtCliResource", "WarehouseResource", "build_resources"]

WAREHOUSE_POOL = "duckdb_warehouse"  # every writer of the DuckDB file runs in this pool (limit 1)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. Row-level work happens in SQL here, never in pandas."""

    path: str
    memory_limit: str = "1200MB"
    checks_memory_limit: str = "512MB"  # read-only validation connections (they spill beyond)
    threads: int = 2

    @contextmanager
    def connect(self, read_only: bool = False):
        p = Path(self.path)
        if not read_only:
            p.parent.mkdir(parents=True, exist_ok=True)
        con = duckdb.connect(str(p), read_only=read_only,
                             config={"memory_limit": self.memory_limit, "threads": self.threads})
        try:
            yield con
        finally:
            con.close()


class MedflowDbtCliResource(DbtCliResource):
    """DbtCliResource without two start-up costs we measured at ~4 s per run (dagster-dbt 0.29.27):

    - `dbt --version` in a subprocess (2.2 s) to learn the CLI version: our dbt executable is the one of
      this interpreter's environment, so the installed dbt-core version is the answer;
    - an in-process dbt adapter (1-2 s) that dagster-dbt only uses for `fetch_row_counts` /
      `fetch_column_metadata`, which we do not call (they would contend for DuckDB's file lock; table
      metadata is read after the build instead, see transform/assets.py).
    Both hooks are private: tests/test_definitions.py fails loudly if an upgrade renames them.
    """

    @property
    def _cli_version(self):
        from dagster_dbt.core.resource import DBT_PYTHON_VERSION

        return DBT_PYTHON_VERSION

    def _initialize_dbt_core_adapter(self, args):
        return None


def dbt_executable() -> str:
    """The dbt of the running interpreter's environment (not whatever is first on PATH)."""
    exe = Path(sys.executable).parent / "dbt"
    return str(exe) if exe.exists() else "dbt"


def build_resources(settings: Settings) -> dict:
    return {
        "landing": landing_resource(settings),
        "warehouse": WarehouseResource(path=str(settings.warehouse_path), memory_limit=settings.memory_limit,
                                       checks_memory_limit=settings.checks_memory_limit, threads=settings.threads),
        "dbt": MedflowDbtCliResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR),
                              dbt_executable=dbt_executable()),
    }
