"""Which schema guards which table, and the quarantine-rate gate, as two check steps: one between silver
and gold (its blocking checks stop gold), one after gold."""

import json

import dagster as dg

from medflow_assets.landing.assets import REGISTRY_TABLE
from medflow_assets.quality import schemas as s
from medflow_assets.quality.factory import SchemaCheck, run_source_files, schema_checks
from medflow_assets.transform.assets import NOT_VALID_CSV, model_key

DEFAULT_MAX_QUARANTINE_RATE = 0.10
CONFLICT_RULE = "claim_member_conflict"  # silver rule decided across files (dbt_project/macros/line_versions.sql)


def _percent(rate: float) -> str:
    """A contract's limit as written, in percent: 0.1 -> 10%, 0.015 -> 1.5% (not rounded to 2%)."""
    return f"{rate * 100:.4g}%"


def _check(model_name: str, layer: str, schema, keys: tuple[str, ...], blocking: bool,
           scope_through: tuple[str, str] | None = None) -> SchemaCheck:
    return SchemaCheck(model_key(model_name), f"{layer}.{model_name}", schema, keys, blocking, scope_through)


LINEAGE_KEY = ("source_file", "source_row_number")
BRONZE_SILVER_CHECKS = [
    _check("bronze_claim_lines", "bronze", s.BronzeClaimLines, LINEAGE_KEY, False),
    _check("silver_claim_lines_validated", "silver", s.SilverClaimLinesValidated, LINEAGE_KEY, False),
    _check("silver_claim_lines", "silver", s.SilverClaimLines, ("payer", "claim_id", "claim_line_number", "source_file"),
           True),
    # silver_members has no source_file: a run checks the members its files' claim lines refer to
    _check("silver_members", "silver", s.SilverMembers, ("payer", "member_key"), False,
           scope_through=("member_key", "silver.silver_claim_lines_validated")),
    _check("silver_claims_quarantine", "silver", s.SilverClaimsQuarantine, LINEAGE_KEY, False),
    _check("silver_data_quality_log", "silver", s.SilverDataQualityLog, ("source_file", "rule_id"), False),
]
GOLD_CHECKS = [
    _check("claims_monthly_summary", "gold", s.ClaimsMonthlySummary, ("service_month", "payer"), True),
    _check("claims_approval_funnel", "gold", s.ClaimsApprovalFunnel, ("payer", "service_month"), True),
    _check("payer_provider_stats", "gold", s.PayerProviderStats, ("provider_npi", "payer"), True),
    _check("payer_department_stats", "gold", s.PayerDepartmentStats, ("department", "payer"), True),
    _check("provider_performance", "gold", s.ProviderPerformance, ("provider_npi",), True),
    _check("department_revenue", "gold", s.DepartmentRevenue, ("department",), True),
]

QUARANTINE_GATE = dg.AssetCheckSpec(
    "quarantine_rate_gate", asset=model_key("silver_claim_lines"), blocking=True,
    # after landing in any run that has both: the registry says which files left the zone
    additional_deps=[dg.AssetKey("landing_files")],
    description="Fails when a landed file has more of its rows quarantined than its payer's contract allows "
                f"(max_quarantine_rate, default {DEFAULT_MAX_QUARANTINE_RATE:.0%}); blocks gold.")


def quarantine_rates(con) -> list[dict]:
    """Per landed file: rows, quarantined rows, rate, the payer's threshold, the top 3 rules, the rows
    quarantined as claim_member_conflict (decided with other files' lines), and whether the file is gone from
    the landing zone (registry status missing: its loaded rows stay, but the gate no longer holds gold back
    for it; deleting the file is how an operator sets it aside)."""
    rows = con.execute(f"""
        WITH files AS (
          SELECT payer, source_file, max(rows_checked) AS rows_checked, max(rows_quarantined) AS rows_quarantined
          FROM silver.silver_data_quality_log GROUP BY ALL),
        top AS (
          SELECT source_file, list(rule_id || ' (' || rows_failed || ')' ORDER BY rows_failed DESC, rule_id)
                 FILTER (WHERE rows_failed > 0) AS rules,
                 coalesce(sum(rows_failed) FILTER (WHERE rule_id = '{CONFLICT_RULE}'), 0) AS conflicted
          FROM silver.silver_data_quality_log GROUP BY ALL)
        SELECT f.payer, f.source_file, f.rows_checked, f.rows_quarantined,
               f.rows_quarantined / greatest(f.rows_checked, 1) AS rate,
               c.contract_json, coalesce(t.rules, []) AS rules, coalesce(t.conflicted, 0) AS conflicted,
               g.status = 'missing' AS gone
        FROM files f LEFT JOIN top t USING (source_file)
        LEFT JOIN landing.payer_contracts c USING (payer)
        LEFT JOIN {REGISTRY_TABLE} g USING (source_file)
        ORDER BY f.source_file""").fetchall()
    out = []
    for payer, source_file, n, q, rate, contract_json, rules, conflicted, gone in rows:
        contract = json.loads(contract_json) if contract_json else {}
        threshold = float(contract.get("max_quarantine_rate", DEFAULT_MAX_QUARANTINE_RATE))
        out.append({"payer": payer, "source_file": source_file, "rows": int(n), "quarantined": int(q),
                    "rate": float(rate), "threshold": threshold, "top_rules": list(rules[:3]),
                    "conflicted": int(conflicted), "gone": bool(gone)})
    return out


def _conflict_hint(f: dict) -> str:
    """For a file over its limit partly through claim_member_conflict: those rows are not this file's fault
    alone, since the lines of their claims in another file name other members."""
    return (f"; {f['conflicted']} of them {CONFLICT_RULE}: their claims' lines in another file name another "
            "member (correcting the file that names the wrong one settles them; see silver_claims_quarantine)"
            ) if f["conflicted"] else ""


def quarantine_rate_gate(con, context):
    every = quarantine_rates(con)
    files = [f for f in every if not f["gone"]]
    gone_over = [f["source_file"] for f in every if f["gone"] and f["rate"] > f["threshold"]]
    over = [f for f in files if f["rate"] > f["threshold"]]
    table = "| file | payer | rows | quarantined | rate | threshold | top rules |\n|---|---|---|---|---|---|---|\n" + \
        "\n".join(f"| {f['source_file']} | {f['payer']} | {f['rows']} | {f['quarantined']} | {f['rate']:.2%} | "
                  f"{_percent(f['threshold'])} | {', '.join(f['top_rules']) or '-'} |" for f in (over or files))
    for f in over:
        context.log.error(f"Quarantine rate gate: {f['source_file']} has {f['rate']:.2%} of {f['rows']} rows "
                          f"quarantined (limit {_percent(f['threshold'])}); top rules {', '.join(f['top_rules'])}"
                          + _conflict_hint(f))
    yield dg.AssetCheckResult(
        asset_key=QUARANTINE_GATE.asset_key, check_name=QUARANTINE_GATE.name,
        passed=not over, severity=dg.AssetCheckSeverity.ERROR,
        description=("; ".join(f"{f['source_file']}: {f['rate']:.2%} quarantined > {_percent(f['threshold'])} "
                               f"(top rules: {', '.join(f['top_rules'])}{_conflict_hint(f)})" for f in over)
                     + (" -- to go on: correct the file in the landing zone (a header-only file withdraws its "
                        "rows), raise max_quarantine_rate in the payer's contract, or delete the file to accept "
                        "the rows already loaded" if over else "")
                     or f"all {len(files)} files within their quarantine-rate limit")
        + (f" (not counted, no longer in the landing zone: {', '.join(gone_over)})" if gone_over else ""),
        metadata={
            "files_checked": len(files),
            "files_over_threshold": len(over),
            "files_gone_not_counted": len(every) - len(files),
            "max_rate": dg.MetadataValue.float(round(max((f["rate"] for f in files), default=0.0), 4)),
            "files": dg.MetadataValue.md(table),
        },
    )


FILES_PARSED = dg.AssetCheckSpec(
    "landed_files_parsed", asset=model_key("bronze_claim_lines"),
    description="Every landed file of the run that matched its contract is valid CSV. A file that is not is "
                "rejected whole, named with the line DuckDB could not parse (never the line's text), and the "
                "run's other files go on to silver and gold.")


def files_parsed(con, context):
    files = run_source_files(context)
    rows = con.execute(f"""
        SELECT source_file, error FROM {REGISTRY_TABLE}
        WHERE status = 'rejected' AND contains(error, ?)
          AND (? IS NULL OR list_contains(?, source_file))
        ORDER BY source_file""", [f" {NOT_VALID_CSV} ", files, files]).fetchall()
    yield dg.AssetCheckResult(
        asset_key=FILES_PARSED.asset_key, check_name=FILES_PARSED.name, passed=not rows,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(error for _, error in rows) if rows else
        ("no landed file is rejected as not valid CSV" if files is None else
         f"no file of the run's {len(files)} was rejected as not valid CSV"),
        metadata={"files_not_parsed": len(rows), "rejected_files": ", ".join(f for f, _ in rows) or "none"})


def bronze_silver_extra(con, context):
    selected = context.selected_asset_check_keys
    if QUARANTINE_GATE.key in selected:
        yield from quarantine_rate_gate(con, context)
    if FILES_PARSED.key in selected:
        yield from files_parsed(con, context)


bronze_silver_quality = schema_checks("bronze_silver_quality", BRONZE_SILVER_CHECKS,
                                      extra_specs=[QUARANTINE_GATE, FILES_PARSED], extra=bronze_silver_extra)
gold_quality = schema_checks("gold_quality", GOLD_CHECKS)
