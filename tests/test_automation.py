"""Declarative automation: gold follows new silver partitions, but never past a failed blocking check."""

import dagster as dg
import pytest

from medflow_assets.definitions import defs
from medflow_assets.landing.first_load import register_landed_files
from medflow_assets.synth.generator import generate
from tests.helpers import ALL_ASSETS, medflow_env

GOLD = dg.AssetKey(["gold", "claims_monthly_summary"])
SILVER_SIDE = dg.AssetSelection.groups("landing", "bronze", "silver", "reference")
GOLD_SIDE = dg.AssetSelection.groups("gold", "quality")


def _run(landing, wh, instance, selection, partition_key=None):
    with medflow_env(landing_path=landing, warehouse_path=wh):
        from medflow_assets.resources import build_resources
        from medflow_assets.settings import load_settings
        settings = load_settings()
        register_landed_files(instance, settings)
        return dg.materialize(ALL_ASSETS, resources=build_resources(settings), instance=instance,
                              partition_key=partition_key, selection=selection, raise_on_error=False)


def _gold_requested(instance, cursor):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    return result.get_num_requested(GOLD) > 0, result.cursor


@pytest.mark.parametrize("second_file_defect_rate, gold_follows", [(0.0, True), (0.3, False)])
def test_gold_follows_new_partitions_only_when_blocking_checks_pass(tmp_path, second_file_defect_rate,
                                                                    gold_follows):
    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    instance = dg.DagsterInstance.ephemeral()
    generate(landing, 1200, seed=61, defect_rate=0.0, payers=["northwind"], manifest_dir=tmp_path / "m1")
    _, cursor = _gold_requested(instance, None)  # first tick: the baseline
    assert _run(landing, wh, instance, SILVER_SIDE, "northwind/northwind_claims_001.csv").success
    requested, cursor = _gold_requested(instance, cursor)
    assert requested, "gold should follow a new silver partition whose blocking checks passed"
    assert _run(landing, wh, instance, GOLD_SIDE).success  # what automation would launch
    _, cursor = _gold_requested(instance, cursor)

    # a second file lands (eager() waits for every upstream partition, so it lands only now)
    generate(landing, 1200, seed=62, defect_rate=second_file_defect_rate, payers=["cascade"],
             manifest_dir=tmp_path / "m2")
    second = _run(landing, wh, instance, SILVER_SIDE, "cascade/cascade_claims_001.txt")
    assert second.success == gold_follows  # at 30% bad rows the quarantine-rate gate (blocking) fails
    requested, _ = _gold_requested(instance, cursor)
    assert requested == gold_follows
