"""The dbt project handle, with its manifest prepared when missing or parsed from other project files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib.metadata import version
from pathlib import Path

from dagster_dbt import DbtProject

from medflow_assets.settings import DBT_PROJECT_DIR, load_settings, scoped_environ
from medflow_assets.transform.dbt_core import dbt_parse, parse_env, parse_folder

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


_NOT_PARSED = ("target", "logs")  # dbt's outputs, not its inputs


def project_digest(project: DbtProject, env: dict[str, str]) -> str:
    """sha256 of what `dbt parse` reads: the bytes of every project file (models, macros, seeds, tests,
    dbt_project.yml) and of profiles.yml, the MEDFLOW_* values a parse renders (`parse_env`: the warehouse's
    file name, not its folder), where the project is (the manifest holds its path), and the dbt-core and
    dbt-duckdb versions. Content, not modification times: a release copied with its files' older mtimes
    (`rsync -a`, `cp -p`, an unpacked archive) still counts as a change. ~35 small files: a few ms."""
    root, h = Path(project.project_dir).resolve(), hashlib.sha256()
    h.update(json.dumps([version("dbt-core"), version("dbt-duckdb"), str(root),
                         sorted(parse_env(env).items())]).encode())
    files = [Path(project.profiles_dir).resolve() / "profiles.yml"]
    for top in sorted(root.iterdir()):
        if top.name not in _NOT_PARSED and not top.name.startswith("."):
            files += [top] if top.is_file() else sorted(f for f in top.rglob("*") if f.is_file())
    for f in dict.fromkeys(files):
        h.update(f"{f.relative_to(root) if f.is_relative_to(root) else f}\0".encode() + f.read_bytes() + b"\0")
    return h.hexdigest()


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """`dbt parse` (in process, offline, ~4 s) when the manifest is missing or was parsed from other project
    files, another warehouse file name or target, or other dbt versions (`project_digest`; not another
    warehouse folder or DuckDB setting: `parse_env`), so a fresh clone works, dagster-dbt's asset graph matches
    the project, and every run can use dbt's partial parse (dbt re-parses everything when the rendered profile
    differs from the one it parsed with). The parse runs in the settings' own folder (`parse_folder`), which
    keeps its manifest: going back to settings parsed before (another target, a warehouse of another name) with
    the same project files copies that manifest instead of parsing."""
    manifest = Path(project.manifest_path)
    stamp = manifest.parent / ".medflow-project-digest"
    env = load_settings().dbt_env()
    digest = project_digest(project, env)
    if manifest.exists() and stamp.exists() and stamp.read_text() == digest:
        return manifest
    folder = parse_folder(manifest.parent, project.project_dir, env)
    parsed, parsed_stamp = folder / "manifest.json", folder / ".medflow-project-digest"
    if not (parsed.exists() and parsed_stamp.exists() and parsed_stamp.read_text() == digest):
        # The same MEDFLOW_* values the runs' parses use, so dbt's partial parse stays valid for them.
        with scoped_environ(parse_env(env)):
            dbt_parse(project.project_dir, project.profiles_dir, folder, write_json=True)
        if not parsed.exists():
            raise RuntimeError(f"`dbt parse` wrote no manifest for {project.project_dir}")
        parsed_stamp.write_text(digest)
    # whole files only: another process may be reading the manifest (each gets its own temporary name)
    for src, dst, text in ((parsed, manifest, None), (None, stamp, digest)):
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
        if text is None:
            shutil.copyfile(src, tmp)
        else:
            tmp.write_text(text)
        os.replace(tmp, dst)
    return manifest
