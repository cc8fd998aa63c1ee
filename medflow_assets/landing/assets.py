"""`landing_files`: the registry of landed files and their verdict against the payer contracts."""


import json

import dagster as dg

from medflow_assets.landing.contracts import PayerContract, load_contracts
from medflow_assets.landing.zone import LandedFile, scan_local
from medflow_assets.resources import WAREHOUSE_POOL, WarehouseResource
from medflow_assets.settings import announce_key, load_settings

REGISTRY_TABLE = "landing.landing_file_registry"
CONTRACTS_TABLE = "landing.payer_contracts"
CONTRACT_CHECK = "files_match_payer_contracts"

_REGISTRY_DDL = f"""
CREATE SCHEMA IF NOT EXISTS landing;
CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} (
  source_file VARCHAR PRIMARY KEY, payer VARCHAR NOT NULL, path VARCHAR NOT NULL, size_bytes BIGINT,
  checksum VARCHAR, header_json VARCHAR, status VARCHAR NOT NULL, error VARCHAR,
  first_seen_at TIMESTAMP NOT NULL, checked_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS {CONTRACTS_TABLE} (payer VARCHAR PRIMARY KEY, contract_json VARCHAR NOT NULL);
"""


def write_registry(con, files: list[LandedFile], contracts: dict[str, PayerContract]) -> None:
    """Replace the registry with the files present now, and the contracts with the current ones. A file
    version (same checksum) keeps the time it was first seen, so unchanged input gives identical tables.
    dbt reads both tables at run time (dbt vars would force a full re-parse on every change)."""
    con.execute(_REGISTRY_DDL)
    con.execute("CREATE OR REPLACE TEMP TABLE scan (source_file VARCHAR, payer VARCHAR, path VARCHAR, "
                "size_bytes BIGINT, checksum VARCHAR, header_json VARCHAR, status VARCHAR, error VARCHAR)")
    con.executemany("INSERT INTO scan VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
        (f.source_file, f.payer, f.path, f.size_bytes, f.checksum, json.dumps(f.header),
         "accepted" if f.accepted else "rejected", f.error) for f in files])
    con.execute("BEGIN TRANSACTION")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE merged AS
        SELECT s.*, CASE WHEN r.checksum IS NOT DISTINCT FROM s.checksum THEN r.first_seen_at
                         ELSE date_trunc('second', now()::TIMESTAMP) END AS first_seen_at,
               now()::TIMESTAMP AS checked_at
        FROM scan s LEFT JOIN {REGISTRY_TABLE} r USING (source_file)""")
    con.execute(f"DELETE FROM {REGISTRY_TABLE}")
    con.execute(f"INSERT INTO {REGISTRY_TABLE} BY NAME SELECT * FROM merged")
    con.execute(f"DELETE FROM {CONTRACTS_TABLE}")
    con.executemany(f"INSERT INTO {CONTRACTS_TABLE} VALUES (?, ?)",
                    [(name, json.dumps(c.as_dbt_json(), sort_keys=True)) for name, c in contracts.items()])
    con.execute("COMMIT")


@dg.asset(
    group_name="landing",
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    check_specs=[dg.AssetCheckSpec(CONTRACT_CHECK, asset="landing_files",
                                   description="Every landed file has the columns its payer contract names.")],
    description="Registry of the files in the landing zone: payer, checksum, and whether each file matches "
                "its payer's contract. Only accepted files flow into bronze.",
)
def landing_files(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    settings = load_settings()  # stops here, before any data is read, when settings are unusable
    announce_key(settings, context.log)
    contracts = load_contracts(settings.contracts_path)
    files = scan_local(settings.landing_path, contracts)
    with warehouse.connect() as con:
        write_registry(con, files, contracts)
    rejected = [f for f in files if not f.accepted]
    for f in rejected:
        context.log.error(f"Rejected landed file {f.error}")
    accepted = [f for f in files if f.accepted]
    context.log.info(f"{len(accepted)} landed files accepted, {len(rejected)} rejected, "
                     f"{len(contracts)} payer contracts: {', '.join(contracts)}")
    yield dg.MaterializeResult(metadata={
        "files_accepted": len(accepted),
        "files_rejected": len(rejected),
        "bytes_accepted": sum(f.size_bytes for f in accepted),
        "payers": ", ".join(sorted({f.payer for f in accepted})),
        "files": dg.MetadataValue.md(
            "| file | payer | status |\n|---|---|---|\n" + "\n".join(
                f"| {f.source_file} | {f.payer} | {'accepted' if f.accepted else 'rejected'} |" for f in files)),
    })
    yield dg.AssetCheckResult(
        check_name=CONTRACT_CHECK,
        passed=not rejected,
        severity=dg.AssetCheckSeverity.ERROR,
        description=("; ".join(f.error for f in rejected) if rejected
                     else f"all {len(files)} landed files match their payer contracts"),
        metadata={"files_checked": len(files), "files_rejected": len(rejected),
                  "rejected_files": ", ".join(f.source_file for f in rejected) or "none"},
    )
