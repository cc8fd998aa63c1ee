"""The dbt project handle, with its manifest prepared when missing or older than the project files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dagster_dbt import DbtProject

from medflow_assets.resources import dbt_executable
from medflow_assets.settings import DBT_PROJECT_DIR, load_settings

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def _newest_source_mtime(project_dir: Path) -> float:
    newest = 0.0
    for sub in ("models", "macros", "seeds", "tests"):
        for p in (project_dir / sub).rglob("*"):
            newest = max(newest, p.stat().st_mtime)
    for name in ("dbt_project.yml", "profiles.yml"):
        newest = max(newest, (project_dir / name).stat().st_mtime)
    return newest


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """Run `dbt parse` (offline, ~4 s) when the manifest is missing or stale, so a fresh clone works."""
    manifest = Path(project.manifest_path)
    if manifest.exists() and manifest.stat().st_mtime >= _newest_source_mtime(Path(project.project_dir)):
        return manifest
    result = subprocess.run(
        [dbt_executable(), "parse", "--quiet", "--project-dir", str(project.project_dir),
         "--profiles-dir", str(project.profiles_dir), "--target-path", str(manifest.parent)],
        # The same MEDFLOW_* values the runs use, so dbt's partial parse stays valid for them.
        capture_output=True, text=True, env={**os.environ, **load_settings().dbt_env()}, check=False,
    )
    if result.returncode != 0 or not manifest.exists():
        raise RuntimeError(f"`dbt parse` failed for {project.project_dir}:\n{result.stdout}\n{result.stderr}")
    return manifest
