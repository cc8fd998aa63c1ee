"""Resources: the DuckDB warehouse, the landing zone and dbt (run in process), built from settings."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from medflow_assets.landing.resource import LandingResource, landing_resource
from medflow_assets.settings import DBT_PROJECT_DIR, Settings
from medflow_assets.transform.dbt_core import DbtCoreResource

__all__ = ["DbtCoreResource", "LandingResource", "WarehouseResource", "build_resources"]

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


def build_resources(settings: Settings) -> dict:
    return {
        "landing": landing_resource(settings),
        "warehouse": WarehouseResource(path=str(settings.warehouse_path), memory_limit=settings.memory_limit,
                                       checks_memory_limit=settings.checks_memory_limit, threads=settings.threads),
        "dbt": DbtCoreResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR),
                               target_root=str(DBT_PROJECT_DIR / "target")),
    }
