"""The one Definitions object: a table of contents, no logic."""

import gc

import dagster as dg

from medflow_assets.landing.assets import landing_files
from medflow_assets.landing.sensors import LANDING_JOB, local_landing_sensor, s3_landing_sensor
from medflow_assets.quality.checks import bronze_silver_quality, gold_quality
from medflow_assets.quality.scorecard import data_quality_scorecard
from medflow_assets.resources import build_resources
from medflow_assets.settings import load_settings
from medflow_assets.transform.assets import medflow_dbt_bronze_silver, medflow_dbt_gold

# One run per landed file (or per batch of files): its partition of landing/bronze/silver, then gold.
landing_file_job = dg.define_asset_job(LANDING_JOB, selection=dg.AssetSelection.all())

# Gold and the scorecard follow silver by their automation conditions (eager, once the blocking checks
# passed), also after runs that stopped short of gold (a silver-only run from the UI, a gate cleared later).
# On by default, like the landing sensors (Dagster's own automation sensor starts stopped).
automation_sensor = dg.AutomationConditionSensorDefinition(
    "medflow_automation", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30)

defs = dg.Definitions(
    assets=[landing_files, medflow_dbt_bronze_silver, medflow_dbt_gold, data_quality_scorecard],
    asset_checks=[bronze_silver_quality, gold_quality],
    jobs=[landing_file_job],
    sensors=[local_landing_sensor, s3_landing_sensor, automation_sensor],
    resources=build_resources(load_settings()),
    # Steps share one process: a step subprocess would re-import Dagster and dbt (~2 s each), and every
    # warehouse writer is serialized by the duckdb_warehouse pool anyway.
    executor=dg.in_process_executor,
)

# Whatever process loads these definitions (the `dagster` CLI, the run worker a sensor's run starts, the
# code server) has just created ~1M long-lived objects (Dagster, dbt, Pandera). Park them outside the
# cyclic GC: collections during a run stop re-scanning them and interpreter exit stops tearing them down
# one by one (~1.3 s per process, BENCHMARKS.md). They live as long as the process anyway.
gc.freeze()
