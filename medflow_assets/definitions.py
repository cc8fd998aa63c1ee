"""The one Definitions object: a table of contents, no logic."""

import dagster as dg

from medflow_assets.landing.assets import landing_files
from medflow_assets.resources import build_resources
from medflow_assets.settings import load_settings
from medflow_assets.transform.assets import medflow_dbt_models

defs = dg.Definitions(
    assets=[landing_files, medflow_dbt_models],
    resources=build_resources(load_settings()),
    # Steps share one process: a step subprocess would re-import Dagster and dbt (~2 s each), and every
    # warehouse writer is serialized by the duckdb_warehouse pool anyway.
    executor=dg.in_process_executor,
)
