"""Shared test helpers: run the graph in process against a temporary landing folder and warehouse."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import duckdb

from medflow_assets.definitions import defs
from medflow_assets.landing.first_load import register_landed_files
from medflow_assets.resources import build_resources
from medflow_assets.settings import CONTRACTS_DIR, PROJECT_ROOT, load_settings, scoped_environ

SAMPLE_LANDING = PROJECT_ROOT / "data" / "landing"
SAMPLE_MANIFEST = PROJECT_ROOT / "data" / "sample_manifest"
ALL_ASSETS = [*defs.assets, *defs.asset_checks]


def medflow_env(**values: str | Path | None):
    """Set MEDFLOW_* variables (None removes one) for the duration of the block."""
    return scoped_environ({f"MEDFLOW_{k.upper()}": None if v is None else str(v) for k, v in values.items()})


def copy_sample(dest: Path) -> Path:
    shutil.copytree(SAMPLE_LANDING, dest)
    return dest


def copy_contracts(dest: Path) -> Path:
    shutil.copytree(CONTRACTS_DIR, dest)
    return dest


def materialize_graph(landing: Path, warehouse: Path, contracts: Path | None = None,
                      instance: dg.DagsterInstance | None = None, partitions: list[str] | None = None,
                      selection=None, tags: dict[str, str] | None = None, **extra_env):
    """Materialize the whole graph in process, like `medflow-load`: every landed file registered as a
    partition and processed in one run (or only `partitions`; or only the assets in `selection`). Returns the
    ExecuteInProcessResult."""
    instance = instance or dg.DagsterInstance.ephemeral()
    with medflow_env(landing_path=landing, warehouse_path=warehouse,
                     contracts_path=contracts or CONTRACTS_DIR, **extra_env):
        # Resources only carry paths; the assets themselves load (and enforce) the full settings.
        settings = load_settings({**os.environ, "MEDFLOW_TARGET": "dev"})
        keys = register_landed_files(instance, settings)
        chosen = keys if partitions is None else partitions  # [] = no partition (unpartitioned assets only)
        return dg.materialize(ALL_ASSETS, resources=build_resources(settings), instance=instance, selection=selection,
                              tags={**(tags or {}), **({"dagster/asset_partition_range_start": chosen[0],
                                                        "dagster/asset_partition_range_end": chosen[-1]}
                                                       if len(chosen) > 1 else {})} or None,
                              partition_key=chosen[0] if len(chosen) == 1 else None,
                              raise_on_error=False)


def query(warehouse: Path, sql: str, params=None):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def file_fingerprints(warehouse: Path, table: str) -> dict[str, tuple]:
    """Per source_file of a table: row count and a hash of every row (lineage included), in file order."""
    return {f: (n, h) for f, n, h in query(warehouse, f"""
        SELECT source_file, count(*), md5(string_agg(CAST(t AS VARCHAR), '|' ORDER BY source_row_number))
        FROM {table} t GROUP BY 1""")}


def table_names(warehouse: Path, schemas: tuple[str, ...]) -> list[str]:
    rows = query(warehouse, "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                            f"WHERE table_schema IN ({', '.join('?' for _ in schemas)}) ORDER BY 1", list(schemas))
    return [r[0] for r in rows]


def check_result(result, name: str):
    """The one evaluation of asset check `name` in a run's result."""
    evals = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    assert len(evals) == 1, f"check {name} did not run"
    return evals[0]


def unconserved_files(warehouse: Path) -> list[tuple]:
    """(file, bronze rows, silver + superseded + quarantined rows) of every file whose rows are not conserved
    (a superseded row is a good version of a line that another file's version replaced)."""
    return query(warehouse, """
        SELECT b.source_file, b.n, coalesce(s.n, 0) + coalesce(v.n, 0) + coalesce(q.n, 0)
        FROM (SELECT source_file, count(*) n FROM bronze.bronze_claim_lines GROUP BY 1) b
        LEFT JOIN (SELECT source_file, count(*) n FROM silver.silver_claim_lines GROUP BY 1) s USING (source_file)
        LEFT JOIN (SELECT source_file, count(*) n FROM silver.silver_claim_lines_validated
                   WHERE len(failed_rules) = 0 AND superseded_by IS NOT NULL GROUP BY 1) v USING (source_file)
        LEFT JOIN (SELECT source_file, count(*) n FROM silver.silver_claims_quarantine GROUP BY 1) q
          USING (source_file)
        WHERE b.n <> coalesce(s.n, 0) + coalesce(v.n, 0) + coalesce(q.n, 0)""")
