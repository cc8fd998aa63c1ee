"""Arrival sensors, one per landing backend: new file -> add its partition and request a run; changed file ->
rerun its partition; unchanged -> nothing; deleted -> forgotten (its loaded rows stay). The cursor maps each
file to its fingerprint and checksum; run_key = file@checksum, so a file version is never processed twice."""

import json

import dagster as dg

from medflow_assets.landing.contracts import load_contracts
from medflow_assets.landing.partitions import landing_file_partitions
from medflow_assets.landing.resource import LandingResource
from medflow_assets.landing.zone import LandingObject, LandingZone, LocalLanding, digest_and_head
from medflow_assets.settings import load_settings


def _sha256(zone: LandingZone, obj: LandingObject) -> str:
    return digest_and_head(zone, obj)[0]


def evaluate_landing(zone: LandingZone, cursor: str | None, known_partitions: set[str],
                     checksum_of=None) -> tuple[list[dg.RunRequest], list[str], dict, dict]:
    """(run requests, partitions to add, new cursor, summary). Pure apart from reading the zone.

    cursor: {source_file: [fingerprint, checksum]}. Locally the fingerprint is size:mtime and the checksum is
    the sha256, computed only when the fingerprint moved; on S3 both are the ETag."""
    previous: dict[str, list[str]] = json.loads(cursor) if cursor else {}
    contracts = load_contracts(load_settings().contracts_path)
    scan = zone.scan(contracts)
    state, requests, summary = {}, [], {"new": [], "changed": [], "unchanged": [], "deleted": [],
                                        "not read": scan.unread}
    for obj in scan.objects:
        before = previous.get(obj.source_file)
        if before and before[0] == obj.fingerprint:
            state[obj.source_file] = before
            summary["unchanged"].append(obj.source_file)
            continue
        checksum = checksum_of(zone, obj) if checksum_of else obj.fingerprint
        state[obj.source_file] = [obj.fingerprint, checksum]
        if before and before[1] == checksum:  # touched, same content
            summary["unchanged"].append(obj.source_file)
            continue
        summary["changed" if before else "new"].append(obj.source_file)
        requests.append(dg.RunRequest(partition_key=obj.source_file, run_key=f"{obj.source_file}@{checksum}",
                                      tags={"medflow/landing_file": obj.source_file,
                                            "medflow/change": "changed" if before else "new"}))
    summary["deleted"] = sorted(set(previous) - set(state))
    to_add = sorted({r.partition_key for r in requests} - known_partitions)
    return requests, to_add, state, summary


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
        requests, to_add, state, summary = evaluate_landing(
            zone, context.cursor, known, checksum_of=_sha256 if isinstance(zone, LocalLanding) else None)
        for k in summary["deleted"]:
            context.log.info(f"{k} left {zone.description}; its loaded rows and partition are kept")
        for why in summary["not read"][:20]:  # every tick, until the file is moved or renamed
            context.log.warning(f"Not read: {why}")
        context.log.info(", ".join(f"{k}: {len(v)}" for k, v in summary.items()))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[landing_file_partitions.build_add_request(to_add)] if to_add else [],
            cursor=json.dumps(state, sort_keys=True),
        )

    return _sensor


LANDING_JOB = "landing_file_job"
local_landing_sensor = _landing_sensor("local_landing_sensor", "local", LANDING_JOB)
s3_landing_sensor = _landing_sensor("s3_landing_sensor", "s3", LANDING_JOB)
