"""The S3 landing zone against a real S3-API server (SeaweedFS) on 127.0.0.1 that checks credentials."""

import json
import shutil
from contextlib import contextmanager

import dagster as dg
import pytest

from medflow_assets.landing.partitions import TRANSIENT_RETRY
from medflow_assets.landing.resource import LandingResource
from medflow_assets.landing.sensors import s3_landing_sensor
from medflow_assets.synth.generator import generate
from tests.helpers import ALL_ASSETS, SAMPLE_LANDING, materialize_graph, medflow_env, query
from tests.s3server import ACCESS_KEY, BUCKET, SECRET_KEY, S3Server


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


def _sensor(instance, server, prefix, cursor):
    res = LandingResource(bucket=BUCKET, prefix=prefix, endpoint_url=server.endpoint,
                          access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    return s3_landing_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources={"landing": res}))


@contextmanager
def _resources(wh, env):
    with medflow_env(warehouse_path=wh, **env):
        from medflow_assets.resources import build_resources
        from medflow_assets.settings import load_settings
        yield build_resources(load_settings())


def _cascade_on_s3(s3, tmp_path, prefix):
    """The sample's cascade file under prefix, its partition registered: (key, instance, warehouse, a context
    manager giving the resources with the S3 settings in the environment)."""
    s3.upload_tree(SAMPLE_LANDING / "cascade", f"{prefix}/cascade")
    key = "cascade/cascade_claims_001.txt"
    instance, wh = dg.DagsterInstance.ephemeral(), tmp_path / "wh.duckdb"
    instance.add_dynamic_partitions("landing_file", [key])
    return key, instance, wh, _resources(wh, s3.env(prefix))


def test_s3_landing_flows_to_gold_and_the_sensor_runs_a_new_object(s3, tmp_path):
    prefix = "claims-e2e"
    s3.upload_tree(SAMPLE_LANDING, prefix)
    instance, wh = dg.DagsterInstance.ephemeral(), tmp_path / "wh.duckdb"
    first = _sensor(instance, s3, prefix, None)
    assert len(first.run_requests) == 1  # the three new objects in one run (a partition range)
    # the cursor keeps each object's ETag@LastModified (fingerprint) and ETag (checksum)
    head = s3.client().head_object(Bucket=BUCKET, Key=f"{prefix}/cascade/cascade_claims_001.txt")
    etag = head["ETag"].strip('"')
    fingerprint, checksum = json.loads(first.cursor)["files"]["cascade/cascade_claims_001.txt"][:2]
    assert checksum == etag and fingerprint.startswith(f"{etag}@{head['LastModified'].year}")
    result = materialize_graph(tmp_path / "unused", wh, instance=instance, **s3.env(prefix))
    assert result.success
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines") == [(6006,)]
    assert query(wh, "SELECT DISTINCT path LIKE 's3://landing/claims-e2e/%' FROM landing.landing_file_registry") == [
        (True,)]
    # a new object lands: the sensor asks for exactly its run; gold then includes it
    new = generate(tmp_path / "new", 600, seed=5, payers=["cascade"], row_offset=500_000, file_tag="s3new",
                   manifest_dir=tmp_path / "m")[0]
    key = f"cascade/{new.path.name}"
    s3.client().upload_file(str(new.path), BUCKET, f"{prefix}/{key}")
    tick = _sensor(instance, s3, prefix, first.cursor)
    assert [r.partition_key for r in tick.run_requests] == [key]
    assert materialize_graph(tmp_path / "unused", wh, instance=instance, partitions=[key], **s3.env(prefix)).success
    assert query(wh, f"SELECT count(*) FROM bronze.bronze_claim_lines WHERE source_file = '{key}'") == [(new.lines,)]
    assert query(wh, "SELECT sum(lines) FROM gold.claims_monthly_summary") == query(
        wh, "SELECT count(*) FROM silver.silver_claim_lines")
    # a corrected version under the same key: a new ETag, one rerun, its rows replaced
    fixed = generate(tmp_path / "fixed", 450, seed=6, defect_rate=0.0, payers=["cascade"], row_offset=500_000,
                     file_tag="s3new", manifest_dir=tmp_path / "m2")[0]
    s3.client().upload_file(str(fixed.path), BUCKET, f"{prefix}/{key}")
    tick2 = _sensor(instance, s3, prefix, tick.cursor)
    assert [r.partition_key for r in tick2.run_requests] == [key]
    assert tick2.run_requests[0].run_key != tick.run_requests[0].run_key
    assert materialize_graph(tmp_path / "unused", wh, instance=instance, partitions=[key], **s3.env(prefix)).success
    assert query(wh, f"SELECT count(*) FROM bronze.bronze_claim_lines WHERE source_file = '{key}'") == [(fixed.lines,)]
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines") == [(6006 + fixed.lines,)]
    assert query(wh, "SELECT count(*) - count(DISTINCT (payer, claim_id, claim_line_number)) "
                     "FROM silver.silver_claim_lines") == [(0,)]
    assert _sensor(instance, s3, prefix, tick2.cursor).run_requests == []
    # the registry keeps each object's ETag beside its sha256: a sensor that starts over (no cursor, as after
    # medflow-load or a cursor reset) runs none of the loaded objects again, and still runs a changed one
    assert query(wh, "SELECT etag FROM landing.landing_file_registry "
                     "WHERE source_file = 'cascade/cascade_claims_001.txt'") == [(etag,)]
    with medflow_env(warehouse_path=wh):
        assert _sensor(instance, s3, prefix, None).run_requests == []
        s3.client().upload_file(str(new.path), BUCKET, f"{prefix}/{key}")  # the first version again
        assert [(r.partition_key, r.tags["medflow/change"]) for r in _sensor(instance, s3, prefix, None).run_requests] == [
            (key, "new")]


def test_s3_object_not_valid_csv_and_a_byte_copy_are_rejected_and_the_others_flow(s3, tmp_path):
    prefix = "claims-bad"
    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE_LANDING, landing)
    bad = landing / "northwind" / "northwind_claims_001.csv"
    lines = bad.read_text().splitlines()
    bad.write_text("\n".join(lines[:5] + [lines[5] + ",EXTRA"] + lines[6:]) + "\n")  # line 6: a column too many
    shutil.copy(landing / "cascade" / "cascade_claims_001.txt", landing / "cascade" / "cascade_claims_001_again.txt")
    s3.upload_tree(landing, prefix)
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(tmp_path / "unused", wh, **s3.env(prefix))
    assert result.success
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["landed_files_parsed"].passed
    assert checks["landed_files_parsed"].description.startswith(
        "northwind/northwind_claims_001.csv is not valid CSV at line 6")
    assert checks["no_file_landed_twice"].description == (
        "cascade/cascade_claims_001_again.txt is a copy of cascade/cascade_claims_001.txt (not loaded)")
    assert query(wh, "SELECT source_file FROM landing.landing_file_registry WHERE status = 'rejected' ORDER BY 1") == [
        ("cascade/cascade_claims_001_again.txt",), ("northwind/northwind_claims_001.csv",)]
    assert query(wh, "SELECT DISTINCT source_file FROM silver.silver_claim_lines_validated ORDER BY 1") == [
        ("bluepeak/bluepeak_claims_001.csv",), ("cascade/cascade_claims_001.txt",)]
    assert query(wh, "SELECT sum(lines) FROM gold.claims_monthly_summary") == query(
        wh, "SELECT count(*) FROM silver.silver_claim_lines")


def test_wrong_credentials_fail_with_a_clear_message(s3, tmp_path):
    prefix = "claims-auth"
    s3.upload_tree(SAMPLE_LANDING / "cascade", f"{prefix}/cascade")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("landing_file", ["cascade/cascade_claims_001.txt"])
    with medflow_env(warehouse_path=tmp_path / "wh.duckdb", **s3.env(prefix, secret="not-the-secret")):
        from medflow_assets.resources import build_resources
        from medflow_assets.settings import load_settings
        result = dg.materialize(ALL_ASSETS, resources=build_resources(load_settings()), instance=instance,
                                partition_key="cascade/cascade_claims_001.txt", raise_on_error=False)
    assert not result.success
    failure = result.get_step_failure_events()[0]
    message = failure.event_specific_data.error.to_string()
    assert f"s3://{BUCKET}/{prefix}" in message
    assert "SignatureDoesNotMatch" in message or "InvalidAccessKeyId" in message or "AccessDenied" in message
    assert "the landing zone refused the credentials: check MEDFLOW_S3_ACCESS_KEY_ID / " \
           "MEDFLOW_S3_SECRET_ACCESS_KEY (not retried)" in message
    assert "not-the-secret" not in message
    # a credentials error is not retried
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_s3_down_mid_run_retries_then_fails_naming_the_object_and_leaves_no_partial_rows(s3, tmp_path):
    key, instance, wh, with_resources = _cascade_on_s3(s3, tmp_path, "claims-fault")
    cursor = _sensor(instance, s3, "claims-fault", None).cursor
    with with_resources as resources:
        # the landing step reads the object while the server is up ...
        ok = dg.materialize(ALL_ASSETS, resources=resources, instance=instance, partition_key=key,
                            selection=dg.AssetSelection.assets("landing_files"), raise_on_error=False)
        assert ok.success
        s3.stop()  # ... then the server goes away before bronze reads it
        try:
            failed = dg.materialize(ALL_ASSETS, resources=resources, instance=instance, partition_key=key,
                                    selection=dg.AssetSelection.groups("bronze", "silver", "reference"),
                                    raise_on_error=False)
        finally:
            s3.start()
        assert not failed.success
        # the same bytes uploaded again (touched): the sensor retries the file, since its last run failed
        assert _sensor(instance, s3, "claims-fault", cursor).run_requests == []
        s3.client().upload_file(str(SAMPLE_LANDING / key), BUCKET, f"claims-fault/{key}")
        [retry] = _sensor(instance, s3, "claims-fault", cursor).run_requests
        assert (retry.partition_key, retry.tags["medflow/change"]) == (key, "retried")
        retries = [e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retries) == TRANSIENT_RETRY.max_retries == 4
        message = failed.get_step_failure_events()[0].event_specific_data.error.to_string()
        assert "cascade/cascade_claims_001.txt" in message and "could not read landed data" in message
        # no table of bronze or silver holds a row of the file (whichever of them the failed build created)
        tables = query(wh, "SELECT DISTINCT table_schema || '.' || table_name FROM information_schema.columns "
                           "WHERE table_schema IN ('bronze', 'silver') AND column_name = 'source_file'")
        for (table,) in tables:
            assert query(wh, f"SELECT count(*) FROM {table} WHERE source_file = ?", [key]) == [(0,)], table
        # after the restart the same partition succeeds, exactly once
        again = dg.materialize(ALL_ASSETS, resources=resources, instance=instance, partition_key=key,
                               raise_on_error=False)
        assert again.success
    assert query(wh, f"SELECT count(*) FROM bronze.bronze_claim_lines WHERE source_file = '{key}'") == [(1502,)]
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines_validated") == [(1502,)]


def test_s3_object_names_that_are_glob_patterns_are_read_as_exactly_that_object(s3, tmp_path):
    prefix = "claims-glob"
    landing = tmp_path / "landing"
    generate(landing, 300, seed=47, defect_rate=0.0, payers=["northwind"], manifest_dir=tmp_path / "m")
    [plain] = (landing / "northwind").iterdir()
    header, *rows = plain.read_text().splitlines()
    plain.write_text("\n".join([header, *rows[6:]]) + "\n")
    (landing / "northwind" / "northwind_claims_00?.csv").write_text("\n".join([header, *rows[:4]]) + "\n")
    (landing / "northwind" / "northwind_claims_*.csv").write_text("\n".join([header, *rows[4:6]]) + "\n")
    (landing / "northwind" / "2025").mkdir()
    (landing / "northwind" / "2025" / "northwind_claims_009.csv").write_text(header + "\n")
    s3.upload_tree(landing, prefix)
    wh = tmp_path / "wh.duckdb"
    result = materialize_graph(tmp_path / "unused", wh, **s3.env(prefix))
    assert result.success
    # '*' is read as itself; '?' cannot be read from S3 at all, so that object is rejected by name
    assert dict(query(wh, "SELECT source_file, count(*) FROM bronze.bronze_claim_lines GROUP BY 1")) == {
        f"northwind/{plain.name}": len(rows) - 6, "northwind/northwind_claims_*.csv": 2}
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines") == [(len(rows) - 4,)]
    [contract] = [e for e in result.get_asset_check_evaluations() if e.check_name == "files_match_payer_contracts"]
    assert contract.description == ("northwind/northwind_claims_00?.csv: an S3 object name with '?' cannot be read "
                                    "(DuckDB's S3 reader takes it as the start of URL parameters). Rename the object.")
    [unread] = [e for e in result.get_asset_check_evaluations() if e.check_name == "every_landed_file_read"]
    assert not unread.passed
    assert unread.description == ("northwind/2025/northwind_claims_009.csv: in a subfolder of northwind/ (only "
                                  "files directly in a payer folder are read)")


def test_s3_down_during_landing_is_retried_with_backoff_then_fails_naming_the_zone(s3, tmp_path):
    prefix = "claims-landing-down"
    key, instance, wh, with_resources = _cascade_on_s3(s3, tmp_path, prefix)
    with with_resources as resources:
        s3.stop()
        try:
            failed = dg.materialize(ALL_ASSETS, resources=resources, instance=instance, partition_key=key,
                                    selection=dg.AssetSelection.assets("landing_files"), raise_on_error=False)
        finally:
            s3.start()
    assert not failed.success
    assert len([e for e in failed.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]) == TRANSIENT_RETRY.max_retries
    message = failed.get_step_failure_events()[0].event_specific_data.error.to_string()
    assert f"cannot list s3://{BUCKET}/{prefix}" in message and "(attempt 5 of 5" in message
    assert not wh.exists()  # the landing step failed before writing anything
