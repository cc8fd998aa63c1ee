"""The dbt project handle, with its manifest prepared when missing or parsed from other project files."""

from __future__ import annotations

from pathlib import Path

from dagster_dbt import DbtProject

from medflow_assets.settings import DBT_PROJECT_DIR, load_settings
from medflow_assets.transform.dbt_core import parsed_manifest, project_digest

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """`dbt parse` (in process, offline, ~4 s) when the manifest is missing or was parsed from other project
    files, dbt versions or profile settings (`project_digest`, by content), so a fresh clone works and every
    run finds its parse cached (`parsed_manifest`)."""
    manifest = Path(project.manifest_path)
    stamp = manifest.parent / ".medflow-project-digest"
    env = load_settings().dbt_env()
    digest = project_digest(project.project_dir, project.profiles_dir, env)
    if manifest.exists() and stamp.exists() and stamp.read_text() == digest:
        return manifest
    # The same MEDFLOW_* values the runs use, so the parse stored here is the one their steps load.
    parsed_manifest(project.project_dir, project.profiles_dir, manifest.parent, env, write_json=True)
    if not manifest.exists():
        raise RuntimeError(f"`dbt parse` wrote no manifest for {project.project_dir}")
    stamp.write_text(digest)
    return manifest
