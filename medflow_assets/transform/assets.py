"""All dbt models (bronze, silver, gold) as Dagster assets: one dbt step for seeds + bronze + silver, one for gold."""


import re
from collections.abc import Mapping
from typing import Any

import dagster as dg
import duckdb
from dagster_dbt import DagsterDbtTranslator, dbt_assets, get_asset_key_for_model
from dagster_dbt.asset_utils import get_manifest_and_translator_from_dbt_assets

from medflow_assets.landing.assets import CONTRACTS_TABLE, REGISTRY_TABLE
from medflow_assets.landing.partitions import TRANSIENT_RETRY, landing_file_partitions, single_run
from medflow_assets.resources import (
    WAREHOUSE_POOL,
    DbtCoreResource,
    WarehouseResource,
    held_elsewhere,
    only_transient_retried,
    warehouse_locked,
)
from medflow_assets.settings import announce_key, load_settings
from medflow_assets.transform.dbt_core import CSV_PROBLEM
from medflow_assets.transform.project import dbt_project, ensure_manifest

LAYERS = ("bronze", "silver", "gold")
DOWNSTREAM_AUTOMATION = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()


class MedflowTranslator(DagsterDbtTranslator):
    """Groups follow the model folder (bronze / silver / gold); seeds are reference data."""

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project):
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        fqn = props.get("fqn", [])
        if props.get("resource_type") == "seed":
            group = "reference"
        else:
            group = next((part for part in fqn if part in LAYERS), "default")
        if props.get("resource_type") in ("model", "seed"):
            spec = spec.replace_attributes(group_name=group)
        order_after = (props.get("config", {}).get("meta") or {}).get("order_after", [])
        if order_after:
            # models ref'd only to order dbt's run (the model does not read them): no edge in the asset graph
            drop = {DagsterDbtTranslator.get_asset_spec(self, manifest, f"model.{props['package_name']}.{name}",
                                                        project).key for name in order_after}
            spec = spec.replace_attributes(deps=[d for d in spec.deps if d.asset_key not in drop])
        if group == "gold":
            # Declarative automation: gold follows silver, but never past a failed blocking check
            # (eager() alone ignores blocking checks).
            spec = spec.replace_attributes(automation_condition=DOWNSTREAM_AUTOMATION)
        return spec


def _table_metadata(warehouse: WarehouseResource, relations: dict[dg.AssetKey, str]) -> dict:
    """Row count and column schema per materialized relation, read after dbt released the file."""
    out: dict[dg.AssetKey, dict] = {}
    with warehouse.connect(read_only=True) as con:
        for key, rel in relations.items():
            schema, name = rel.split(".")
            cols = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position", [schema, name]).fetchall()
            if not cols:
                continue
            (n,) = con.execute(f'SELECT count(*) FROM "{schema}"."{name}"').fetchone()
            out[key] = {
                "dagster/row_count": dg.MetadataValue.int(n),
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(name=c, type=t) for c, t in cols]),
                "dagster/relation_identifier": f"{schema}.{name}",
            }
    return out


def _relations(assets_def: dg.AssetsDefinition, translator: DagsterDbtTranslator) -> dict[dg.AssetKey, str]:
    """schema.table of each dbt model or seed of this step."""
    manifest, _, _ = get_manifest_and_translator_from_dbt_assets([assets_def])
    rels = {}
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] in ("model", "seed"):
            key = translator.get_asset_spec(manifest, uid, dbt_project).key
            if key in assets_def.keys:
                rels[key] = f"{node['schema']}.{node['alias']}"
    return rels


TRANSLATOR = MedflowTranslator()
MANIFEST_PATH = ensure_manifest()


SELECTION_TABLE = "landing.dbt_selection"
_READ_ERROR = re.compile(r"(HTTP Error|IO Error|Connection error|Unable to connect|Could not establish|"
                         r"HTTP \d{3})[^\n\"]*")
_URL = re.compile(r"(s3://[^\s'\"]+|https?://[^\s'\"]+)")


def landing_read_error(messages: list[str]) -> str | None:
    """The first I/O error reading a landed object among dbt's node errors, with the object's URL."""
    for text in messages:
        for line in text.splitlines():
            m = _READ_ERROR.search(line)
            if m:
                url = _URL.search(text)
                return (m.group(0)[:300] + (f" [object: {url.group(1)}]" if url and url.group(1) not in m.group(0)
                                            else "")).replace("\\n", " ")
    return None


_CSV_ERROR = re.compile(r"CSV Error on Line: (\d+)|The CSV Parser state machine reached an invalid state")
_CSV_FILE = re.compile(r"^\s*file = (.+)$", re.MULTILINE)
NOT_VALID_CSV = "is not valid CSV"  # in the registry's error of such a file (quality/checks.py reads it)


def malformed_landed_files(messages: list[str]) -> list[tuple[str | None, str]]:
    """(location, '<file> is not valid CSV at line N (what DuckDB found)') for each CSV parse error among dbt's
    node errors (messages already scrubbed). Never the record itself: DuckDB quotes it, and it holds patient
    data; of DuckDB's text only its problem is kept, and only as one of CSV_PROBLEM's fixed texts. The
    location is the path in DuckDB's reader options, the last "file = " of the message (after the record)."""
    found = []
    for text in messages:
        m = _CSV_ERROR.search(text)
        if not m:
            continue
        what = CSV_PROBLEM.search(text)
        files = _CSV_FILE.findall(text)
        location = files[-1].strip() if files else None
        where = f" at line {m.group(1)}" if m.group(1) else " (DuckDB's CSV parser reached an invalid state: " \
            "for example a carriage return alone inside a line, or a quote inside an unquoted value)"
        found.append((location, f"{location or 'a landed file'} {NOT_VALID_CSV}{where}"
                                + (f" ({what.group(0)})" if what and m.group(1) else "")
                                + "; the line itself is not shown (it holds patient data)"))
    return found


def reject_malformed_file(warehouse: WarehouseResource, location: str | None, reason: str) -> str | None:
    """Mark the accepted landed file at `location` rejected in the landing registry, with `reason` naming its
    source file in place of the location; returns that error, or None when no accepted file is there."""
    if location is None:
        return None
    with warehouse.connect() as con:
        # the location is read from the message without the spaces around it: a file name ending in a space
        # (read when file_glob is *) is found by its trimmed path, the exact path first
        row = con.execute(f"SELECT source_file, path FROM {REGISTRY_TABLE} WHERE status = 'accepted' "
                          "AND trim(path) = trim(?) ORDER BY path = ? DESC, path LIMIT 1", [location, location]).fetchone()
        if row is None:
            return None
        location = row[1]
        error = reason.replace(location.strip(), row[0])
        # a rejected file keeps no header (as at landing): a broken file's header line can hold a data row
        con.execute(f"UPDATE {REGISTRY_TABLE} SET status = 'rejected', error = ?, header_json = NULL "
                    "WHERE source_file = ?", [error, row[0]])
    return error


def _has_column(con, table: str, column: str) -> bool:
    schema, name = table.split(".")
    return con.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
                       "AND column_name = ?", [schema, name, column]).fetchone()[0] > 0


def write_selection(warehouse: WarehouseResource, source_files: list[str]) -> set[str]:
    """The files (partitions) this run processes, for dbt's incremental models (macros/contracts.sql), and
    for each whether it replaces rows silver loaded from other bytes (a corrected file): then silver_members
    rebuilds that file's payer, so no member version only the old bytes had stays behind. Returns the files
    left out: held while their payer's contract is invalid or missing."""
    with warehouse.connect() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS landing")
        con.execute(f"CREATE OR REPLACE TABLE {SELECTION_TABLE} "
                    "(source_file VARCHAR PRIMARY KEY, replaces_loaded_rows BOOLEAN NOT NULL)")
        replaced: set[str] = set()
        if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'silver' "
                       "AND table_name = 'silver_data_quality_log'").fetchone()[0]:
            replaced = {r[0] for r in con.execute(f"""
                SELECT DISTINCT l.source_file FROM silver.silver_data_quality_log l
                JOIN {REGISTRY_TABLE} r USING (source_file)
                WHERE r.status = 'accepted' AND l.file_checksum IS DISTINCT FROM r.checksum""").fetchall()}
        # a file held while its payer's contract is invalid (landing_files), or of a payer that has no contract
        # any more (its file removed): dbt leaves it, and its loaded rows, alone (silver would read them again
        # with no contract, every field empty, and quarantine every line)
        held = {r[0] for r in con.execute(f"""
            SELECT source_file FROM {REGISTRY_TABLE}
            WHERE list_contains(?, source_file)
              AND ({"held_reason IS NOT NULL OR " if _has_column(con, REGISTRY_TABLE, "held_reason") else ""}
                   payer NOT IN (SELECT payer FROM {CONTRACTS_TABLE}))""", [source_files]).fetchall()} \
            if source_files else set()
        if rows := [(k, k in replaced) for k in source_files if k not in held]:
            con.executemany(f"INSERT INTO {SELECTION_TABLE} VALUES (?, ?)", rows)
    return held


def _prepare(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> None:
    """Before dbt: the run's files in landing.dbt_selection (partitioned step), or just wait while another
    process still holds the warehouse file (open_warehouse); held past the wait, the step is retried."""
    try:
        if context.has_partition_key_range or context.has_partition_key:
            held = write_selection(warehouse, sorted(context.partition_keys))
            keys = [k for k in sorted(context.partition_keys) if k not in held]
            context.log.info(f"dbt processes {len(keys)} landed file(s): {', '.join(keys[:10])}"
                             + (" ..." if len(keys) > 10 else "")
                             + (f"; {len(held)} held while their payer's contract is invalid or missing" if held else ""))
        else:
            with warehouse.connect():
                pass
    except duckdb.IOException as exc:
        if not warehouse_locked(str(exc)):
            raise
        raise held_elsewhere(warehouse) from exc


def _build(context: dg.AssetExecutionContext, dbt: DbtCoreResource, warehouse: WarehouseResource):
    """`dbt build` of this step's selection (in process), with row counts and schemas attached."""
    with only_transient_retried("the dbt step", warehouse):
        settings = load_settings()
        announce_key(settings, context.log)
        _prepare(context, warehouse)
        # profiles.yml reads MEDFLOW_* (warehouse, memory, key) from the environment while dbt runs.
        env = {**settings.dbt_env(), "MEDFLOW_WAREHOUSE_PATH": warehouse.path}
        build = dbt.build(context, env=env)
        # A landed file that is not valid CSV is rejected whole, like a file that breaks its contract, and the
        # build runs again without it, so the run's other files go on (the landed_files_parsed check names it).
        # Its rows from an earlier good version stay: a failed shard statement rolls back its delete.
        while not build.success and not build.error and (context.has_partition_key_range or context.has_partition_key):
            rejected = [error for location, reason in malformed_landed_files([msg for _, _, msg in build.failed_nodes])
                        if (error := reject_malformed_file(warehouse, location, reason)) is not None]
            if not rejected:
                break
            for error in rejected:
                context.log.error(f"Rejected landed file {error}")
            context.log.info(f"dbt runs again without the {len(rejected)} rejected file(s)")
            build = dbt.build(context, env=env)
        # another process took the file between _prepare and dbt's own connection
        if not build.success and any(warehouse_locked(text) for text in
                                     [build.error or "", *(msg for _, _, msg in build.failed_nodes)]):
            raise held_elsewhere(warehouse)
        # DuckDB lets one process hold the file: table metadata is read once dbt has released it, and attached
        # to each materialization before it is reported.
        metadata = _table_metadata(warehouse, _relations(context.assets_def, TRANSLATOR))
        for event in build.events:
            if isinstance(event, dg.Output | dg.AssetMaterialization):
                key = event.asset_key if isinstance(event, dg.AssetMaterialization) else \
                    context.asset_key_for_output(event.output_name)
                if key in metadata:
                    event = event.with_metadata({**event.metadata, **metadata[key]})
            yield event
        if build.success:
            return
        if build.error:
            raise dg.Failure(description=f"dbt could not run: {build.error}", allow_retries=False)
        read_error = landing_read_error([msg for _, _, msg in build.failed_nodes])
        if read_error:
            # A landed object could not be read (network, S3 down): worth retrying with backoff. The
            # incremental models replace a file's rows in one transaction, so a failed attempt leaves none.
            raise dg.Failure(description=f"dbt could not read landed data: {read_error}", allow_retries=True)
        malformed = malformed_landed_files([msg for _, _, msg in build.failed_nodes])
        if malformed:  # not an accepted file of the registry (rejected above otherwise): its path is not repeated
            location, reason = malformed[0]
            raise dg.Failure(description="dbt could not parse a landed file that is not an accepted file of the landing "
                                         f"registry: {reason.replace(location, 'the file') if location else reason}. "
                                         f"The dbt log in {build.target_path} names it. None of that file's rows were "
                                         "loaded (bronze replaces a file's rows in one transaction).",
                             allow_retries=False)
        # Node ids and statuses only: a database error message can quote row values (PII).
        failed = ", ".join(f"{uid} ({status})" for uid, status, _ in build.failed_nodes[:20])
        raise dg.Failure(
            description=f"dbt build failed at: {failed or 'unknown node'}. The dbt log in {build.target_path} "
                        "has the details.",
            metadata={"failed_dbt_nodes": [uid for uid, _, _ in build.failed_nodes]},
            allow_retries=False,  # a failing model or test fails the same way again
        )


# Two dbt steps, so that the Pandera checks and the quarantine-rate gate on silver (blocking asset checks,
# medflow_assets/quality/) run between them and can stop gold. dbt's own tests gate inside each build.
# Bronze and silver are partitioned by landed file and incremental (a file's rows deleted, then appended); gold is
# rebuilt from silver after them.
@dbt_assets(manifest=MANIFEST_PATH, project=dbt_project, dagster_dbt_translator=TRANSLATOR,
            select="path:seeds path:models/bronze path:models/silver", name="medflow_dbt_bronze_silver",
            partitions_def=landing_file_partitions, backfill_policy=single_run, retry_policy=TRANSIENT_RETRY,
            pool=WAREHOUSE_POOL)
def medflow_dbt_bronze_silver(context: dg.AssetExecutionContext, dbt: DbtCoreResource,
                              warehouse: WarehouseResource):
    yield from _build(context, dbt, warehouse)


@dbt_assets(manifest=MANIFEST_PATH, project=dbt_project, dagster_dbt_translator=TRANSLATOR,
            select="path:models/gold", name="medflow_dbt_gold", backfill_policy=single_run, retry_policy=TRANSIENT_RETRY,
            pool=WAREHOUSE_POOL)
def medflow_dbt_gold(context: dg.AssetExecutionContext, dbt: DbtCoreResource, warehouse: WarehouseResource):
    yield from _build(context, dbt, warehouse)


DBT_ASSETS = [medflow_dbt_bronze_silver, medflow_dbt_gold]


def model_key(model_name: str) -> dg.AssetKey:
    """Asset key of a dbt model, for Python assets and checks downstream of dbt."""
    for assets_def in DBT_ASSETS:
        try:
            return get_asset_key_for_model([assets_def], model_name)
        except KeyError:
            continue
    raise KeyError(f"no dbt model named {model_name!r}")
