"""Resources: the DuckDB warehouse and the dbt CLI, built from settings."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource

from medflow_assets.settings import DBT_PROJECT_DIR, Settings

WAREHOUSE_POOL = "duckdb_warehouse"  # every writer of the DuckDB file runs in this pool (limit 1)


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. Row-level work happens in SQL here, never in pandas."""

    path: str
    memory_limit: str = "1536MB"
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


class LandingResource(dg.ConfigurableResource):
    """The landing zone: a local folder, or S3 (dagster-aws S3Resource) when `bucket` is set.

    Credentials are EnvVar references (shown by name in the UI, never by value)."""

    local_path: str = ""
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def zone(self):
        from medflow_assets.landing.zone import LocalLanding, S3Landing

        if not self.bucket:
            return LocalLanding(Path(self.local_path))
        return S3Landing(self.s3_client(), self.bucket, self.prefix)

    def s3_client(self):
        from dagster_aws.s3 import S3Resource

        # Fail fast inside one attempt; Dagster's RetryPolicy does the backing off between attempts.
        return S3Resource(endpoint_url=self.endpoint_url, region_name=self.region,
                          aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
                          max_attempts=1).get_client()


def landing_resource(settings: Settings) -> LandingResource:
    if not settings.landing_is_s3:
        return LandingResource(local_path=str(settings.landing_path))
    s3 = settings.s3
    env = os.environ

    def secret(*names: str):
        name = next((n for n in names if env.get(n)), None)
        return dg.EnvVar(name) if name else None

    return LandingResource(
        bucket=s3.bucket, prefix=s3.prefix, endpoint_url=s3.endpoint_url, region=s3.region,
        access_key_id=secret("MEDFLOW_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        secret_access_key=secret("MEDFLOW_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"))


def build_resources(settings: Settings) -> dict:
    return {
        "landing": landing_resource(settings),
        "warehouse": WarehouseResource(path=str(settings.warehouse_path), memory_limit=settings.memory_limit,
                                       threads=settings.threads),
        "dbt": MedflowDbtCliResource(project_dir=str(DBT_PROJECT_DIR), profiles_dir=str(DBT_PROJECT_DIR),
                              dbt_executable=dbt_executable()),
    }
