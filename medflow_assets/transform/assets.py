"""All dbt models (bronze, silver, gold) as Dagster assets: one dbt step for seeds + bronze + silver, one for gold."""


import os
import re
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, dbt_assets, get_asset_key_for_model

from medflow_assets.landing.partitions import LANDING_RETRY, landing_file_partitions, single_run
from medflow_assets.resources import WAREHOUSE_POOL, WarehouseResource
from medflow_assets.settings import announce_key, load_settings
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


def _relations(manifest: Mapping[str, Any], translator: DagsterDbtTranslator) -> dict[dg.AssetKey, str]:
    rels = {}
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] in ("model", "seed"):
            key = translator.get_asset_spec(manifest, uid, dbt_project).key
            rels[key] = f"{node['schema']}.{node['alias']}"
    return rels


@contextmanager
def scoped_environ(values: dict[str, str | None]):
    """Set (or, with None, unset) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


TRANSLATOR = MedflowTranslator()
MANIFEST_PATH = ensure_manifest()


SELECTION_TABLE = "landing.dbt_selection"
_READ_ERROR = re.compile(r"(HTTP Error|IO Error|Connection error|Unable to connect|Could not establish|"
                         r"HTTP \d{3})[^\n\"]*")
_URL = re.compile(r"(s3://[^\s'\"]+|https?://[^\s'\"]+)")


def landing_read_error(dbt_log: Path) -> str | None:
    """The first I/O error reading a landed object in a dbt log, with the object's URL; None if none."""
    if not dbt_log.exists():
        return None
    for line in dbt_log.read_text(errors="replace").splitlines():
        m = _READ_ERROR.search(line)
        if m:
            url = _URL.search(line)
            return (m.group(0)[:300] + (f" [object: {url.group(1)}]" if url and url.group(1) not in m.group(0)
                                        else "")).replace("\\n", " ")
    return None


def write_selection(warehouse: WarehouseResource, source_files: list[str]) -> None:
    """The files (partitions) this run processes, for dbt's incremental models (macros/contracts.sql)."""
    with warehouse.connect() as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS landing")
        con.execute(f"CREATE OR REPLACE TABLE {SELECTION_TABLE} (source_file VARCHAR PRIMARY KEY)")
        if source_files:
            con.executemany(f"INSERT INTO {SELECTION_TABLE} VALUES (?)", [(k,) for k in source_files])


def _build(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
    """`dbt build` of this definition's selection, with row counts and schemas attached."""
    settings = load_settings()
    announce_key(settings, context.log)
    if context.has_partition_key_range or context.has_partition_key:
        keys = sorted(context.partition_keys)
        write_selection(warehouse, keys)
        context.log.info(f"dbt processes {len(keys)} landed file(s): {', '.join(keys[:10])}"
                         + (" ..." if len(keys) > 10 else ""))
    # profiles.yml reads MEDFLOW_* from the environment of the dbt subprocess, which dagster-dbt builds
    # from os.environ when it starts the process: set them from settings for that moment only.
    with scoped_environ({**settings.dbt_env(), "MEDFLOW_WAREHOUSE_PATH": warehouse.path}):
        invocation = dbt.cli(["build"], context=context, raise_on_error=False)
    # DuckDB lets one process hold the file: dbt keeps it for the whole build, so table metadata is read
    # once dbt has finished, and attached to each materialization before it is reported.
    events = list(invocation.stream())
    relations = _relations(invocation.manifest, TRANSLATOR)
    metadata = _table_metadata(warehouse, relations)
    for event in events:
        if isinstance(event, dg.Output | dg.AssetMaterialization):
            key = event.asset_key if isinstance(event, dg.AssetMaterialization) else \
                context.asset_key_for_output(event.output_name)
            if key in metadata:
                event = event.with_metadata({**event.metadata, **metadata[key]})
        yield event
    if not invocation.is_successful():
        read_error = landing_read_error(Path(invocation.target_path) / "dbt.log")
        if read_error:
            # A landed object could not be read (network, S3 down): worth retrying with backoff. The
            # incremental models replace a file's rows in one transaction, so a failed attempt leaves none.
            raise dg.Failure(description=f"dbt could not read landed data: {read_error}", allow_retries=True)
        failed = sorted({e.asset_key.to_user_string() for e in events
                         if isinstance(e, dg.AssetCheckResult) and not e.passed and e.asset_key})
        raise dg.Failure(
            description="dbt build failed; the dbt log above names the failing model or test"
                        + (f" (failed checks on: {', '.join(failed)})" if failed else "") + ".",
            allow_retries=False,  # a failing model or test fails the same way again
        )


# Two dbt steps, so that the Pandera checks and the quarantine-rate gate on silver (blocking asset checks,
# medflow_assets/quality/) run between them and can stop gold. dbt's own tests gate inside each build.
# Bronze and silver are partitioned by landed file and incremental (delete + insert by source_file); gold is
# rebuilt from silver after them.
@dbt_assets(manifest=MANIFEST_PATH, project=dbt_project, dagster_dbt_translator=TRANSLATOR,
            select="path:seeds path:models/bronze path:models/silver", name="medflow_dbt_bronze_silver",
            partitions_def=landing_file_partitions, backfill_policy=single_run, retry_policy=LANDING_RETRY,
            pool=WAREHOUSE_POOL)
def medflow_dbt_bronze_silver(context: dg.AssetExecutionContext, dbt: DbtCliResource,
                              warehouse: WarehouseResource):
    yield from _build(context, dbt, warehouse)


@dbt_assets(manifest=MANIFEST_PATH, project=dbt_project, dagster_dbt_translator=TRANSLATOR,
            select="path:models/gold", name="medflow_dbt_gold", backfill_policy=single_run, pool=WAREHOUSE_POOL)
def medflow_dbt_gold(context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource):
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
