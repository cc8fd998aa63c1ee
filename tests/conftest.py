from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import DagsterInstance

from medflow_assets.settings import DBT_PROJECT_DIR
from medflow_assets.synth.generator import generate
from tests.helpers import SAMPLE_LANDING, materialize_graph


@pytest.fixture(scope="session")
def generated_100k(tmp_path_factory) -> dict:
    """100K generated lines (3 payers, 2 files each, 3% planted defects) materialized once."""
    root = tmp_path_factory.mktemp("gen100k")
    landing, manifest = root / "landing", root / "manifest"
    generate(landing, 100_000, seed=7, defect_rate=0.03, files_per_payer=2, manifest_dir=manifest, truth=True)
    warehouse = root / "warehouse.duckdb"
    instance = DagsterInstance.ephemeral()
    result = materialize_graph(landing, warehouse, instance=instance)
    assert result.success, "materializing the generated 100K set failed"
    # this run's dbt artifacts and logs, kept here: dbt_project/target keeps only the newest invocations
    targets = root / "dbt_targets"
    for folder in (DBT_PROJECT_DIR / "target").glob(f"*-{result.run_id[:8]}-*"):
        shutil.copytree(folder, targets / folder.name)
    return {"landing": landing, "manifest": manifest, "warehouse": warehouse, "result": result,
            "instance": instance, "dbt_targets": targets}


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> dict:
    """The committed sample materialized once into a temporary warehouse."""
    root = tmp_path_factory.mktemp("sample")
    warehouse = root / "warehouse.duckdb"
    instance = DagsterInstance.ephemeral()
    result = materialize_graph(SAMPLE_LANDING, warehouse, instance=instance)
    assert result.success
    return {"warehouse": warehouse, "result": result, "instance": instance, "landing": Path(SAMPLE_LANDING)}
