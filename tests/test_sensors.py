"""Arrival sensors, evaluated with build_sensor_context: new, changed, touched, unchanged, deleted files."""

import json
import os
import shutil

import dagster as dg

from medflow_assets.landing.resource import LandingResource
from medflow_assets.landing.sensors import local_landing_sensor, s3_landing_sensor
from tests.helpers import SAMPLE_LANDING


def _evaluate(sensor, instance, landing_dir, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources={"landing": LandingResource(local_path=str(landing_dir))})
    result = sensor(ctx)
    if isinstance(result, dg.SensorResult):
        for req in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def test_local_sensor_runs_exactly_what_is_new_or_changed(tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE_LANDING, landing)
    instance = dg.DagsterInstance.ephemeral()

    first = _evaluate(local_landing_sensor, instance, landing, None)
    keys = sorted(r.partition_key for r in first.run_requests)
    assert keys == ["bluepeak/bluepeak_claims_001.csv", "cascade/cascade_claims_001.txt",
                    "northwind/northwind_claims_001.csv"]
    assert sorted(first.dynamic_partitions_requests[0].partition_keys) == keys
    assert all(r.run_key.startswith(r.partition_key + "@") and len(r.run_key.split("@")[1]) == 64
               for r in first.run_requests)
    assert {r.tags["medflow/change"] for r in first.run_requests} == {"new"}
    cursor = first.cursor
    assert set(json.loads(cursor)) == set(keys)

    # unchanged: nothing to do, and the cursor round-trips unchanged
    again = _evaluate(local_landing_sensor, instance, landing, cursor)
    assert again.run_requests == [] and again.dynamic_partitions_requests == []
    assert json.loads(again.cursor) == json.loads(cursor)

    # touched but identical content: no run
    f = landing / "cascade" / "cascade_claims_001.txt"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10_000_000_000))
    touched = _evaluate(local_landing_sensor, instance, landing, again.cursor)
    assert touched.run_requests == []
    assert json.loads(touched.cursor)["cascade/cascade_claims_001.txt"][1] == \
        json.loads(cursor)["cascade/cascade_claims_001.txt"][1]

    # changed content: one run for that file, a new run key, no new partition
    with f.open("a") as fh:
        fh.write(f.read_text().splitlines()[1].replace("CC0000000000", "CC9999999999") + "\n")
    changed = _evaluate(local_landing_sensor, instance, landing, touched.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["cascade/cascade_claims_001.txt"]
    assert changed.run_requests[0].tags["medflow/change"] == "changed"
    old_key = next(r.run_key for r in first.run_requests if r.partition_key.startswith("cascade"))
    assert changed.run_requests[0].run_key != old_key
    assert changed.dynamic_partitions_requests == []

    # a new file and a deleted one in the same tick
    shutil.copy(landing / "northwind" / "northwind_claims_001.csv", landing / "northwind" / "northwind_claims_002.csv")
    (landing / "bluepeak" / "bluepeak_claims_001.csv").unlink()
    mixed = _evaluate(local_landing_sensor, instance, landing, changed.cursor)
    assert [r.partition_key for r in mixed.run_requests] == ["northwind/northwind_claims_002.csv"]
    assert list(mixed.dynamic_partitions_requests[0].partition_keys) == ["northwind/northwind_claims_002.csv"]
    state = json.loads(mixed.cursor)
    assert "bluepeak/bluepeak_claims_001.csv" not in state and "northwind/northwind_claims_002.csv" in state
    # deleting a file does not drop its partition (its loaded rows stay)
    assert "bluepeak/bluepeak_claims_001.csv" in instance.get_dynamic_partitions("landing_file")


def test_sensor_of_the_other_backend_skips(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = _evaluate(s3_landing_sensor, instance, SAMPLE_LANDING, None)
    assert isinstance(result, dg.SkipReason)
    assert "local folder" in result.skip_message
