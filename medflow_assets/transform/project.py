"""The dbt project handle, with its manifest prepared when missing or older than the project files."""

from __future__ import annotations

import json
from pathlib import Path

from dagster_dbt import DbtProject

from medflow_assets.settings import DBT_PROJECT_DIR, load_settings, scoped_environ
from medflow_assets.transform.dbt_core import dbt_parse, parse_env

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def _newest_source_mtime(project_dir: Path) -> float:
    newest = 0.0
    for sub in ("models", "macros", "seeds", "tests"):
        for p in (project_dir / sub).rglob("*"):
            newest = max(newest, p.stat().st_mtime)
    for name in ("dbt_project.yml", "profiles.yml"):
        newest = max(newest, (project_dir / name).stat().st_mtime)
    return newest


def _profile_env() -> dict[str, str]:
    """The MEDFLOW_* values profiles.yml renders."""
    return parse_env(load_settings().dbt_env())


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """`dbt parse` (in process, offline, ~4 s) when the manifest is missing, older than the project files, or
    was parsed for other profile settings, so a fresh clone works and every run can use dbt's partial parse
    (dbt re-parses everything when the rendered profile differs from the one it parsed with)."""
    manifest = Path(project.manifest_path)
    stamp = manifest.parent / ".medflow-profile-env.json"
    wanted = json.dumps(_profile_env(), sort_keys=True)
    if (manifest.exists() and manifest.stat().st_mtime >= _newest_source_mtime(Path(project.project_dir))
            and stamp.exists() and stamp.read_text() == wanted):
        return manifest
    # The same MEDFLOW_* values the runs use, so dbt's partial parse stays valid for them.
    with scoped_environ(load_settings().dbt_env()):
        dbt_parse(project.project_dir, project.profiles_dir, manifest.parent, write_json=True)
    if not manifest.exists():
        raise RuntimeError(f"`dbt parse` wrote no manifest for {project.project_dir}")
    stamp.write_text(wanted)
    return manifest
