"""The Definitions object: what the graph contains and how it is grouped."""

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
    assert groups["quality"] == {"quality/data_quality_scorecard"}
    assert groups["bronze"] == {"bronze/bronze_claim_lines"}
    assert {"silver/silver_claim_lines", "silver/silver_claims_quarantine",
            "silver/silver_data_quality_log"} <= groups["silver"]
    assert groups["gold"] == {"gold/claims_monthly_summary", "gold/claims_approval_funnel",
                              "gold/provider_performance", "gold/department_revenue"}


def test_bronze_depends_on_the_landing_registry():
    deps = {d.asset_key.to_user_string() for d in _specs()["bronze/bronze_claim_lines"].deps}
    assert deps == {"landing_files"}


def test_every_step_touching_the_warehouse_is_in_the_duckdb_pool():
    for d in [*defs.assets, *defs.asset_checks]:
        assert d.op.pool == "duckdb_warehouse", d

def test_every_silver_and_gold_asset_has_a_check_and_a_blocking_one_where_it_gates():
    graph = defs.resolve_asset_graph()
    checks_by_asset: dict[str, list] = {}
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        checks_by_asset.setdefault(check_key.asset_key.to_user_string(), []).append(spec)
    layered = [k for k, spec in _specs().items() if spec.group_name in ("bronze", "silver", "gold")]
    assert len(layered) == 10
    for key in layered:
        names = {c.name for c in checks_by_asset.get(key, [])}
        assert any(n.startswith("pandera_") for n in names), f"{key} has no Pandera check"
    silver_blocking = {c.name for c in checks_by_asset["silver/silver_claim_lines"] if c.blocking}
    assert {"pandera_SilverClaimLines", "quarantine_rate_gate"} <= silver_blocking
    for gold in ("claims_monthly_summary", "claims_approval_funnel", "provider_performance", "department_revenue"):
        assert any(c.blocking and c.name.startswith("pandera_") for c in checks_by_asset[f"gold/{gold}"])


def test_private_dagster_dbt_hooks_we_override_still_exist():
    """MedflowDbtCliResource skips `dbt --version` and the in-process adapter (~4 s a run) by overriding
    two private members; an upgrade that renames them must fail here, not silently slow down."""
    assert hasattr(DbtCliResource, "_cli_version")
    assert hasattr(DbtCliResource, "_initialize_dbt_core_adapter")
    res = defs.resources["dbt"]
    assert isinstance(res, MedflowDbtCliResource)
    assert res._cli_version.major == 1 and res._cli_version.minor == 11
    assert res._initialize_dbt_core_adapter([]) is None
