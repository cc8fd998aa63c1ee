"""dbt run in the Dagster process through dbt's programmatic API (`dbtRunner`), with a manifest loaded once.

Why not dagster-dbt's `DbtCliResource.cli`: it starts a `dbt` subprocess per step, which re-imports dbt,
re-reads the project and writes every artifact: ~3.5 s of fixed cost per step, measured (BENCHMARKS.md),
while the SQL of a one-line run takes 0.5 s. In process, with the parsed manifest handed to dbt, a step costs
what its SQL costs. Everything else stays dagster-dbt's: the dbt selection for the step (and its subsets) comes
from `get_updated_cli_invocation_params_for_context`, and every dbt result event becomes Dagster outputs and
asset-check results through the public `DbtCoreCliEventMessage.to_default_asset_events`, exactly as the CLI
path would report them.

dbt keeps global state per process (flags, the adapter registry), so invocations must not overlap: Dagster
steps here run one at a time (in-process executor, and the `duckdb_warehouse` pool for every writer).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from medflow_assets.settings import scoped_environ

_LOCK = threading.Lock()  # one dbt invocation at a time in this process
_MANIFESTS: dict[tuple, Any] = {}


# Where a parse says the warehouse is. dbt's partial parse starts over (~7 s on the Xeon host, BENCHMARKS.md)
# whenever the rendered profile changes, and the profile holds the warehouse's path and DuckDB's settings. A
# parse needs neither: it never opens the warehouse, and DuckDB's settings apply only when dbt connects. It
# needs the file's name alone, which dbt-duckdb makes the database name in every relation of the manifest. So
# every parse renders the profile with the warehouse's file name in this folder (never created, never opened)
# and DuckDB's settings at profiles.yml's defaults; the run connects with the real values. One parse then
# serves every warehouse of that name: a test's temporary one, the benchmark's, the default.
PARSE_ONLY_DIR = "/medflow-parse-only"
_RUN_TIME_ONLY = ("MEDFLOW_PII_KEY", "MEDFLOW_DUCKDB_MEMORY_LIMIT", "MEDFLOW_DUCKDB_THREADS")


def parse_env(env: Mapping[str, str]) -> dict[str, str | None]:
    """The MEDFLOW_* values a parse runs with (None: unset): the target, and the warehouse's file name under
    PARSE_ONLY_DIR; the PII key (read by the connection plugin) and DuckDB's settings unset."""
    out: dict[str, str | None] = {**env, **dict.fromkeys(_RUN_TIME_ONLY)}
    if out.get("MEDFLOW_WAREHOUSE_PATH"):
        out["MEDFLOW_WAREHOUSE_PATH"] = f"{PARSE_ONLY_DIR}/{Path(out['MEDFLOW_WAREHOUSE_PATH']).name}"
    return out


# dbt keeps one partial-parse state (partial_parse.msgpack) per target folder and starts over when the profile it
# renders differs from the one that state was parsed with. Tests, the benchmark and a user switching between the
# dev and prod targets or warehouses of other names alternate between a few such profiles, and each switch cost
# a full parse (~2-4 s). So each parse's target folder is one per parse settings (`parse_env`, the project's
# folder, the dbt versions): switching back finds its state where it left it. dbt's partial parse still sees
# edits to project files within one folder.
PARSE_FOLDERS = "parses"
KEEP_PARSE_FOLDERS = 8  # parse settings kept; the least recently used beyond these are removed
_PARSE_FOLDER_IDLE_S = 600  # ... when no process used them for this long
KEEP_MANIFESTS = 3  # manifests kept per parse folder (one per version of the project files)
_NOT_PARSED = ("target", "logs")  # dbt's outputs, not its inputs


def _parse_settings(project_dir: str | Path, env: Mapping[str, str]) -> str:
    """What a parse's result depends on besides the project files: the dbt-core and dbt-duckdb versions, where the
    project is (the manifest holds its path) and the MEDFLOW_* values a parse renders (`parse_env`)."""
    from importlib.metadata import version

    return json.dumps([version("dbt-core"), version("dbt-duckdb"), str(Path(project_dir).resolve()),
                       sorted(parse_env(env).items())])


def project_digest(project_dir: str | Path, profiles_dir: str | Path, env: Mapping[str, str]) -> str:
    """sha256 of what `dbt parse` reads: the bytes of every project file (models, macros, seeds, tests,
    dbt_project.yml) and of profiles.yml, the MEDFLOW_* values a parse renders (`parse_env`: the warehouse's
    file name, not its folder), where the project is (the manifest holds its path), and the dbt-core and
    dbt-duckdb versions. Content, not modification times: a release copied with its files' older mtimes
    (`rsync -a`, `cp -p`, an unpacked archive) still counts as a change. ~35 small files: a few ms."""
    root, h = Path(project_dir).resolve(), hashlib.sha256()
    h.update(_parse_settings(project_dir, env).encode())
    files = [Path(profiles_dir).resolve() / "profiles.yml"]
    for top in sorted(root.iterdir()):
        if top.name not in _NOT_PARSED and not top.name.startswith("."):
            files += [top] if top.is_file() else sorted(f for f in top.rglob("*") if f.is_file())
    for f in dict.fromkeys(files):
        h.update(f"{f.relative_to(root) if f.is_relative_to(root) else f}\0".encode() + f.read_bytes() + b"\0")
    return h.hexdigest()


@contextlib.contextmanager
def parse_lock(target_root: str | Path):
    """Every parse, and every change to the parse folders, holds this lock (a file lock: across processes).
    dbt writes its manifest and partial-parse state in place, so two processes parsing into one folder could
    each read the other's half-written file."""
    import fcntl

    Path(target_root).mkdir(parents=True, exist_ok=True)
    with open(Path(target_root) / ".parse.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def parse_folder(target_root: str | Path, project_dir: str | Path, env: Mapping[str, str]) -> Path:
    """The target folder of parses with these settings (`parse_env`, the project folder, dbt versions), made when
    missing and marked as just used (its settings.json, which names the settings; never the PII key)."""
    settings = _parse_settings(project_dir, env)
    folder = Path(target_root) / PARSE_FOLDERS / hashlib.sha256(settings.encode()).hexdigest()[:16]
    # best effort: a deployment may ship the project prepared, in a folder it cannot write (then a parse fails
    # with dbt's own error, and reading the prepared manifest needs no write)
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "settings.json").write_text(settings + "\n")
    return folder


def prune_parse_folders(target_root: str | Path, keep: Path | None = None) -> list[Path]:
    """Remove the parse folders beyond the KEEP_PARSE_FOLDERS most recently used that no process used for
    _PARSE_FOLDER_IDLE_S (never `keep`); returns them. Call under `parse_lock`."""
    root = Path(target_root) / PARSE_FOLDERS
    if not root.is_dir():
        return []
    folders = sorted((p for p in root.iterdir() if p.is_dir() and p != keep), key=_used_at, reverse=True)
    gone = [old for old in folders[KEEP_PARSE_FOLDERS - (keep is not None):]
            if time.time() - _used_at(old) > _PARSE_FOLDER_IDLE_S]
    for old in gone:
        shutil.rmtree(old, ignore_errors=True)
    return gone


def _used_at(folder: Path) -> float:
    """When a process last used the folder (its settings.json; the folder's own time while that is written)."""
    for p in (folder / "settings.json", folder):
        with contextlib.suppress(OSError):
            return p.stat().st_mtime
    return 0.0


def dbt_parse(project_dir: str | Path, profiles_dir: str | Path, target_path: str | Path, write_json: bool):
    """`dbt parse` in this process (partial parse: ~0.1 s when the project and profile are unchanged); returns
    dbt's Manifest object. Call with profiles.yml's MEDFLOW_* variables set as `parse_env` gives them."""
    from dbt.cli.main import dbtRunner

    args = ["parse", "--quiet", "--project-dir", str(project_dir), "--profiles-dir", str(profiles_dir),
            "--target-path", str(target_path), "--no-send-anonymous-usage-stats"]
    if not write_json:
        args.append("--no-write-json")
    result = dbtRunner().invoke(args)
    if not result.success:
        raise RuntimeError(f"`dbt parse` failed for {project_dir}: {result.exception}")
    return result.result


# dbt compiles every macro, materialization and model it runs from its Jinja source, in every process and again
# in each invocation: ~240 templates, 0.7-0.9 s of a one-line run (BENCHMARKS.md, Results of session 30). Jinja's
# own bytecode cache keeps the compiled code on disk, so a process compiles only what no process compiled before.
_TEMPLATE_CACHE: dict[str, Any] = {}  # once installed: the FileSystemBytecodeCache in use, the versions, Jinja's compile


def _template_key(env, source: str, name: str | None, filename: str | None, defer_init: bool) -> str:
    """Everything Jinja's compiled code depends on: the source, the environment's class (dbt's text or native
    one), its extensions and syntax settings, and the versions of dbt-common and Jinja (Jinja's cache adds its
    own format version and Python's)."""
    syntax = [getattr(env, a) for a in (
        "block_start_string", "block_end_string", "variable_start_string", "variable_end_string",
        "comment_start_string", "comment_end_string", "line_statement_prefix", "line_comment_prefix",
        "trim_blocks", "lstrip_blocks", "newline_sequence", "keep_trailing_newline", "optimized", "is_async")]
    finalize = getattr(env.finalize, "__qualname__", None) if env.finalize else None
    parts = [f"{type(env).__module__}.{type(env).__qualname__}", ",".join(sorted(env.extensions)), repr(syntax),
             str(finalize), str(name), str(filename), str(defer_init), _TEMPLATE_CACHE["versions"],
             hashlib.sha256(source.encode()).hexdigest()]
    return "|".join(parts)


def cache_dbt_templates(directory: Path) -> None:
    """Keep dbt's compiled Jinja templates in `directory` (Jinja's FileSystemBytecodeCache: one file per
    template, written atomically), for every dbt invocation in this process. A file that cannot be read or
    written (corrupt, a read-only folder) only means that template is compiled as before."""
    from importlib.metadata import version

    import jinja2
    from dbt_common.clients.jinja import MacroFuzzEnvironment
    from jinja2.bccache import Bucket, FileSystemBytecodeCache
    from jinja2.utils import internalcode

    directory.mkdir(parents=True, exist_ok=True)
    _TEMPLATE_CACHE["cache"] = FileSystemBytecodeCache(str(directory))
    _TEMPLATE_CACHE["versions"] = f"dbt-common {version('dbt-common')}, jinja2 {jinja2.__version__}"
    if "compile" in _TEMPLATE_CACHE:
        return
    compile_source = MacroFuzzEnvironment.compile  # dbt's text environment; its native one inherits it
    _TEMPLATE_CACHE["compile"] = compile_source

    @internalcode  # as Jinja's own: left out of the tracebacks Jinja rewrites for template errors
    def compile(self, source, name=None, filename=None, raw=False, defer_init=False):
        cache = _TEMPLATE_CACHE["cache"]
        if raw or not isinstance(source, str):
            return compile_source(self, source, name, filename, raw, defer_init)
        key = _template_key(self, source, name, filename, defer_init)
        try:
            bucket = cache.get_bucket(self, key, None, source)
        except Exception:  # noqa: BLE001 -- a damaged file (Jinja unpickles its header unguarded): written over
            bucket = Bucket(self, cache.get_cache_key(key), cache.get_source_checksum(source))
        if bucket.code is None:
            bucket.code = compile_source(self, source, name, filename, raw, defer_init)
            with contextlib.suppress(OSError):
                cache.set_bucket(bucket)
        return bucket.code

    MacroFuzzEnvironment.compile = compile


_ROW_TEXT = re.compile(r"^([ \t]*Original Line:)", re.MULTILINE)
# DuckDB's reader options, printed after the quoted record: "  file = <path>" then "  delimiter = ...". The
# record itself is landed data and can hold anything, lines like these included, so it ends at the LAST such
# block after it (DuckDB's own block comes after the record).
_OPTIONS_BLOCK = re.compile(r"^[ \t]*file = [^\n]*\n[ \t]*delimiter = ", re.MULTILINE)
# DuckDB's CSV problems, as fixed text and numbers only: the one part of the error kept beside the line number.
CSV_PROBLEM = re.compile(r"Expected Number of Columns: \d+ Found: \d+|Value with unterminated quote found\."
                         r"|Invalid unicode \(byte sequence mismatch\) detected\.|Maximum line size of \d+ bytes "
                         r"exceeded\.|Did not find a closing quote|The CSV Parser state machine reached an invalid "
                         r"state\.")


_NOT_SHOWN = " (not shown: it holds patient data; see the landed file at that line)\n"


def scrub(text: str) -> str:
    """A dbt or database message without quoted row text. DuckDB's CSV errors repeat the offending record of
    the landed file after "Original Line:" (patient data), over several lines when a quoted field holds a
    newline or a quote is never closed (then up to the end of the file). Everything from there to DuckDB's
    reader options after it (the last "file = ... delimiter = ..." block; or to the end) goes, its hints
    included; the line number, DuckDB's problem when it is one of CSV_PROBLEM's fixed texts, and the options
    (the file's path) stay."""
    out, pos = [], 0
    while (m := _ROW_TEXT.search(text, pos)) is not None:
        ends = list(_OPTIONS_BLOCK.finditer(text, m.end()))
        stop = ends[-1].start() if ends else len(text)
        problems = CSV_PROBLEM.findall(text, m.end(), stop)
        out += [text[pos:m.start()], m.group(1), _NOT_SHOWN, *(f"{p}\n" for p in dict.fromkeys(problems))]
        pos = stop
    return "".join(out) + text[pos:]


def scrub_run_results(path: Path) -> None:
    """run_results.json keeps each failed node's database message: scrubbed like the log."""
    if not path.exists():
        return
    text = path.read_text()
    if "Original Line:" not in text:
        return  # nothing quoted: leave the file as dbt wrote it
    data = json.loads(text)
    for r in data.get("results", []):
        if isinstance(r.get("message"), str):
            r["message"] = scrub(r["message"])
    path.write_text(json.dumps(data))


class DbtLog:
    """dbt's console lines (info and up) on stdout and its debug log in the target folder, scrubbed."""

    def __init__(self, path: Path):
        self.path = path
        self._file = None
        self._lock = threading.Lock()

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._file.close()
            self._file = None

    def write(self, level: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        text = scrub(text)
        with self._lock:
            if self._file is None:
                return
            self._file.write(f"{stamp} [{level}] {text}\n")
            if level in ("info", "warn", "error"):
                print(f"{stamp}  {text}", flush=True)


def release_warehouse() -> None:
    """Close the DuckDB instance dbt-duckdb keeps open (`keep_open`) after an in-process invocation, so later
    steps (checks, metadata) can open the warehouse file with their own settings."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        env_ = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
    if env_ is not None:
        with contextlib.suppress(Exception):  # already closed when dbt released every handle
            env_.close()


def _parsed_manifest(project_dir: str, profiles_dir: str, target_dir: Path, env: Mapping[str, str]):
    """The parsed project, once per process and per version of the project files and parse settings (parsed in
    the settings' own folder under `target_dir`: `parse_folder`)."""
    key = (project_dir, project_digest(project_dir, profiles_dir, env))
    if key not in _MANIFESTS:
        _MANIFESTS.clear()
        folder = parse_folder(target_dir, project_dir, env)
        with parse_lock(target_dir), scoped_environ(parse_env(env)):
            _MANIFESTS[key] = dbt_parse(project_dir, profiles_dir, folder, write_json=False)
    return _MANIFESTS[key]


@dataclass
class DbtBuild:
    """Outcome of one dbt invocation: Dagster events to yield, and the nodes that did not succeed."""

    success: bool
    events: list = field(default_factory=list)
    failed_nodes: list[tuple[str, str, str]] = field(default_factory=list)  # (unique_id, status, message)
    target_path: Path | None = None
    error: str | None = None  # dbt could not run at all (project, profile, selection)


class DbtCoreResource(dg.ConfigurableResource):
    """The dbt project, run in process. `target_root` keeps the last `keep_targets` invocations' artifacts
    (compiled SQL, run_results.json, dbt.log) and deletes older ones."""

    project_dir: str
    profiles_dir: str
    target_root: str
    keep_targets: int = 30

    def _target_path(self, context: dg.AssetExecutionContext) -> Path:
        root = Path(self.target_root)
        root.mkdir(parents=True, exist_ok=True)
        olds = sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith("medflow_dbt_")),
                      key=lambda p: p.stat().st_mtime)
        for old in olds[: max(0, len(olds) - self.keep_targets + 1)]:
            shutil.rmtree(old, ignore_errors=True)
        return root / f"{context.op_def.name}-{context.run.run_id[:8]}-{uuid.uuid4().hex[:7]}"

    def build(self, context: dg.AssetExecutionContext, env: Mapping[str, str]) -> DbtBuild:
        """`dbt build` for this step's dbt selection, with `env` (profiles.yml's MEDFLOW_* values) set in
        os.environ for the duration of the invocation only."""
        from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
        from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage
        from dbt.cli.main import dbtRunner
        from dbt_common.events.functions import msg_to_dict

        params = get_updated_cli_invocation_params_for_context(
            context=context, manifest={}, dagster_dbt_translator=None)
        manifest_dict, translator, project = params.manifest, params.dagster_dbt_translator, params.dbt_project
        project_dir = Path(project.project_dir if project else self.project_dir)
        target_path = self._target_path(context)
        selection = list(params.selection_args)
        # dbt's own console and file logs are off: they would print database errors verbatim, and DuckDB's
        # CSV errors quote the offending line (patient data). DbtLog writes both, with such lines removed.
        args = ["build", *selection, "--project-dir", str(project_dir), "--profiles-dir", self.profiles_dir,
                "--target-path", str(target_path), "--log-path", str(target_path),
                "--log-level", "none", "--log-level-file", "none",
                "--no-use-colors", "--no-send-anonymous-usage-stats", "--no-partial-parse"]
        if params.indirect_selection:
            args += ["--indirect-selection", params.indirect_selection]
        context.log.info(f"dbt (in process): {' '.join(args[: len(selection) + 1])}")

        raw_events: list[dict] = []
        log = DbtLog(target_path / "dbt.log")

        def on_event(msg) -> None:
            log.write(msg.info.level, msg.info.msg)
            if msg.info.name in ("LogSeedResult", "LogModelResult", "LogSnapshotResult", "LogTestResult"):
                raw_events.append(msg_to_dict(msg))

        with _LOCK, scoped_environ(dict(env)), log:
            cache_dbt_templates(Path(self.target_root) / "jinja_cache")
            try:
                preloaded = None
                if "--selector" not in selection:  # a generated selector lives in a project copy: dbt parses it
                    preloaded = _parsed_manifest(str(project_dir), self.profiles_dir,
                                                 Path(project.manifest_path).parent if project
                                                 else Path(self.target_root), env)
                result = dbtRunner(manifest=preloaded, callbacks=[on_event]).invoke(args)
            finally:
                release_warehouse()
                scrub_run_results(target_path / "run_results.json")

        out = DbtBuild(success=bool(result.success), target_path=target_path)
        if result.exception is not None:
            out.error = scrub(f"{type(result.exception).__name__}: {result.exception}")
        for raw in raw_events:
            event = DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={})
            out.events.extend(event.to_default_asset_events(
                manifest=manifest_dict, dagster_dbt_translator=translator, context=context,
                target_path=target_path, project=project))
        for r in getattr(result.result, "results", None) or []:
            status = str(getattr(r.status, "value", r.status))
            if status not in ("success", "pass", "warn"):
                out.failed_nodes.append((r.node.unique_id, status, scrub(r.message or "")))
        return out
