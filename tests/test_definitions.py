"""The Definitions object: what the graph contains and how it is grouped."""

import dagster as dg
from dagster_dbt import DbtCliResource

from medflow_assets.definitions import defs
from medflow_assets.resources import MedflowDbtCliResource


def _specs():
    return {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}


def test_graph_has_landing_bronze_silver_gold_groups():
    groups = {}
    for key, spec in _specs().items():
        groups.setdefault(spec.group_name, set()).add(key)
    assert groups["landing"] == {"landing_files"}
    assert groups["bronze"] == {"bronze/bronze_claim_lines"}
    assert {"silver/silver_claim_lines", "silver/silver_claims_quarantine",
            "silver/silver_data_quality_log"} <= groups["silver"]
    assert groups["gold"] == {"gold/claims_monthly_summary", "gold/claims_approval_funnel",
                              "gold/provider_performance", "gold/department_revenue"}


def test_bronze_depends_on_the_landing_registry():
    deps = {d.asset_key.to_user_string() for d in _specs()["bronze/bronze_claim_lines"].deps}
    assert deps == {"landing_files"}


def test_every_warehouse_writer_is_in_the_duckdb_pool():
    for assets_def in defs.assets:
        if isinstance(assets_def, dg.AssetsDefinition):
            assert {op.pool for op in [assets_def.op]} == {"duckdb_warehouse"}, assets_def.keys


def test_private_dagster_dbt_hooks_we_override_still_exist():
    """MedflowDbtCliResource skips `dbt --version` and the in-process adapter (~4 s a run) by overriding
    two private members; an upgrade that renames them must fail here, not silently slow down."""
    assert hasattr(DbtCliResource, "_cli_version")
    assert hasattr(DbtCliResource, "_initialize_dbt_core_adapter")
    res = defs.resources["dbt"]
    assert isinstance(res, MedflowDbtCliResource)
    assert res._cli_version.major == 1 and res._cli_version.minor == 11
    assert res._initialize_dbt_core_adapter([]) is None
