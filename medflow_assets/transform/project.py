"""The dbt project handle, with its manifest prepared when missing or parsed from other project files."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from dagster_dbt import DbtProject
from dagster_dbt.dbt_manifest import validate_manifest
from dagster_dbt.errors import DagsterDbtManifestNotFoundError

from medflow_assets.settings import DBT_PROJECT_DIR, load_settings, scoped_environ
from medflow_assets.transform.dbt_core import (
    KEEP_MANIFESTS,
    dbt_parse,
    parse_env,
    parse_folder,
    parse_lock,
    project_digest,
    prune_parse_folders,
)

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """The manifest of the project's current files with the current settings, parsed (`dbt parse`, in process,
    offline, ~4 s) when no process prepared it before: the project files, the warehouse's file name, the target
    or the dbt versions changed (`project_digest`; not the warehouse's folder or a DuckDB setting: `parse_env`).
    So a fresh clone works, dagster-dbt's asset graph matches the project, and every run can use dbt's
    partial parse (dbt re-parses everything when the rendered profile differs from the one it parsed with).

    Each parse settings has its own dbt target folder (`parse_folder`), which keeps its partial-parse state
    and a manifest per version of the project files, `manifest-<digest>.json`: written whole, under the parse
    lock, and never rewritten, so going back to settings prepared before parses nothing, and a process never
    reads half a manifest or another settings' one. dbt_project/target/manifest.json gets a copy of the
    latest one prepared (for dbt's own tools; MedFlow reads the file this returns)."""
    target_root, shared = Path(project.manifest_path).parent, Path(project.manifest_path)
    env = load_settings().dbt_env()
    folder = parse_folder(target_root, project.project_dir, env)
    manifest = folder / f"manifest-{project_digest(project.project_dir, project.profiles_dir, env)[:24]}.json"
    # Read now (dagster-dbt keeps what it read, so @dbt_assets reads nothing again): a manifest removed before it
    # was read (its folder pruned by another process) means preparing it again, below.
    with contextlib.suppress(DagsterDbtManifestNotFoundError, FileNotFoundError):
        validate_manifest(manifest)
        if not shared.exists():  # dbt_project/target/manifest.json removed: dagster-dbt's tools look there
            with contextlib.suppress(OSError), parse_lock(target_root):  # (a folder it cannot write: no copy)
                if not shared.exists():
                    _copy_whole(manifest, shared)
        return manifest
    with parse_lock(target_root):
        while True:
            digest = project_digest(project.project_dir, project.profiles_dir, env)
            manifest = folder / f"manifest-{digest[:24]}.json"
            if manifest.exists():  # another process prepared it while this one waited for the lock
                break
            # The same MEDFLOW_* values the runs' parses use, so dbt's partial parse stays valid for them.
            with scoped_environ(parse_env(env)):
                dbt_parse(project.project_dir, project.profiles_dir, folder, write_json=True)
            parsed = folder / "manifest.json"
            if not parsed.exists():
                raise RuntimeError(f"`dbt parse` wrote no manifest for {project.project_dir}")
            if project_digest(project.project_dir, project.profiles_dir, env) != digest:
                continue  # a project file changed while dbt parsed: parse what is there now
            _copy_whole(parsed, manifest)
            _copy_whole(parsed, shared)
            break
        olds = sorted((p for p in folder.glob("manifest-*.json") if p != manifest), key=lambda p: p.stat().st_mtime)
        for old in olds[: max(0, len(olds) - KEEP_MANIFESTS + 1)]:
            old.unlink(missing_ok=True)
        prune_parse_folders(target_root, keep=folder)
        validate_manifest(manifest)
    return manifest


def _copy_whole(src: Path, dst: Path) -> None:
    """Copy so that a reader sees the old file or the new one, never part of it."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
