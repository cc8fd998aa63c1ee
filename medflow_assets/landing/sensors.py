"""Arrival sensors, one per landing backend: new file -> add its partition and request a run; changed file ->
rerun its partition; unchanged or only touched -> nothing; deleted -> a run of landing alone marks it
missing in the registry (its loaded rows stay), with the quarantine-rate gate, which no longer counts it.

The cursor holds each file's fingerprint and checksum and a counter of arrivals. run_key = file@checksum#n,
n counting every arrival the sensor requested a run for: a tick evaluated twice asks for the same runs
(Dagster drops the second), while bytes that come back later (a file reverted, re-landed after a failed
run) get a run of their own. A local file modified within the last `settle_seconds` may still be being
written: it is looked at again on a later tick, so a half-written file is not loaded (on S3 an object is
listed only once its upload is complete).

Each file's entry also holds a digest of its payer's contract (none: no contract): when the contract
changes (added for a folder whose files were rejected for lack of one, a column or date format fixed),
every file of that payer runs again. A file touched without new bytes runs again when the last run for it
failed (touching it is the way to retry by hand). Files new to Dagster in one tick run as one run (a
partition range); others run one file per run. A file the cursor does not know whose bytes the warehouse
already holds (after medflow-load, or a cursor reset) does not run again (warehouse_holds; on S3 by ETag).

A payer whose contract file is invalid has its files held: not run, not taken for deleted, an error on every
tick. A file a run held meanwhile (the registry's held_reason) runs once its contract is valid again."""

import hashlib
import json
import time

import dagster as dg
import duckdb

from medflow_assets.landing.assets import (
    CONTRACT_CHECK,
    CONTRACTS_TABLE,
    COPY_CHECK,
    REGISTRY_TABLE,
    UNREAD_CHECK,
)
from medflow_assets.landing.contracts import PayerContract, load_contracts
from medflow_assets.landing.partitions import landing_file_partitions
from medflow_assets.landing.resource import LandingResource
from medflow_assets.landing.zone import (
    LandingObject,
    LandingReadError,
    LandingZone,
    LocalLanding,
    digest_and_head,
)
from medflow_assets.quality.checks import QUARANTINE_GATE
from medflow_assets.settings import load_settings

LANDING_ASSET = dg.AssetKey("landing_files")
# The deleted-files run's checks: landing's own, and the gate.
LANDING_CHECKS = [dg.AssetCheckKey(dg.AssetKey("landing_files"), name)
                  for name in (CONTRACT_CHECK, COPY_CHECK, UNREAD_CHECK)]


def _sha256(zone: LandingZone, obj: LandingObject) -> str:
    return digest_and_head(zone, obj)[0]


def _etag(zone: LandingZone, obj: LandingObject) -> str:
    """An S3 object's checksum: its ETag (the fingerprint is ETag@LastModified)."""
    return obj.etag or obj.fingerprint.rsplit("@", 1)[0]


def contract_digest(contract: PayerContract | None) -> str:
    """What the payer's contract says (none: no contract); the canonical fields, which belong to MedFlow and
    not to the payer, are left out."""
    return "none" if contract is None else contract_json_digest(contract.as_dbt_json())


def contract_json_digest(dbt_json: dict) -> str:
    """contract_digest of a contract as dbt reads it (PayerContract.as_dbt_json(), landing.payer_contracts).
    What MedFlow derives (date_pattern, from date_format) is left out: a MedFlow upgrade that derives more
    does not count as every payer's contract changing."""
    said = {k: v for k, v in dbt_json.items() if k not in ("canonical_fields", "date_pattern")}
    return hashlib.sha256(json.dumps(said, sort_keys=True).encode()).hexdigest()[:16]


CURSOR_VERSION = 2


def read_cursor(cursor: str | None) -> tuple[dict[str, list[str]], int, dict[str, str]]:
    """({source_file: [fingerprint, checksum, contract digest]}, arrivals so far, {source_file: fingerprint
    of a file seen settling}); a cursor of earlier versions held the mapping alone, without digests."""
    data = json.loads(cursor) if cursor else {}
    if data.get("version") == CURSOR_VERSION:
        return data["files"], int(data["arrivals"]), data.get("settling", {})
    # an earlier cursor: its entries' contract digests (if any) were computed otherwise; each file takes the
    # current digest instead of counting as a contract change
    files = data.get("files", data)
    return {k: v[:2] for k, v in files.items()}, int(data.get("arrivals", 0)), {}


def evaluate_landing(zone: LandingZone, cursor: str | None, known_partitions: set[str],
                     checksum_of=None, settle_seconds: float = 0.0, now_ns: int | None = None,
                     failed_files=None, loaded_files=None,
                     held: dict[str, str] | None = None) -> tuple[list[dg.RunRequest], list[str], str, dict]:
    """(run requests, partitions to add, new cursor, summary). Pure apart from reading the zone (and
    `failed_files(keys)`, the files among `keys` whose last run failed, asked once, for the files touched
    without new bytes; and `loaded_files(keys)`, {file: (checksum, contract digest)} of the files among `keys`
    the warehouse already holds, asked once, for files the cursor does not know whose partition Dagster does:
    after `medflow-load`, or a cursor reset, those bytes are not run again; and `held`, {file: when a run
    held it} for every file the registry marks held (its contract was invalid then), or None when not known).

    Locally the fingerprint is size:mtime and the checksum is the sha256, computed only when the fingerprint
    moved; on S3 the fingerprint is ETag@LastModified and the checksum the ETag. A local file is settled
    when its last write is at least settle_seconds old; one whose mtime is in the future (a writer's clock
    ahead) once it is unchanged since the last tick."""
    previous, arrivals, was_settling = read_cursor(cursor)
    now_ns = time.time_ns() if now_ns is None else now_ns
    invalid: dict[str, str] = {}  # payer: why its contract is invalid; its files wait, the others go on
    contracts = load_contracts(load_settings().contracts_path, invalid)
    scan = zone.scan(contracts)
    digests = {payer: contract_digest(c) for payer, c in contracts.items()}
    state, settling, decided, touched = {}, {}, [], []
    summary = {"new": [], "changed": [], "contract changed": [], "contract fixed": [], "retried": [], "unchanged": [],
               "settling": [], "deleted": [], "not read": scan.unread, "held: contract invalid": [],
               "invalid contracts": invalid}
    for obj in scan.objects:
        before = previous.get(obj.source_file)
        if obj.payer in invalid:
            # neither run (it would be rejected) nor deleted: what was loaded stays the state, and the file is
            # looked at again once the contract is valid (a new file then runs; a loaded one runs again if its
            # bytes or the contract differ from what was loaded)
            if before:
                state[obj.source_file] = before
            summary["held: contract invalid"].append(obj.source_file)
            continue
        contract = digests.get(obj.payer, contract_digest(None))
        # an entry of an older cursor has no contract digest: it takes the current one
        contract_before = before[2] if before and len(before) > 2 else contract
        if before and before[0] == obj.fingerprint and contract_before == contract:
            state[obj.source_file] = [*before[:2], contract]
            summary["unchanged"].append(obj.source_file)
            continue
        age_ns = None if obj.modified_ns is None else now_ns - obj.modified_ns
        if settle_seconds > 0 and age_ns is not None and age_ns < settle_seconds * 1e9 and not (
                age_ns < 0 and was_settling.get(obj.source_file) == obj.fingerprint):
            if before:  # what was loaded stays the state until the new bytes have settled
                state[obj.source_file] = before
            settling[obj.source_file] = obj.fingerprint
            summary["settling"].append(obj.source_file)
            continue
        try:
            checksum = before[1] if before and before[0] == obj.fingerprint else \
                checksum_of(zone, obj) if checksum_of else obj.fingerprint
        except LandingReadError as exc:
            if before:
                state[obj.source_file] = before
            if isinstance(exc.__cause__, FileNotFoundError) or "NoSuchKey" in str(exc):
                summary["settling"].append(obj.source_file)  # gone since the scan (moved away): look again later
            else:  # unreadable (permissions, I/O): said on every tick until fixed
                summary["not read"] = [*summary["not read"], f"{obj.source_file}: cannot be read ({exc})"]
            continue
        state[obj.source_file] = [obj.fingerprint, checksum, contract]
        if not before:
            decided.append((obj.source_file, checksum, "new"))
        elif before[1] != checksum:
            decided.append((obj.source_file, checksum, "changed"))
        elif contract_before != contract:
            decided.append((obj.source_file, checksum, "contract changed"))
        else:  # touched, same content: run again only if its last run failed (asked below, once)
            touched.append((obj.source_file, checksum))
    unknown = [(k, c) for k, c, change in decided if change == "new" and k in known_partitions]
    if unknown and failed_files is not None:  # a run that failed (or stopped) after landing: run it again
        unfinished = failed_files([k for k, _ in unknown], finished=True)
        unknown = [(k, c) for k, c in unknown if k not in unfinished]
    loaded = loaded_files([k for k, _ in unknown]) if unknown and loaded_files is not None else {}
    summary["already loaded"] = [k for k, c in unknown if loaded.get(k) == (c, state[k][2])]
    skipped = set(summary["already loaded"])
    decided = [d for d in decided if d[0] not in skipped]
    failed = set(failed_files([k for k, _ in touched])) if touched and failed_files is not None else set()
    for source_file, checksum in touched:
        if source_file in failed:
            decided.append((source_file, checksum, "retried"))
        else:
            summary["unchanged"].append(source_file)
    # Files a landing run held while their payer's contract was invalid (medflow-load, a run started by hand,
    # a queued run that started while the contract was being edited), whose contract is valid now and which
    # nothing above runs anyway: they run once more. The registry knows (held_reason), not the cursor: the run
    # may have held them while this sensor was not looking. When the warehouse cannot be read (a run holds
    # it), asked again next tick. The run_key names the hold (its time), so a request repeated before the run
    # clears the mark is dropped by Dagster.
    running = {d[0] for d in decided}
    quiet = [k for k in summary["unchanged"] if k not in running]
    fixed = []
    for source_file, held_at in sorted((held or {}).items()):
        if source_file not in quiet or source_file.split("/", 1)[0] not in contracts:
            # its payer's contract is still invalid or still missing (a contract file removed after its files
            # loaded: landing holds them too), or the file runs for another reason anyway
            continue
        summary["unchanged"].remove(source_file)
        summary["contract fixed"].append(source_file)
        fixed.append(dg.RunRequest(partition_key=source_file, run_key=f"{source_file}@held {held_at}",
                                   tags={"medflow/landing_file": source_file, "medflow/change": "contract fixed"}))
    requests = []
    for source_file, checksum, change in decided:
        arrivals += 1
        summary[change].append(source_file)
        requests.append(dg.RunRequest(partition_key=source_file, run_key=f"{source_file}@{checksum}#{arrivals}",
                                      tags={"medflow/landing_file": source_file, "medflow/change": change}))
    summary["deleted"] = sorted(set(previous) - set(state))
    if not cursor and loaded_files is not None:
        # No cursor (the first tick after medflow-load, or a reset): a file that left the zone before it is in
        # no cursor to miss it from. Dagster's partitions whose files the warehouse holds loaded are the ones.
        scanned = {o.source_file for o in scan.objects}
        if away := sorted(k for k in known_partitions if k not in scanned):
            summary["deleted"] = sorted(loaded_files(away))
    to_add = sorted({r.partition_key for r in [*requests, *fixed]} - known_partitions)
    gone = [k for k in summary["deleted"] if k in known_partitions]
    if gone:
        # One run of landing alone, for the first such file: landing marks every accepted file of the registry
        # that is no longer in the zone missing (its loaded rows stay), and files_match_payer_contracts says so.
        arrivals += 1
        requests.append(dg.RunRequest(partition_key=gone[0], run_key=f"{gone[0]}@deleted+{len(gone) - 1}#{arrivals}",
                                      asset_selection=[dg.AssetKey("landing_files")],
                                      # and the quarantine-rate gate, which no longer counts those files: deleting
                                      # the file that held gold back lets gold (automation) go on
                                      asset_check_keys=[*LANDING_CHECKS, QUARANTINE_GATE.key],
                                      tags={"medflow/landing_file": gone[0], "medflow/change": "deleted",
                                            "medflow/files_gone": str(len(gone))}))
    requests += fixed
    if len(to_add) > 1:
        # Files new to Dagster run together: their partitions are added in this order, one after the other,
        # so the range first...last holds exactly them (one run, like medflow-load, instead of one per file).
        added = set(to_add)
        requests = [r for r in requests if r.partition_key not in added] + [dg.RunRequest(
            run_key=f"{to_add[0]}...{to_add[-1]}@{len(to_add)}#{arrivals}",
            tags={"dagster/asset_partition_range_start": to_add[0], "dagster/asset_partition_range_end": to_add[-1],
                  "medflow/landing_files": str(len(to_add)), "medflow/change": "new"})]
    new_cursor = {"version": CURSOR_VERSION, "arrivals": arrivals, "files": state}
    if settling:
        new_cursor["settling"] = settling
    return requests, to_add, json.dumps(new_cursor, sort_keys=True), summary


def warehouse_held(warehouse_path) -> dict[str, str]:
    """{file: when a landing run held it} for every file the registry marks held (its payer's contract was
    invalid in that run: the row keeps its last verdict, dbt left the file out). Read-only, no wait."""
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        return {f: str(at) for f, at in con.execute(
            f"SELECT source_file, checked_at FROM {REGISTRY_TABLE} WHERE held_reason IS NOT NULL").fetchall()}


def landing_reported_holds(instance: dg.DagsterInstance, cursor: str | None) -> tuple[bool, int | None]:
    """(whether the registry may hold files a landing run held, the storage id of the last landing_files
    materialization looked at), from the event log, without opening the warehouse: true once a landing run
    reported `files_held` since the last look, and until the registry shows none held (`holds_pending` in the
    cursor, cleared by the sensor). A cursor without this (the first tick, an older cursor) looks once."""
    data = json.loads(cursor) if cursor else {}
    seen, pending = data.get("landing_seen"), bool(data.get("holds_pending", False))
    if seen is None:
        latest = instance.fetch_materializations(LANDING_ASSET, limit=1).records
        return True, latest[0].storage_id if latest else 0
    for record in instance.fetch_materializations(dg.AssetRecordsFilter(LANDING_ASSET, after_storage_id=seen),
                                                  limit=1000, ascending=True).records:
        held = record.asset_materialization.metadata.get("files_held") if record.asset_materialization else None
        pending = pending or bool(held is not None and held.value)
        seen = record.storage_id
    return pending, seen


def warehouse_holds(warehouse_path, keys: list[str], by_etag: bool = False) -> dict[str, tuple[str, str]]:
    """{file: (sha256, contract digest)} for the files among `keys` that the registry holds as accepted and
    silver loaded from those bytes (the data-quality log has the file with that checksum); with `by_etag`
    (S3), {file: (ETag, contract digest)}: the ETag the object had when landing read those bytes. Read-only,
    no wait."""
    with duckdb.connect(str(warehouse_path), read_only=True) as con:
        rows = con.execute(f"""
            SELECT r.source_file, {"r.etag" if by_etag else "r.checksum"}, c.contract_json
            FROM {REGISTRY_TABLE} r JOIN {CONTRACTS_TABLE} c USING (payer)
            WHERE r.status = 'accepted' AND r.held_reason IS NULL AND list_contains(?, r.source_file)
              AND r.checksum IN (SELECT l.file_checksum FROM silver.silver_data_quality_log l
                                 WHERE l.source_file = r.source_file)""", [keys]).fetchall()
    return {f: (checksum, contract_json_digest(json.loads(cj))) for f, checksum, cj in rows}


# landing_files, and silver's table (the last partitioned step): a run that failed anywhere on the way
# leaves one of them FAILED for the file's partition.
LAST_PARTITIONED_ASSETS = (LANDING_ASSET, dg.AssetKey(["silver", "silver_claim_lines_validated"]))


def _landing_sensor(name: str, backend: str, job: dg.JobDefinition | str):
    @dg.sensor(name=name, job_name=job if isinstance(job, str) else job.name, minimum_interval_seconds=30,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Watches the {backend} landing zone and runs exactly the files that are new or changed.")
    def _sensor(context: dg.SensorEvaluationContext, landing: LandingResource):
        is_s3 = bool(landing.bucket)
        if is_s3 != (backend == "s3"):
            return dg.SkipReason(f"the landing zone is configured as {'S3' if is_s3 else 'a local folder'}; "
                                 f"this sensor watches the {backend} backend")
        zone = landing.zone()
        known = set(context.instance.get_dynamic_partitions(landing_file_partitions.name))
        local = isinstance(zone, LocalLanding)
        settle_seconds = load_settings().landing_settle_seconds if local else 0.0
        def failed_files(keys: list[str], finished: bool = False) -> set[str]:
            """The files among `keys` whose last attempt to materialize their partition of landing or silver
            failed (in a run for one file, a batch, or medflow-load's): one status query per asset. With
            `finished`, also those whose partitions are not both materialized (in progress, never, stopped)."""
            failed = set()
            for asset in LAST_PARTITIONED_ASSETS:
                status = context.instance.get_status_by_partition(asset, keys, landing_file_partitions) or {}
                failed |= {k for k in keys if status.get(k) != dg.AssetPartitionStatus.MATERIALIZED} if finished \
                    else {k for k, s in status.items() if s == dg.AssetPartitionStatus.FAILED}
            return failed

        def loaded_files(keys: list[str]) -> dict[str, tuple[str, str]]:
            try:
                return warehouse_holds(load_settings().warehouse_path, keys, by_etag=not local)
            except (duckdb.Error, OSError) as exc:  # no warehouse yet, or a run holds it: the files run
                context.log.info(f"cannot tell whether {len(keys)} file(s) are already loaded ({exc}); running them")
                return {}

        # the warehouse is asked about held files only while a landing run may have held some (event log)
        pending, landing_seen = landing_reported_holds(context.instance, context.cursor)
        holds = None
        if pending:
            try:
                holds = warehouse_held(load_settings().warehouse_path)
            except (duckdb.Error, OSError):  # no warehouse yet, an older registry, or a run holds it: next tick
                pass

        requests, to_add, cursor, summary = evaluate_landing(
            zone, context.cursor, known, checksum_of=_sha256 if local else _etag,
            settle_seconds=settle_seconds, failed_files=failed_files, loaded_files=loaded_files, held=holds)
        if pending and holds is not None and not holds:
            pending = False  # the registry holds nothing any more
        cursor = json.dumps({**json.loads(cursor), "landing_seen": landing_seen, "holds_pending": pending},
                            sort_keys=True)
        for k in summary["deleted"]:
            context.log.info(f"{k} left {zone.description}; its loaded rows and partition are kept")
        for k in summary["settling"]:
            context.log.info(f"{k} was modified in the last {settle_seconds:g} s; "
                             "it is read once it has stopped changing")
        for why in summary["not read"][:20]:  # every tick, until the file is moved or renamed
            context.log.warning(f"Not read: {why}")
        for payer, why in summary["invalid contracts"].items():  # every tick, until the contract is fixed
            held = [k for k in summary["held: contract invalid"] if k.startswith(f"{payer}/")]
            context.log.error(f"{why} -- " + (f"{len(held)} file(s) of {payer}/ wait until it is fixed; the other "
                                              "payers' files run" if held else f"no files in {payer}/ wait for it"))
        context.log.info(", ".join(f"{k}: {len(v)}" for k, v in summary.items()))
        for k in summary["already loaded"][:20]:
            context.log.info(f"{k}: these bytes are already loaded (registry and silver); not run again")
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[landing_file_partitions.build_add_request(to_add)] if to_add else [],
            cursor=cursor,
        )

    return _sensor


LANDING_JOB = "landing_file_job"
local_landing_sensor = _landing_sensor("local_landing_sensor", "local", LANDING_JOB)
s3_landing_sensor = _landing_sensor("s3_landing_sensor", "s3", LANDING_JOB)
