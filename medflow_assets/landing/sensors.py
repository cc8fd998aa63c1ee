"""Arrival sensors, one per landing backend: new file -> add its partition and request a run; changed file ->
rerun its partition; unchanged or only touched -> nothing; deleted -> forgotten (its loaded rows stay).

The cursor holds each file's fingerprint and checksum and a counter of arrivals. run_key = file@checksum#n,
n counting every arrival the sensor requested a run for: a tick evaluated twice asks for the same runs
(Dagster drops the second), while bytes that come back later (a file reverted, re-landed after a failed
run) get a run of their own. A local file modified within the last `settle_seconds` may still be being
written: it is looked at again on a later tick, so a half-written file is not loaded (on S3 an object is
listed only once its upload is complete)."""

import json
import time

import dagster as dg

from medflow_assets.landing.contracts import load_contracts
from medflow_assets.landing.partitions import landing_file_partitions
from medflow_assets.landing.resource import LandingResource
from medflow_assets.landing.zone import LandingObject, LandingZone, LocalLanding, digest_and_head
from medflow_assets.settings import load_settings


def _sha256(zone: LandingZone, obj: LandingObject) -> str:
    return digest_and_head(zone, obj)[0]


def read_cursor(cursor: str | None) -> tuple[dict[str, list[str]], int]:
    """({source_file: [fingerprint, checksum]}, arrivals so far); a cursor of earlier versions held the
    mapping alone."""
    data = json.loads(cursor) if cursor else {}
    if "files" in data and "arrivals" in data:
        return data["files"], int(data["arrivals"])
    return data, 0


def evaluate_landing(zone: LandingZone, cursor: str | None, known_partitions: set[str],
                     checksum_of=None, settle_seconds: float = 0.0,
                     now_ns: int | None = None) -> tuple[list[dg.RunRequest], list[str], str, dict]:
    """(run requests, partitions to add, new cursor, summary). Pure apart from reading the zone.

    Locally the fingerprint is size:mtime and the checksum is the sha256, computed only when the fingerprint
    moved; on S3 both are the ETag."""
    previous, arrivals = read_cursor(cursor)
    now_ns = time.time_ns() if now_ns is None else now_ns
    contracts = load_contracts(load_settings().contracts_path)
    scan = zone.scan(contracts)
    state, requests = {}, []
    summary = {"new": [], "changed": [], "unchanged": [], "settling": [], "deleted": [], "not read": scan.unread}
    for obj in scan.objects:
        before = previous.get(obj.source_file)
        if before and before[0] == obj.fingerprint:
            state[obj.source_file] = before
            summary["unchanged"].append(obj.source_file)
            continue
        if obj.modified_ns is not None and 0 <= now_ns - obj.modified_ns < settle_seconds * 1e9:
            if before:  # what was loaded stays the state until the new bytes have settled
                state[obj.source_file] = before
            summary["settling"].append(obj.source_file)
            continue
        checksum = checksum_of(zone, obj) if checksum_of else obj.fingerprint
        state[obj.source_file] = [obj.fingerprint, checksum]
        if before and before[1] == checksum:  # touched, same content
            summary["unchanged"].append(obj.source_file)
            continue
        arrivals += 1
        summary["changed" if before else "new"].append(obj.source_file)
        requests.append(dg.RunRequest(partition_key=obj.source_file,
                                      run_key=f"{obj.source_file}@{checksum}#{arrivals}",
                                      tags={"medflow/landing_file": obj.source_file,
                                            "medflow/change": "changed" if before else "new"}))
    summary["deleted"] = sorted(set(previous) - set(state))
    to_add = sorted({r.partition_key for r in requests} - known_partitions)
    return requests, to_add, json.dumps({"arrivals": arrivals, "files": state}, sort_keys=True), summary


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
        requests, to_add, cursor, summary = evaluate_landing(
            zone, context.cursor, known, checksum_of=_sha256 if local else None,
            settle_seconds=load_settings().landing_settle_seconds if local else 0.0)
        for k in summary["deleted"]:
            context.log.info(f"{k} left {zone.description}; its loaded rows and partition are kept")
        for k in summary["settling"]:
            context.log.info(f"{k} was modified in the last {load_settings().landing_settle_seconds:g} s; "
                             "it is read once it has stopped changing")
        for why in summary["not read"][:20]:  # every tick, until the file is moved or renamed
            context.log.warning(f"Not read: {why}")
        context.log.info(", ".join(f"{k}: {len(v)}" for k, v in summary.items()))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[landing_file_partitions.build_add_request(to_add)] if to_add else [],
            cursor=cursor,
        )

    return _sensor


LANDING_JOB = "landing_file_job"
local_landing_sensor = _landing_sensor("local_landing_sensor", "local", LANDING_JOB)
s3_landing_sensor = _landing_sensor("s3_landing_sensor", "s3", LANDING_JOB)
