"""`data_quality_scorecard`: per payer and file, valid rate, failures per rule and the lines another file's
version replaced, with the trend across runs."""

import dagster as dg

from medflow_assets.landing.partitions import TRANSIENT_RETRY, single_run
from medflow_assets.resources import WAREHOUSE_POOL, WarehouseResource, only_transient_retried
from medflow_assets.transform.assets import DOWNSTREAM_AUTOMATION, model_key

HISTORY = "quality.scorecard_history"


@dg.asset(
    key=["quality", "data_quality_scorecard"],
    deps=[model_key("silver_data_quality_log")],
    group_name="quality",
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    automation_condition=DOWNSTREAM_AUTOMATION,
    backfill_policy=single_run,
    retry_policy=TRANSIENT_RETRY,  # a warehouse another process holds past the wait (only_transient_retried)
    description="Valid rate, failures per rule and lines superseded by another file's version, for every landed "
                "file, appended to quality.scorecard_history each run; the metadata table compares each file with "
                "its previous measurement.",
)
def data_quality_scorecard(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    with only_transient_retried("data_quality_scorecard", warehouse):
        rows, runs = _measure(context.run.run_id, warehouse)
        return _report(rows, runs)


def _report(rows: list[tuple], runs: int) -> dg.MaterializeResult:
    lines = ["| payer | file | rows | valid rate | previous | change | failures per rule | superseded by another file |",
             "|---|---|---|---|---|---|---|---|"]
    for payer, source_file, n, rate, prev, failures, superseded in rows:
        change = "new" if prev is None else "-" if rate is None else f"{(rate - prev) * 100:+.2f} pp"
        rules = ", ".join(f"{k}: {v}" for k, v in sorted((failures or {}).items(), key=lambda kv: -kv[1])) or "-"
        lines.append(f"| {payer} | {source_file} | {n} | {'n/a (no rows)' if rate is None else f'{rate:.2%}'} | "
                     f"{'-' if prev is None else f'{prev:.2%}'} | {change} | {rules} | {'n/a' if superseded is None else superseded or '-'} |")
    total = sum(r[2] for r in rows)
    valid = sum(r[2] * r[3] for r in rows if r[2])
    return dg.MaterializeResult(metadata={
        "scorecard": dg.MetadataValue.md("\n".join(lines)),
        "files": len(rows),
        "overall_valid_rate": dg.MetadataValue.float(round(valid / total, 4) if total else 1.0),
        "lines_superseded": sum(r[6] or 0 for r in rows),
        "runs_in_history": runs,
    })


def _measure(run_id: str, warehouse: WarehouseResource) -> tuple[list[tuple], int]:
    """Append this run's measurement of every file to the history (one transaction; an attempt of the step
    again replaces its run's rows) and read it back with the previous measurement of each file."""
    with warehouse.connect() as con:
        con.execute("BEGIN")
        con.execute("CREATE SCHEMA IF NOT EXISTS quality")
        con.execute(f"""CREATE TABLE IF NOT EXISTS {HISTORY} (
            measured_at TIMESTAMP, run_id VARCHAR, payer VARCHAR, source_file VARCHAR, file_checksum VARCHAR,
            rows_checked BIGINT, rows_valid BIGINT, valid_rate DOUBLE, failures_per_rule MAP(VARCHAR, BIGINT),
            rows_superseded BIGINT)""")
        # history written before session 22 has no rows_superseded: it reads NULL (not measured) there
        con.execute(f"ALTER TABLE {HISTORY} ADD COLUMN IF NOT EXISTS rows_superseded BIGINT")
        con.execute(f"DELETE FROM {HISTORY} WHERE run_id = ?", [run_id])
        con.execute(f"""
            INSERT INTO {HISTORY} BY NAME
            SELECT now()::TIMESTAMP AS measured_at, ? AS run_id, payer, source_file, file_checksum,
                   max(rows_checked) AS rows_checked,
                   max(rows_checked) - max(rows_quarantined) AS rows_valid,
                   (max(rows_checked) - max(rows_quarantined)) / nullif(max(rows_checked), 0)  -- no rows: NULL
                     AS valid_rate,
                   map_from_entries(list({{'k': rule_id, 'v': rows_failed}} ORDER BY rule_id)
                                    FILTER (WHERE rows_failed > 0)) AS failures_per_rule,
                   -- valid lines of this file that another file's version replaced (not failures)
                   max(rows_superseded) AS rows_superseded
            FROM silver.silver_data_quality_log GROUP BY ALL""", [run_id])
        rows = con.execute(f"""
            WITH ranked AS (
              SELECT *, row_number() OVER (PARTITION BY source_file ORDER BY measured_at DESC, run_id) AS k
              FROM {HISTORY})
            SELECT c.payer, c.source_file, c.rows_checked, c.valid_rate, p.valid_rate AS previous_rate,
                   c.failures_per_rule, c.rows_superseded
            FROM ranked c LEFT JOIN ranked p ON p.source_file = c.source_file AND p.k = 2
            WHERE c.k = 1 AND c.run_id = ?
            ORDER BY c.payer, c.source_file""", [run_id]).fetchall()
        con.execute("COMMIT")
        runs = con.execute(f"SELECT count(DISTINCT run_id) FROM {HISTORY}").fetchone()[0]
    return rows, runs
