"""`landing_files`: per landed file (partition), its checksum and verdict against the payer contract,
recorded in the landing registry that dbt reads."""

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import dagster as dg

from medflow_assets.landing.contracts import ContractError, PayerContract, load_contracts, refresh_derived
from medflow_assets.landing.partitions import TRANSIENT_RETRY, landing_file_partitions, single_run
from medflow_assets.landing.resource import LandingResource
from medflow_assets.landing.zone import (
    CREDENTIAL_ERRORS,
    CREDENTIALS_HINT,
    LandedFile,
    LandingReadError,
    held_file,
    inspect_object,
)
from medflow_assets.resources import WAREHOUSE_POOL, WarehouseResource, only_transient_retried
from medflow_assets.settings import SettingsError, announce_key, load_settings

REGISTRY_TABLE = "landing.landing_file_registry"
CONTRACTS_TABLE = "landing.payer_contracts"
VERSIONS_TABLE = "landing.landing_file_versions"
CONTRACT_CHECK = "files_match_payer_contracts"
COPY_CHECK = "no_file_landed_twice"
UNREAD_CHECK = "every_landed_file_read"
UNREAD_SHOWN = 20  # files named in the check's description; the metadata has the count

_REGISTRY_DDL = f"""
CREATE SCHEMA IF NOT EXISTS landing;
CREATE TABLE IF NOT EXISTS {REGISTRY_TABLE} (
  source_file VARCHAR PRIMARY KEY, payer VARCHAR NOT NULL, path VARCHAR NOT NULL, size_bytes BIGINT,
  checksum VARCHAR, header_json VARCHAR, status VARCHAR NOT NULL, error VARCHAR,
  first_seen_at TIMESTAMP NOT NULL, checked_at TIMESTAMP NOT NULL, first_landed_at TIMESTAMP
);
-- first_landed_at: when a file of this name first landed, kept through its corrections (the order of a
-- line's versions across files, macros/line_versions.sql); added after the first registries
ALTER TABLE {REGISTRY_TABLE} ADD COLUMN IF NOT EXISTS first_landed_at TIMESTAMP;
-- etag: an S3 object's ETag when its bytes (checksum) were read, so the S3 sensor, which knows objects by
-- ETag, can tell the bytes are loaded already (sensors.warehouse_holds); NULL for local files
ALTER TABLE {REGISTRY_TABLE} ADD COLUMN IF NOT EXISTS etag VARCHAR;
-- held_reason: set while the file's payer contract is invalid. The row keeps its last verdict (status,
-- checksum: what silver holds), the dbt step leaves the file out (transform/assets.py write_selection), and
-- the sensor runs it once the contract is valid (sensors.warehouse_holds does not count it as loaded)
ALTER TABLE {REGISTRY_TABLE} ADD COLUMN IF NOT EXISTS held_reason VARCHAR;
CREATE TABLE IF NOT EXISTS {CONTRACTS_TABLE} (payer VARCHAR PRIMARY KEY, contract_json VARCHAR NOT NULL);
-- every version (bytes) of every file landing accepted, with when it was first seen: a file with the bytes of
-- another file's earlier version is a copy too (write_registry), or a rerun would load it over the correction
CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (
  source_file VARCHAR NOT NULL, checksum VARCHAR NOT NULL, first_seen_at TIMESTAMP NOT NULL,
  PRIMARY KEY (source_file, checksum)
);
"""


def write_registry(con, files: list[LandedFile], contracts: dict[str, PayerContract],
                   seen_at: datetime | None = None, gone: dict[str, str] | None = None,
                   keep_contracts: set[str] = frozenset(), held: list[LandedFile] = ()) -> dict[str, str]:
    """Upsert these files into the registry and replace the contracts. A file version (same checksum)
    keeps the time it was first seen, so reprocessing unchanged input gives identical tables.
    dbt reads both tables at run time (dbt vars would force a full re-parse on every change).

    A file with the same bytes as another accepted file (a payer re-sending a file under a new name) is a
    copy: loading it would count every line twice. The file first seen stays the original (first_seen_at
    is to the second; in a tie the file the registry already holds as accepted wins, then the first name);
    each copy is rejected here, naming its original (files with a header and no rows are never copies).
    `seen_at` is when this scan saw the files (default: now, to the second).
    `first_landed_at` is when a file of this name first landed: its last write (mtime, or LastModified on
    S3; local time, like the other times here) when it is first registered, else the scan time; kept
    through its corrections, and set anew when a file that left the zone (missing) lands again. It orders
    a line's versions across files (dbt_project/macros/line_versions.sql).
    `gone`: {file: why} for registered files no longer in the landing zone. An accepted one becomes
    `missing`: dbt stops reading it (its rows already loaded stay), and it still counts as the original of
    any copy of it that lands later.
    `keep_contracts`: payers whose contract file is invalid now. The table keeps their last valid contract,
    the one their loaded rows were read with (the quarantine-rate gate reads its max_quarantine_rate), with
    what MedFlow derives from a contract (canonical fields, date pattern) brought up to date.
    `held`: files of such payers (zone.held_file). A registered one keeps its row, marked with held_reason;
    one never registered gets a `rejected` row with the reason (nothing of it was read).
    Returns {copy: original} and sets each copy's error."""
    con.execute(_REGISTRY_DDL)
    con.execute("CREATE OR REPLACE TEMP TABLE scan (source_file VARCHAR, payer VARCHAR, path VARCHAR, "
                "size_bytes BIGINT, checksum VARCHAR, header_json VARCHAR, status VARCHAR, error VARCHAR, "
                "modified_at TIMESTAMP, etag VARCHAR)")
    if files:
        con.executemany("INSERT INTO scan VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            # a rejected file's first line may be data (no header): only accepted headers are kept, and of
            # them only the contract's column names (zone.kept_header)
            (f.source_file, f.payer, f.path, f.size_bytes, f.checksum, json.dumps(f.header) if f.accepted else None,
             "accepted" if f.accepted else "rejected", f.error, f.modified_at, f.etag) for f in files])
    con.execute("BEGIN TRANSACTION")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE merged AS
        SELECT s.* EXCLUDE (modified_at), CASE WHEN r.checksum IS NOT DISTINCT FROM s.checksum THEN r.first_seen_at
                         ELSE coalesce(?::TIMESTAMP, date_trunc('second', now()::TIMESTAMP)) END AS first_seen_at,
               now()::TIMESTAMP AS checked_at,
               -- a file back after it left the zone (missing) lands anew
               coalesce(CASE WHEN r.status IS DISTINCT FROM 'missing' THEN coalesce(r.first_landed_at, r.first_seen_at) END,
                        s.modified_at, ?::TIMESTAMP, date_trunc('second', now()::TIMESTAMP)) AS first_landed_at
        FROM scan s LEFT JOIN {REGISTRY_TABLE} r USING (source_file)""", [seen_at, seen_at])
    # the versions of files accepted before this table existed: the registry's accepted and missing files
    con.execute(f"INSERT INTO {VERSIONS_TABLE} SELECT source_file, checksum, first_seen_at FROM {REGISTRY_TABLE} "
                "WHERE status IN ('accepted', 'missing') AND checksum IS NOT NULL ON CONFLICT DO NOTHING")
    with_rows = [f.source_file for f in files if f.accepted and f.has_rows]
    # `held`: the registry already holds these bytes under this name as an accepted file. Earlier versions
    # of every file count too (a copy of one stays a copy after its original was corrected), and files away
    # from the zone (missing) or not in this run as they are now.
    found = con.execute(f"""
        WITH candidates AS (
          SELECT m.source_file, m.checksum, m.first_seen_at, true AS in_run,
                 coalesce(r.status = 'accepted' AND r.checksum = m.checksum, false) AS held
          FROM merged m LEFT JOIN {REGISTRY_TABLE} r USING (source_file)
          WHERE m.status = 'accepted' AND list_contains(?::VARCHAR[], m.source_file)
          UNION ALL
          SELECT source_file, checksum, first_seen_at, false, true FROM {REGISTRY_TABLE}
          WHERE status IN ('accepted', 'missing') AND source_file NOT IN (SELECT source_file FROM scan)
          UNION ALL
          SELECT source_file, checksum, first_seen_at, false, true FROM {VERSIONS_TABLE})
        SELECT c.source_file, c.original, coalesce(r.checksum, g.checksum) IS DISTINCT FROM c.checksum FROM (
          SELECT source_file, checksum, in_run, first_value(source_file) OVER (
                   PARTITION BY checksum ORDER BY first_seen_at, held DESC, source_file) AS original
          FROM candidates) c
        LEFT JOIN merged r ON r.source_file = c.original
        LEFT JOIN {REGISTRY_TABLE} g ON g.source_file = c.original
        WHERE c.in_run AND c.source_file <> c.original ORDER BY c.source_file""", [with_rows]).fetchall()
    copies = {copy: original for copy, original, _ in found}
    for f in files:
        if f.source_file in copies:
            earlier = next(e for c, _, e in found if c == f.source_file)
            f.error = (f"{f.source_file}: same bytes (sha256 {f.checksum[:12]}...) as "
                       f"{'an earlier version of ' if earlier else ''}{copies[f.source_file]}, which landed first; "
                       "the copy is not loaded, so its lines are not counted twice. Remove one of the two files, or "
                       "send a correction under the original's name.")
    if copies:
        con.executemany("UPDATE merged SET status = 'rejected', error = ? WHERE source_file = ?",
                        [(f.error, f.source_file) for f in files if f.source_file in copies])
    con.execute(f"DELETE FROM {REGISTRY_TABLE} WHERE source_file IN (SELECT source_file FROM scan)")
    con.execute(f"INSERT INTO {REGISTRY_TABLE} BY NAME SELECT * FROM merged")
    con.execute(f"INSERT INTO {VERSIONS_TABLE} SELECT source_file, checksum, first_seen_at FROM merged "
                "WHERE status = 'accepted' AND list_contains(?::VARCHAR[], source_file) ON CONFLICT DO NOTHING",
                [with_rows])
    # a file withdrawn (landed again with its header only) has no lines left: its earlier bytes landing under
    # another name are that data sent again, not a copy of lines still loaded
    con.execute(f"DELETE FROM {VERSIONS_TABLE} WHERE list_contains(?::VARCHAR[], source_file)",
                [[f.source_file for f in files if f.accepted and not f.has_rows]])
    if held:
        con.executemany(f"UPDATE {REGISTRY_TABLE} SET held_reason = ?, checked_at = now()::TIMESTAMP "
                        "WHERE source_file = ?", [(f.error, f.source_file) for f in held])
        con.executemany(f"""
            INSERT INTO {REGISTRY_TABLE} (source_file, payer, path, size_bytes, status, error, first_seen_at,
                                          checked_at, held_reason, first_landed_at)
            SELECT ?, ?, ?, ?, 'rejected', ?, coalesce(?::TIMESTAMP, date_trunc('second', now()::TIMESTAMP)),
                   now()::TIMESTAMP, ?, coalesce(?::TIMESTAMP, ?::TIMESTAMP, date_trunc('second', now()::TIMESTAMP))
            WHERE NOT EXISTS (SELECT 1 FROM {REGISTRY_TABLE} WHERE source_file = ?)""",
                        [(f.source_file, f.payer, f.path, f.size_bytes, f.error, seen_at, f.error, f.modified_at,
                          seen_at, f.source_file) for f in held])
    if gone:
        con.executemany(f"UPDATE {REGISTRY_TABLE} SET status = 'missing', error = ?, "
                        "checked_at = now()::TIMESTAMP WHERE source_file = ? AND status = 'accepted'",
                        [(why, k) for k, why in gone.items()])
        # a rejected file whose earlier version's rows silver holds (a correction that was rejected) is gone
        # too, with the checksum of those rows: the quarantine-rate gate stops counting it (found on review)
        scanned = {f.source_file for f in files}
        if loaded := _loaded_checksums(con, [k for k in gone if k not in scanned]):
            con.executemany(f"UPDATE {REGISTRY_TABLE} SET status = 'missing', error = ?, checksum = ?, "
                            "header_json = NULL, checked_at = now()::TIMESTAMP "
                            "WHERE source_file = ? AND status = 'rejected'",
                            [(gone[k], checksum, k) for k, checksum in loaded.items()])
        # a file gone from the zone is held no longer: nothing is left to run once its contract is valid
        con.execute(f"UPDATE {REGISTRY_TABLE} SET held_reason = NULL WHERE list_contains(?, source_file)",
                    [list(gone)])
    kept = con.execute(f"SELECT payer, contract_json FROM {CONTRACTS_TABLE} WHERE list_contains(?::VARCHAR[], payer)",
                       [sorted(keep_contracts)]).fetchall()
    con.execute(f"DELETE FROM {CONTRACTS_TABLE}")
    if kept:
        con.executemany(f"INSERT INTO {CONTRACTS_TABLE} VALUES (?, ?)",
                        [(payer, json.dumps(_refreshed(json.loads(cj)), sort_keys=True)) for payer, cj in kept])
    if contracts:
        con.executemany(f"INSERT INTO {CONTRACTS_TABLE} VALUES (?, ?)",
                        [(name, json.dumps(c.as_dbt_json(), sort_keys=True)) for name, c in contracts.items()])
    _keep_contract_names_only(con, {**{payer: set(json.loads(cj)["columns"].values()) for payer, cj in kept},
                                    **{name: set(c.required_columns) for name, c in contracts.items()}})
    con.execute("COMMIT")
    return copies


def _keep_contract_names_only(con, names: dict[str, set[str]]) -> None:
    """Registries written before zone.kept_header hold whole header lines, and a broken one can hold a data
    row: every cell that is not one of its payer's contract column names becomes null, as landing now
    stores headers (a payer without any contract keeps its rows as they are until its files land again)."""
    rows = con.execute(f"SELECT source_file, payer, header_json FROM {REGISTRY_TABLE} "
                       "WHERE header_json IS NOT NULL AND list_contains(?::VARCHAR[], payer)", [sorted(names)]).fetchall()
    fixes = []
    for source_file, payer, header_json in rows:
        header = json.loads(header_json)
        kept = [h if h in names[payer] else None for h in header]
        if kept != header:
            fixes.append((json.dumps(kept), source_file))
    if fixes:
        con.executemany(f"UPDATE {REGISTRY_TABLE} SET header_json = ? WHERE source_file = ?", fixes)


def _contracts_removed(warehouse: WarehouseResource, settings, payers: set[str]) -> dict[str, str]:
    """{payer: why} for the landing folders among `payers` (no contract now) whose files the registry holds
    accepted: their contract file was removed after they loaded. Their files are held, as while a contract is
    invalid (silver would read their rows again with no contract and quarantine every line); a folder never
    loaded has its files rejected for the lack of a contract instead."""
    if not payers:
        return {}
    with warehouse.connect() as con:
        con.execute(_REGISTRY_DDL)
        loaded = [p for (p,) in con.execute(f"SELECT DISTINCT payer FROM {REGISTRY_TABLE} WHERE status = 'accepted' "
                                            "AND list_contains(?, payer) ORDER BY 1", [sorted(payers)]).fetchall()]
    return {p: (f"payer contract {settings.contracts_path / f'{p}.yaml'} is missing, and files of {p}/ were loaded "
                "with the one it held (removed, or moved away?)") for p in loaded}


def _loaded_checksums(con, source_files: list[str]) -> dict[str, str]:
    """{file: the checksum of its rows silver holds} for those of `source_files` silver loaded."""
    if not source_files or not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = "
                                            "'silver' AND table_name = 'silver_data_quality_log'").fetchone()[0]:
        return {}
    return dict(con.execute("SELECT source_file, any_value(file_checksum) FROM silver.silver_data_quality_log "
                            "WHERE list_contains(?::VARCHAR[], source_file) GROUP BY 1", [source_files]).fetchall())


def _refreshed(dbt_json: dict) -> dict:
    """refresh_derived, or the contract as stored when this version cannot derive from it (it was valid for
    the version that stored it)."""
    try:
        return refresh_derived(dbt_json)
    except (KeyError, ValueError):
        return dbt_json


def _why_gone(source_file: str, zone, unread: list[str]) -> str:
    not_read = next((u.split(": ", 1)[1] for u in unread if u.startswith(f"{source_file}: ")), None)
    if not_read:  # still there, but no longer read (a contract's file_glob changed, say)
        return f"{source_file} is no longer read ({not_read}); its rows already loaded are kept"
    return f"{source_file} is no longer in {zone.description}; its rows already loaded are kept"


@dg.asset(
    group_name="landing",
    kinds={"duckdb"},
    pool=WAREHOUSE_POOL,
    partitions_def=landing_file_partitions,
    backfill_policy=single_run,
    retry_policy=TRANSIENT_RETRY,
    check_specs=[dg.AssetCheckSpec(CONTRACT_CHECK, asset="landing_files",
                                   description="Every payer contract is valid, and every landed file has the columns its "
                                               "payer contract names."),
                 dg.AssetCheckSpec(COPY_CHECK, asset="landing_files",
                                   description="No landed file has the same bytes as another one (a re-sent "
                                               "file under a new name); copies are rejected, not loaded."),
                 dg.AssetCheckSpec(UNREAD_CHECK, asset="landing_files",
                                   description="Every file in the landing zone is a claim file MedFlow reads (in a "
                                               "payer folder, named as its contract says); the others are named "
                                               "here, never skipped without a word.")],
    description="Registry of landed files (one partition per file, key <payer>/<file>): checksum, and whether "
                "each file matches its payer's contract. Only accepted files flow into bronze.",
)
def landing_files(context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingResource):
    with only_transient_retried("landing", warehouse):
        try:
            settings = load_settings()  # stops here, before any data is read, when settings are unusable
            # a payer whose contract is invalid has its files held (below); the other payers' files flow
            invalid: dict[str, str] = {}
            contracts = load_contracts(settings.contracts_path, invalid)
            if not contracts:
                raise ContractError("no payer contract is valid: " + "; ".join(invalid.values()))
        except (SettingsError, ContractError) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc  # retrying cannot help
        announce_key(settings, context.log)
        zone = landing.zone()
        wanted = sorted(context.partition_keys)
        attempt = context.retry_number + 1
        try:
            scan = zone.scan(contracts)
            present = {o.source_file: o for o in scan.objects}
            invalid |= _contracts_removed(warehouse, settings, {o.payer for o in scan.objects} - {*contracts, *invalid})
            # sha256 releases the GIL: files are hashed in parallel (1.9 GB in 11 files: 1.4 s -> 0.7 s on 2 cores)
            with ThreadPoolExecutor(max_workers=max(1, settings.threads)) as pool:
                files = list(pool.map(lambda k: inspect_object(zone, present[k], contracts.get(present[k].payer)),
                                      [k for k in wanted if k in present and present[k].payer not in invalid]))
            held = [held_file(present[k], invalid[present[k].payer]) for k in wanted
                    if k in present and present[k].payer in invalid]
            for payer, why in invalid.items():
                context.log.error(f"{why} -- the files of landing folder {payer}/ are held (not read) until it is "
                                  "fixed; the other payers' files flow")
        except LandingReadError as exc:
            if any(code in str(exc) for code in CREDENTIAL_ERRORS):
                raise dg.Failure(description=f"{exc} -- {CREDENTIALS_HINT} (not retried)",
                                 allow_retries=False) from exc
            context.log.warning(f"landing read failed (attempt {attempt} of {TRANSIENT_RETRY.max_retries + 1}): {exc}")
            raise dg.Failure(description=f"{exc} (attempt {attempt} of {TRANSIENT_RETRY.max_retries + 1}; retried "
                                         "with exponential backoff)") from exc
        with warehouse.connect() as con:
            # The run's files not in the zone; in the run the landing sensor asks for when files left the zone
            # (tag medflow/change=deleted, one run per tick however many left), also every other file the registry
            # holds as accepted that is gone, so a deleted payer folder is one run, not one per file. Other runs
            # mark only their own files: the sensor would not notice a file that was away only for a moment.
            gone = {k: _why_gone(k, zone, scan.unread) for k in wanted if k not in present}
            if context.run.tags.get("medflow/change") == "deleted":
                con.execute(_REGISTRY_DDL)  # idempotent: the registry may not exist yet
                gone |= {k: _why_gone(k, zone, scan.unread) for (k,) in con.execute(
                    f"SELECT source_file FROM {REGISTRY_TABLE} WHERE status = 'accepted'").fetchall() if k not in present}
                # and every rejected one whose earlier rows silver holds (a correction that was rejected)
                rejected_gone = [k for (k,) in con.execute(f"SELECT source_file FROM {REGISTRY_TABLE} WHERE status = "
                                                           "'rejected'").fetchall() if k not in present]
                gone |= {k: _why_gone(k, zone, scan.unread) for k in _loaded_checksums(con, rejected_gone)}
            copies = write_registry(con, files, contracts, gone=gone, keep_contracts=set(invalid), held=held)
        rejected = [f for f in files if not f.accepted]
        for f in rejected:
            if f.source_file in copies:
                context.log.warning(f"Rejected landed file {f.error}")
            else:
                context.log.error(f"Rejected landed file {f.error}")
        for why in list(gone.values())[:UNREAD_SHOWN]:
            context.log.warning(why)
        if len(gone) > UNREAD_SHOWN:
            context.log.warning(f"... and {len(gone) - UNREAD_SHOWN} more files no longer in the zone or no longer read")
        for why in scan.unread[:UNREAD_SHOWN]:
            context.log.warning(f"Not read: {why}")
        held_names = ", ".join(f.source_file for f in held[:UNREAD_SHOWN]) + (" ..." if len(held) > UNREAD_SHOWN else "")
        if held:
            context.log.error(f"{len(held)} file(s) held while their payer's contract is invalid: {held_names}")
        accepted = [f for f in files if f.accepted]
        context.log.info(f"{len(accepted)} landed files accepted, {len(rejected)} rejected, {len(held)} held, "
                         f"from {zone.description}")
        yield dg.MaterializeResult(metadata={
            "files_accepted": len(accepted),
            "files_rejected": len(rejected),
            "files_held": len(held),
            "files_missing": len(gone),
            "bytes_accepted": sum(f.size_bytes for f in accepted),
            "landing_zone": zone.description,
            "files": dg.MetadataValue.md(
                "| file | payer | status | sha256 |\n|---|---|---|---|\n" + "\n".join(
                    f"| {f.source_file} | {f.payer} | {'accepted' if f.accepted else 'rejected'} | {f.checksum[:12]} |"
                    for f in files[:200])
                + "".join(f"\n| {f.source_file} | {f.payer} | held | - |" for f in held[:max(0, 200 - len(files))])),
        })
        not_matching = [f for f in rejected if f.source_file not in copies]
        # an invalid contract is said in every landing run until it is fixed, whether or not the run has its files
        problems = list(invalid.values())
        if held:
            problems.append(f"{len(held)} file(s) held until their contract is valid: {held_names}")
        problems += [f.error for f in not_matching] + list(gone.values())[:UNREAD_SHOWN]
        if len(gone) > UNREAD_SHOWN:
            problems.append(f"... and {len(gone) - UNREAD_SHOWN} more files no longer in the zone")
        yield dg.AssetCheckResult(
            check_name=CONTRACT_CHECK,
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(problems) if problems else
            f"all {len(files) - len(copies)} files checked match their payer contracts",
            metadata={"files_checked": len(files) - len(copies), "files_rejected": len(not_matching),
                      "invalid_contracts": ", ".join(sorted(invalid)) or "none", "files_held": len(held),
                      "rejected_files": ", ".join(f.source_file for f in not_matching) or "none"},
        )
        # A copy loses nothing (its original's rows are loaded): a warning for whoever tidies the landing zone.
        yield dg.AssetCheckResult(
            check_name=COPY_CHECK,
            passed=not copies,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(f"{c} is a copy of {o} (not loaded)" for c, o in copies.items()) if copies else
            f"no file among the {len(files)} checked is a copy of another landed file",
            metadata={"copies_rejected": len(copies),
                      "copies": ", ".join(f"{c} = {o}" for c, o in copies.items()) or "none"},
        )
        # A file MedFlow does not read loses nothing already loaded, but someone meant it to be read.
        more = len(scan.unread) - UNREAD_SHOWN
        yield dg.AssetCheckResult(
            check_name=UNREAD_CHECK,
            passed=not scan.unread,
            severity=dg.AssetCheckSeverity.WARN,
            description="; ".join(scan.unread[:UNREAD_SHOWN]) + (f"; and {more} more" if more > 0 else "")
            if scan.unread else f"every file in {zone.description} is a claim file of a payer folder",
            metadata={"files_not_read": len(scan.unread)},
        )
