"""Arrival sensors, evaluated with build_sensor_context: new, changed, touched, unchanged, deleted files."""

import json
import os
import shutil

import dagster as dg

from medflow_assets.landing.partitions import landing_file_partitions
from medflow_assets.landing.resource import LandingResource
from medflow_assets.landing.sensors import local_landing_sensor, s3_landing_sensor
from medflow_assets.settings import CONTRACTS_DIR
from tests.helpers import SAMPLE_LANDING, check_result, medflow_env


def _evaluate(sensor, instance, landing_dir, cursor, settle_seconds=0):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources={"landing": LandingResource(local_path=str(landing_dir))})
    with medflow_env(landing_settle_seconds=settle_seconds):
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
    keys = ["bluepeak/bluepeak_claims_001.csv", "cascade/cascade_claims_001.txt", "northwind/northwind_claims_001.csv"]
    assert list(first.dynamic_partitions_requests[0].partition_keys) == keys
    # files new to Dagster run together: one run over the range of their partitions, added in that order
    [batch] = first.run_requests
    assert batch.partition_key is None and batch.tags["dagster/asset_partition_range_start"] == keys[0]
    assert batch.tags["dagster/asset_partition_range_end"] == keys[-1]
    assert instance.get_dynamic_partitions("landing_file") == keys
    assert batch.run_key == f"{keys[0]}...{keys[-1]}@3#3" and batch.tags["medflow/change"] == "new"
    cursor = first.cursor
    assert set(json.loads(cursor)["files"]) == set(keys) and json.loads(cursor)["arrivals"] == 3

    # unchanged: nothing to do, and the cursor round-trips unchanged
    again = _evaluate(local_landing_sensor, instance, landing, cursor)
    assert again.run_requests == [] and again.dynamic_partitions_requests == []
    assert json.loads(again.cursor) == json.loads(cursor)

    # touched but identical content: no run
    f = landing / "cascade" / "cascade_claims_001.txt"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10_000_000_000))
    touched = _evaluate(local_landing_sensor, instance, landing, again.cursor)
    assert touched.run_requests == []
    assert json.loads(touched.cursor)["files"]["cascade/cascade_claims_001.txt"][1] == \
        json.loads(cursor)["files"]["cascade/cascade_claims_001.txt"][1]

    # changed content: one run for that file, a new run key, no new partition
    with f.open("a") as fh:
        fh.write(f.read_text().splitlines()[1].replace("CC0000000000", "CC9999999999") + "\n")
    changed = _evaluate(local_landing_sensor, instance, landing, touched.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["cascade/cascade_claims_001.txt"]
    assert changed.run_requests[0].tags["medflow/change"] == "changed"
    # run key: file@sha256#n, n counting the arrivals the sensor asked a run for
    sha = json.loads(changed.cursor)["files"]["cascade/cascade_claims_001.txt"][1]
    assert changed.run_requests[0].run_key == f"cascade/cascade_claims_001.txt@{sha}#4" and len(sha) == 64
    assert changed.dynamic_partitions_requests == []

    # a new file and a deleted one in the same tick
    shutil.copy(landing / "northwind" / "northwind_claims_001.csv", landing / "northwind" / "northwind_claims_002.csv")
    (landing / "bluepeak" / "bluepeak_claims_001.csv").unlink()
    mixed = _evaluate(local_landing_sensor, instance, landing, changed.cursor)
    assert [(r.partition_key, r.tags["medflow/change"]) for r in mixed.run_requests] == [
        ("northwind/northwind_claims_002.csv", "new"), ("bluepeak/bluepeak_claims_001.csv", "deleted")]
    # the deleted file's run is landing alone: the registry marks it missing, its loaded rows stay
    assert mixed.run_requests[0].asset_selection is None
    assert mixed.run_requests[1].asset_selection == [dg.AssetKey("landing_files")]
    assert list(mixed.dynamic_partitions_requests[0].partition_keys) == ["northwind/northwind_claims_002.csv"]
    state = json.loads(mixed.cursor)["files"]
    assert "bluepeak/bluepeak_claims_001.csv" not in state and "northwind/northwind_claims_002.csv" in state
    # deleting a file does not drop its partition (its loaded rows stay)
    assert "bluepeak/bluepeak_claims_001.csv" in instance.get_dynamic_partitions("landing_file")


def test_sensor_of_the_other_backend_skips(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    result = _evaluate(s3_landing_sensor, instance, SAMPLE_LANDING, None)
    assert isinstance(result, dg.SkipReason)
    assert "local folder" in result.skip_message


def test_a_file_still_being_written_waits_and_bytes_that_come_back_run_again(tmp_path):
    """A local file modified within the settle time is looked at again later (a half-written file is not
    loaded); bytes that return after other bytes (a file reverted) get a run of their own, while a tick
    evaluated twice asks for the same run key (Dagster drops the second)."""
    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE_LANDING, landing)
    instance = dg.DagsterInstance.ephemeral()
    old = 1_000_000_000  # mtime (s) long ago: every sample file has settled
    for f in landing.rglob("*.*"):
        os.utime(f, (old, old))
    first = _evaluate(local_landing_sensor, instance, landing, None, settle_seconds=60)
    assert len(first.run_requests) == 1  # the three new files together
    first_sha = json.loads(first.cursor)["files"]["cascade/cascade_claims_001.txt"][1]

    f = landing / "cascade" / "cascade_claims_001.txt"
    original = f.read_bytes()
    f.write_bytes(original[: len(original) // 2])          # being written right now
    writing = _evaluate(local_landing_sensor, instance, landing, first.cursor, settle_seconds=60)
    assert writing.run_requests == []
    assert json.loads(writing.cursor)["files"]["cascade/cascade_claims_001.txt"] == \
        json.loads(first.cursor)["files"]["cascade/cascade_claims_001.txt"]   # still what was loaded
    f.write_bytes(original + original.splitlines(keepends=True)[1].replace(b"CC0000000000", b"CC9999999999"))
    os.utime(f, (old + 100, old + 100))                     # the write ended long ago
    done = _evaluate(local_landing_sensor, instance, landing, writing.cursor, settle_seconds=60)
    assert [r.partition_key for r in done.run_requests] == ["cascade/cascade_claims_001.txt"]
    assert _evaluate(local_landing_sensor, instance, landing, writing.cursor, settle_seconds=60).run_requests[0] \
        .run_key == done.run_requests[0].run_key             # the same tick again: the same run key

    f.write_bytes(original)                                 # reverted to the first bytes
    os.utime(f, (old + 200, old + 200))
    back = _evaluate(local_landing_sensor, instance, landing, done.cursor, settle_seconds=60)
    [again] = back.run_requests
    assert again.run_key == f"cascade/cascade_claims_001.txt@{first_sha}#5"  # the first bytes, a run of their own


def test_names_a_partition_key_cannot_hold_are_reported_not_fatal(tmp_path):
    """A file name that is not UTF-8 (or holds what Dagster forbids in a partition key) is named in the
    sensor's warnings; the other files still run."""
    from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS

    from medflow_assets.landing.zone import PARTITION_KEY_FORBIDDEN

    assert list(PARTITION_KEY_FORBIDDEN) == INVALID_PARTITION_SUBSTRINGS
    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE_LANDING, landing)
    src = landing / "northwind" / "northwind_claims_001.csv"
    os.link(src, os.fsencode(landing / "northwind") + b"/northwind_claims_\xe9t\xe9.csv")
    shutil.copy(src, landing / "northwind" / "northwind_claims_a...b.csv")
    instance = dg.DagsterInstance.ephemeral()
    result = _evaluate(local_landing_sensor, instance, landing, None)
    assert len(result.run_requests) == 1
    assert instance.get_dynamic_partitions("landing_file") == [
        "bluepeak/bluepeak_claims_001.csv", "cascade/cascade_claims_001.txt", "northwind/northwind_claims_001.csv"]
    from medflow_assets.landing.contracts import load_contracts
    from medflow_assets.landing.zone import LocalLanding
    from medflow_assets.settings import CONTRACTS_DIR

    unread = LocalLanding(landing).scan(load_contracts(CONTRACTS_DIR)).unread
    assert unread == [
        ("'northwind/northwind_claims_a...b.csv': the name contains '...', which a Dagster partition key cannot "
         "hold (rename the file)"),
        "northwind/northwind_claims_\\xe9t\\xe9.csv: the name is not valid UTF-8 (rename the file)"]


def test_a_contract_that_changes_reruns_its_payers_files_and_touching_a_failed_file_retries_it(tmp_path):
    """A folder's files landed before its contract run again once the contract is there; a payer's files run
    again when its contract changes; a file touched without new bytes runs again only when its last run
    failed."""
    landing, contracts = tmp_path / "landing", tmp_path / "contracts"
    shutil.copytree(SAMPLE_LANDING, landing)
    shutil.copytree(CONTRACTS_DIR, contracts)
    (landing / "acme").mkdir()
    shutil.copy(landing / "northwind" / "northwind_claims_001.csv", landing / "acme" / "acme_claims_001.csv")
    instance = dg.DagsterInstance.ephemeral()
    with medflow_env(contracts_path=contracts):
        first = _evaluate(local_landing_sensor, instance, landing, None)
        assert len(instance.get_dynamic_partitions("landing_file")) == 4  # acme's file too: landing rejects it
        (contracts / "acme.yaml").write_text(
            (contracts / "northwind.yaml").read_text().replace("payer: northwind", "payer: acme"))
        added = _evaluate(local_landing_sensor, instance, landing, first.cursor)
        assert [(r.partition_key, r.tags["medflow/change"]) for r in added.run_requests] == [
            ("acme/acme_claims_001.csv", "contract changed")]
        assert _evaluate(local_landing_sensor, instance, landing, added.cursor).run_requests == []
        nw = contracts / "northwind.yaml"
        nw.write_text(nw.read_text().replace("max_quarantine_rate: 0.10", "max_quarantine_rate: 0.20"))
        changed = _evaluate(local_landing_sensor, instance, landing, added.cursor)
        assert [r.partition_key for r in changed.run_requests] == ["northwind/northwind_claims_001.csv"]

        # the last run for the cascade file failed (its silver partition is FAILED): touching the file retries
        # it; touching another does not
        @dg.asset(key=["silver", "silver_claim_lines_validated"], partitions_def=landing_file_partitions)
        def fails():
            raise RuntimeError("the warehouse was busy")

        dg.materialize([fails], instance=instance, raise_on_error=False, partition_key="cascade/cascade_claims_001.txt")
        for name in ("cascade/cascade_claims_001.txt", "bluepeak/bluepeak_claims_001.csv"):
            f = landing / name
            os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 5_000_000_000))
        touched = _evaluate(local_landing_sensor, instance, landing, changed.cursor)
        assert [(r.partition_key, r.tags["medflow/change"]) for r in touched.run_requests] == [
            ("cascade/cascade_claims_001.txt", "retried")]


def test_an_invalid_contract_holds_its_payers_files_and_no_other_payers(tmp_path):
    """A payer whose contract file is invalid (a typo while onboarding, an edit gone wrong): its files are
    neither run nor taken for deleted, the sensor names the contract on every tick, and the other payers'
    files run as usual. Once the contract is valid, what changed meanwhile runs."""
    from medflow_assets.landing.sensors import evaluate_landing
    from medflow_assets.landing.zone import LocalLanding

    landing, contracts = tmp_path / "landing", tmp_path / "contracts"
    shutil.copytree(SAMPLE_LANDING, landing)
    shutil.copytree(CONTRACTS_DIR, contracts)
    (landing / "acme").mkdir()
    shutil.copy(landing / "northwind" / "northwind_claims_001.csv", landing / "acme" / "acme_claims_001.csv")
    nw = contracts / "northwind.yaml"
    good_nw = nw.read_text()
    acme_ok = good_nw.replace("payer: northwind", "payer: acme")
    (contracts / "acme.yaml").write_text(acme_ok.replace("columns:", "colums:"))  # the typo
    instance = dg.DagsterInstance.ephemeral()
    with medflow_env(contracts_path=contracts):
        _, _, _, summary = evaluate_landing(LocalLanding(landing), None, set())
        assert summary["held: contract invalid"] == ["acme/acme_claims_001.csv"]
        assert list(summary["invalid contracts"]) == ["acme"]
        assert str(contracts / "acme.yaml") in summary["invalid contracts"]["acme"]
        assert "unknown keys ['colums']" in summary["invalid contracts"]["acme"]

        first = _evaluate(local_landing_sensor, instance, landing, None)
        sample = ["bluepeak/bluepeak_claims_001.csv", "cascade/cascade_claims_001.txt", "northwind/northwind_claims_001.csv"]
        assert sorted(instance.get_dynamic_partitions("landing_file")) == sample  # acme's file waits
        assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
                for r in first.run_requests] == [(sample[0], sample[-1])]

        # northwind's contract breaks too, while one of its files changes and bluepeak sends a new file
        nw.write_text(good_nw.replace('delimiter: ","', 'delimiter: ",,"'))
        with (landing / "northwind" / "northwind_claims_001.csv").open("a") as f:
            f.write("\n")
        shutil.copy(landing / "bluepeak" / "bluepeak_claims_001.csv", landing / "bluepeak" / "bluepeak_claims_002.csv")
        held = _evaluate(local_landing_sensor, instance, landing, first.cursor)
        # bluepeak's file runs; northwind's waits, and is not taken for deleted (no landing-only run)
        assert [(r.partition_key, r.tags["medflow/change"], r.asset_selection) for r in held.run_requests] == [
            ("bluepeak/bluepeak_claims_002.csv", "new", None)]
        assert _evaluate(local_landing_sensor, instance, landing, held.cursor).run_requests == []

        # both contracts fixed: acme's file is new, northwind's changed bytes run
        nw.write_text(good_nw)
        (contracts / "acme.yaml").write_text(acme_ok)
        fixed = _evaluate(local_landing_sensor, instance, landing, held.cursor)
        assert [(r.partition_key, r.tags["medflow/change"]) for r in fixed.run_requests] == [
            ("acme/acme_claims_001.csv", "new"), ("northwind/northwind_claims_001.csv", "changed")]


def test_a_loaded_payer_whose_contract_breaks_keeps_its_rows_and_runs_again_only_if_a_run_held_it(tmp_path):
    """cascade's contract breaks after its file was loaded. A run over every file meanwhile (medflow-load)
    holds the file: its registry row and rows stay as they were, dbt leaves it out. Once the contract is
    valid again the sensor runs it, also when no tick saw the contract invalid (the registry says a run held
    it), and not when no run held it."""
    from tests.helpers import materialize_graph, query

    landing, contracts, wh = tmp_path / "landing", tmp_path / "contracts", tmp_path / "wh.duckdb"
    shutil.copytree(SAMPLE_LANDING, landing)
    shutil.copytree(CONTRACTS_DIR, contracts)
    instance = dg.DagsterInstance.ephemeral()
    key = "cascade/cascade_claims_001.txt"
    cascade = contracts / "cascade.yaml"
    good = cascade.read_text()
    broken = good.replace("amount_encoding: cents", "amount_encoding: pennies")
    registry = "SELECT status, checksum, held_reason FROM landing.landing_file_registry WHERE source_file = ?"
    assert materialize_graph(landing, wh, contracts=contracts, instance=instance).success
    loaded = query(wh, registry, [key])
    bronze = query(wh, "SELECT count(*), sum(hash(source_row_number)) FROM bronze.bronze_claim_lines "
                       "WHERE payer = 'cascade'")
    last_load = "SELECT max(load_id) FROM silver.silver_data_quality_log WHERE source_file = ?"
    load_id = query(wh, last_load, [key])
    with medflow_env(contracts_path=contracts, warehouse_path=wh):
        start = _evaluate(local_landing_sensor, instance, landing, None)
        assert start.run_requests == []  # every file already loaded
        # the registry (the warehouse) is asked about held files again only once a landing run reports one
        assert json.loads(start.cursor)["holds_pending"] is False

        cascade.write_text(broken)  # no tick sees it broken before the run
        result = materialize_graph(landing, wh, contracts=contracts, instance=instance)  # as medflow-load
        assert result.success
        (status, checksum, held_reason), = query(wh, registry, [key])
        assert (status, checksum) == loaded[0][:2] and held_reason.startswith(
            f"{key}: held, not read, while its payer's contract is invalid (payer contract {cascade}: amount_encoding")
        assert query(wh, "SELECT count(*), sum(hash(source_row_number)) FROM bronze.bronze_claim_lines "
                         "WHERE payer = 'cascade'") == bronze
        assert query(wh, last_load, [key]) == load_id  # dbt left the file out
        check = check_result(result, "files_match_payer_contracts")
        assert not check.passed and f"1 file(s) held until their contract is valid: {key}" in check.description
        assert query(wh, "SELECT json_extract_string(contract_json, '$.amount_encoding') FROM landing.payer_contracts "
                         "WHERE payer = 'cascade'") == [("cents",)]  # the last valid contract, kept
        assert _evaluate(local_landing_sensor, instance, landing, start.cursor).run_requests == []  # still broken

        cascade.write_text(good)
        fixed = _evaluate(local_landing_sensor, instance, landing, start.cursor)
        assert [(r.partition_key, r.tags["medflow/change"]) for r in fixed.run_requests] == [(key, "contract fixed")]
        again = _evaluate(local_landing_sensor, instance, landing, fixed.cursor)  # before the run: the same request
        assert [r.run_key for r in again.run_requests] == [r.run_key for r in fixed.run_requests]
        assert json.loads(again.cursor)["holds_pending"] is True
        assert materialize_graph(landing, wh, contracts=contracts, instance=instance, partitions=[key]).success
        assert query(wh, registry, [key]) == loaded
        after = _evaluate(local_landing_sensor, instance, landing, again.cursor)
        assert after.run_requests == [] and json.loads(after.cursor)["holds_pending"] is False

        # broken and fixed again with no run in between: nothing to run
        cascade.write_text(broken)
        held = _evaluate(local_landing_sensor, instance, landing, after.cursor)
        assert held.run_requests == []
        cascade.write_text(good)
        assert _evaluate(local_landing_sensor, instance, landing, held.cursor).run_requests == []


def test_a_held_file_dagster_has_no_partition_for_gets_one_with_its_run(tmp_path):
    from medflow_assets.landing.sensors import evaluate_landing
    from medflow_assets.landing.zone import LocalLanding

    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE_LANDING, landing)
    zone, key = LocalLanding(landing), "cascade/cascade_claims_001.txt"
    _, to_add, cursor, _ = evaluate_landing(zone, None, set())
    known = set(to_add) - {key}  # its partition was deleted in the UI, say
    reqs, to_add, _, summary = evaluate_landing(zone, cursor, known, held={key: "2026-12-07 03:00:00"})
    assert [(r.partition_key, r.tags["medflow/change"], r.run_key) for r in reqs] == [
        (key, "contract fixed", f"{key}@held 2026-12-07 03:00:00")]
    assert to_add == [key] and summary["contract fixed"] == [key]


def test_a_file_that_vanishes_between_the_scan_and_its_checksum_is_looked_at_again(tmp_path):
    from medflow_assets.landing.sensors import evaluate_landing
    from medflow_assets.landing.zone import LandingReadError, LocalLanding

    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE_LANDING, landing)

    def vanished(zone, obj):
        if obj.payer == "cascade":
            raise LandingReadError(f"cannot read landed file {obj.location}: gone") from FileNotFoundError(2, "gone")
        if obj.payer == "bluepeak":
            raise LandingReadError(f"cannot read landed file {obj.location}: denied") from PermissionError(13, "no")
        return "sha-" + obj.payer

    requests, to_add, cursor, summary = evaluate_landing(LocalLanding(landing), None, set(), checksum_of=vanished)
    assert [r.partition_key for r in requests] == ["northwind/northwind_claims_001.csv"]
    assert summary["settling"] == ["cascade/cascade_claims_001.txt"]
    # a file that cannot be read (permissions) is said on every tick, not taken for one being written
    assert [u.split(" (")[0] for u in summary["not read"]] == ["bluepeak/bluepeak_claims_001.csv: cannot be read"]
    assert set(json.loads(cursor)["files"]) == {"northwind/northwind_claims_001.csv"}
    again = evaluate_landing(LocalLanding(landing), cursor, set(to_add), checksum_of=lambda z, o: "sha-" + o.payer)
    assert sorted(again[1]) == ["bluepeak/bluepeak_claims_001.csv", "cascade/cascade_claims_001.txt"]


def test_files_gone_from_the_zone_are_marked_missing_by_one_landing_run(tmp_path):
    """A payer folder deleted (two files) is one landing-only run, which marks both missing; a file a
    contract's file_glob no longer matches is marked missing with that reason. Loaded rows stay."""
    from medflow_assets.synth.generator import generate
    from tests.helpers import materialize_graph, query

    landing, contracts, wh = tmp_path / "landing", tmp_path / "contracts", tmp_path / "wh.duckdb"
    generate(landing, 3000, seed=51, files_per_payer=2, manifest_dir=tmp_path / "m")
    shutil.copytree(CONTRACTS_DIR, contracts)
    instance = dg.DagsterInstance.ephemeral()
    with medflow_env(contracts_path=contracts):
        first = _evaluate(local_landing_sensor, instance, landing, None)
        assert materialize_graph(landing, wh, contracts=contracts, instance=instance).success
        bronze = query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines")
        shutil.rmtree(landing / "northwind")
        bp = contracts / "bluepeak.yaml"
        bp.write_text(bp.read_text().replace('file_glob: "*.csv"', 'file_glob: "bp_*.csv"'))
        tick = _evaluate(local_landing_sensor, instance, landing, first.cursor)
        [gone_run] = [r for r in tick.run_requests if r.tags["medflow/change"] == "deleted"]
        assert gone_run.asset_selection == [dg.AssetKey("landing_files")] and gone_run.tags["medflow/files_gone"] == "4"
        # a run for one file that is not the sensor's run for files that left marks only its own file
        assert materialize_graph(landing, wh, contracts=contracts, instance=instance,
                                 partitions=[gone_run.partition_key],
                                 selection=dg.AssetSelection.assets("landing_files")).success
        assert query(wh, "SELECT count(*) FROM landing.landing_file_registry WHERE status = 'missing'") == [(1,)]
        assert materialize_graph(landing, wh, contracts=contracts, instance=instance, partitions=[gone_run.partition_key],
                                 selection=dg.AssetSelection.assets("landing_files"), tags=gone_run.tags).success
    status = query(wh, "SELECT source_file, status, error FROM landing.landing_file_registry ORDER BY 1")
    assert [(f.split("/")[0], s) for f, s, _ in status] == [("bluepeak", "missing")] * 2 + [("cascade", "accepted")] * 2 \
        + [("northwind", "missing")] * 2
    assert "is no longer read (name does not match the bluepeak contract's file_glob 'bp_*.csv'" in status[0][2]
    assert "is no longer in" in status[-1][2]
    assert query(wh, "SELECT count(*) FROM bronze.bronze_claim_lines") == bronze  # loaded rows stay


def test_a_future_mtime_settles_once_unchanged_for_a_tick_and_touched_files_are_asked_about_at_once(tmp_path):
    from medflow_assets.landing.sensors import evaluate_landing
    from medflow_assets.landing.zone import LocalLanding

    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE_LANDING, landing)
    now = 2_000_000_000 * 10**9
    for f in landing.rglob("*.*"):
        os.utime(f, ns=(now - 10**12, now - 10**12))           # long settled
    ahead = landing / "cascade" / "cascade_claims_001.txt"
    os.utime(ahead, ns=(now + 600 * 10**9, now + 600 * 10**9))  # written by a host whose clock is 10 min ahead
    zone, sha = LocalLanding(landing), (lambda z, o: "sha-" + o.source_file)
    reqs, to_add, cursor, summary = evaluate_landing(zone, None, set(), checksum_of=sha, settle_seconds=60, now_ns=now)
    assert summary["settling"] == ["cascade/cascade_claims_001.txt"] and len(to_add) == 2
    reqs, to_add, cursor, summary = evaluate_landing(zone, cursor, set(to_add), checksum_of=sha, settle_seconds=60,
                                                     now_ns=now + 30 * 10**9)
    assert [r.partition_key for r in reqs] == ["cascade/cascade_claims_001.txt"]   # unchanged since: settled

    for f in landing.rglob("*.*"):                             # every file touched (a copy without -p)
        os.utime(f, ns=(now, now))
    asked = []
    reqs, _, _, summary = evaluate_landing(
        zone, cursor, {"bluepeak/bluepeak_claims_001.csv", "cascade/cascade_claims_001.txt",
                       "northwind/northwind_claims_001.csv"}, checksum_of=sha, settle_seconds=60,
        now_ns=now + 120 * 10**9, failed_files=lambda keys: asked.append(keys) or {"northwind/northwind_claims_001.csv"})
    assert asked == [["bluepeak/bluepeak_claims_001.csv", "cascade/cascade_claims_001.txt",
                      "northwind/northwind_claims_001.csv"]]               # one question for all of them
    assert [(r.partition_key, r.tags["medflow/change"]) for r in reqs] == [("northwind/northwind_claims_001.csv", "retried")]


def test_a_cursor_of_an_earlier_version_reruns_nothing(tmp_path):
    """Cursors written before (the file mapping alone, or digests computed otherwise) read as unchanged:
    an upgrade does not rerun every file."""
    landing = tmp_path / "landing"
    shutil.copytree(SAMPLE_LANDING, landing)
    instance = dg.DagsterInstance.ephemeral()
    first = _evaluate(local_landing_sensor, instance, landing, None)
    files = json.loads(first.cursor)["files"]
    for old in ({k: v[:2] for k, v in files.items()},                                     # stop 15's cursor
                {"arrivals": 3, "files": {k: [*v[:2], "digest-of-before"] for k, v in files.items()}}):
        tick = _evaluate(local_landing_sensor, instance, landing, json.dumps(old))
        assert tick.run_requests == []
        assert json.loads(tick.cursor)["files"] == files and json.loads(tick.cursor)["version"] == 2


def test_files_medflow_load_already_loaded_are_not_run_again_by_the_sensors_first_tick(tmp_path):
    """The README's order: `.ci/materialize` (medflow-load), then `dagster dev`: the sensor starts with no
    cursor, and the bytes the warehouse holds are not run a second time, one run per file. A file whose bytes
    differ from what was loaded, or whose contract changed since, runs; a warehouse it cannot read (a run
    holds it) means the files run, as before."""
    import duckdb

    from tests.helpers import copy_contracts, materialize_graph

    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    shutil.copytree(SAMPLE_LANDING, landing)
    contracts = copy_contracts(tmp_path / "contracts")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, contracts=contracts, instance=instance).success  # as medflow-load
    with medflow_env(warehouse_path=wh, contracts_path=contracts):
        first = _evaluate(local_landing_sensor, instance, landing, None)
        assert first.run_requests == []
        assert set(json.loads(first.cursor)["files"]) == {  # the files are in the cursor: later ticks know them
            "northwind/northwind_claims_001.csv", "bluepeak/bluepeak_claims_001.csv", "cascade/cascade_claims_001.txt"}
        # a run that failed after landing (here: the dbt step) leaves its file to run again
        from medflow_assets.transform import assets as transform_assets

        def broken(context, warehouse):
            raise RuntimeError("stopped before dbt")

        original = transform_assets._prepare
        transform_assets._prepare = broken
        try:
            assert not materialize_graph(landing, wh, contracts=contracts, instance=instance,
                                         partitions=["cascade/cascade_claims_001.txt"]).success
        finally:
            transform_assets._prepare = original
        assert [r.partition_key for r in _evaluate(local_landing_sensor, instance, landing, None).run_requests] == [
            "cascade/cascade_claims_001.txt"]
        # a cursor reset later, with one file's bytes changed and another payer's contract changed
        nw = landing / "northwind" / "northwind_claims_001.csv"
        nw.write_text("\n".join(nw.read_text().splitlines()[:-1]) + "\n")
        bp = contracts / "bluepeak.yaml"
        bp.write_text(bp.read_text().replace("max_quarantine_rate: 0.10", "max_quarantine_rate: 0.2"))
        again = _evaluate(local_landing_sensor, instance, landing, None)
        assert sorted(r.partition_key for r in again.run_requests) == [
            "bluepeak/bluepeak_claims_001.csv", "cascade/cascade_claims_001.txt", "northwind/northwind_claims_001.csv"]
        # the warehouse held by a writer: the sensor cannot tell, so every file the cursor does not know runs
        with duckdb.connect(str(wh)):
            held = _evaluate(local_landing_sensor, instance, landing, None)
        assert len(held.run_requests) == 3


def _loaded_sample(tmp_path):
    """(landing, contracts, warehouse, instance): the sample files loaded as medflow-load loads them."""
    from tests.helpers import copy_contracts, materialize_graph

    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    shutil.copytree(SAMPLE_LANDING, landing)
    contracts = copy_contracts(tmp_path / "contracts")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, contracts=contracts, instance=instance).success
    return landing, contracts, wh, instance


def test_a_file_deleted_before_the_sensors_first_tick_is_marked_missing_once(tmp_path):
    """A file deleted between medflow-load and the first tick of `dagster dev` (or while the cursor was reset)
    is in no cursor to miss it from (found by a landing review): the first tick asks the landing-only run
    for files that left the zone since the warehouse holds it loaded; once that run marked it missing, later
    ticks, with or without a cursor, ask nothing more."""
    from tests.helpers import materialize_graph, query

    landing, contracts, wh, instance = _loaded_sample(tmp_path)
    gone = "cascade/cascade_claims_001.txt"
    (landing / gone).unlink()
    with medflow_env(warehouse_path=wh, contracts_path=contracts):
        first = _evaluate(local_landing_sensor, instance, landing, None)
        [run] = first.run_requests
        assert (run.partition_key, run.tags["medflow/change"], run.tags["medflow/files_gone"]) == (gone, "deleted", "1")
        assert run.asset_selection == [dg.AssetKey("landing_files")]
        assert materialize_graph(landing, wh, contracts=contracts, instance=instance, partitions=[gone],
                                 selection=dg.AssetSelection.assets("landing_files"), tags=run.tags).success
        assert query(wh, "SELECT status FROM landing.landing_file_registry WHERE source_file = ?", [gone]) == [
            ("missing",)]
        assert _evaluate(local_landing_sensor, instance, landing, first.cursor).run_requests == []
        assert _evaluate(local_landing_sensor, instance, landing, None).run_requests == []  # a reset again


def test_a_removed_contract_holds_its_loaded_files_once_and_they_run_again_when_it_is_back(tmp_path):
    """A payer's contract file removed after its files loaded: the sensor asks one run for its file (its
    contract changed), which holds it, and nothing more while the contract stays away (found on review: each
    tick asked another run, since every hold looked like one to clear). With the contract back, the file
    runs once, and silver holds its lines as before."""
    from tests.helpers import materialize_graph, query

    landing, contracts, wh, instance = _loaded_sample(tmp_path)
    nw = "northwind/northwind_claims_001.csv"
    lines = "SELECT count(*) FROM silver.silver_claim_lines WHERE source_file = ?"
    loaded = query(wh, lines, [nw])

    def ticks(cursor, n):
        runs = []
        for _ in range(n):
            tick = _evaluate(local_landing_sensor, instance, landing, cursor)
            cursor = tick.cursor
            for run in tick.run_requests:
                runs.append((run.partition_key, run.tags["medflow/change"]))
                assert materialize_graph(landing, wh, contracts=contracts, instance=instance,
                                         partitions=[run.partition_key], tags=run.tags).success
        return runs, cursor

    with medflow_env(warehouse_path=wh, contracts_path=contracts):
        assert _evaluate(local_landing_sensor, instance, landing, None).run_requests == []
        cursor = _evaluate(local_landing_sensor, instance, landing, None).cursor
        moved = (contracts / "northwind.yaml").rename(tmp_path / "northwind.yaml")
        runs, cursor = ticks(cursor, 4)
        assert runs == [(nw, "contract changed")]
        assert query(wh, "SELECT held_reason IS NOT NULL FROM landing.landing_file_registry WHERE source_file = ?",
                     [nw]) == [(True,)]
        moved.rename(contracts / "northwind.yaml")
        runs, cursor = ticks(cursor, 3)
        assert runs == [(nw, "contract changed")]
        assert query(wh, "SELECT held_reason FROM landing.landing_file_registry WHERE source_file = ?", [nw]) == [
            (None,)]
    assert query(wh, lines, [nw]) == loaded


def test_what_medflow_derives_from_a_contract_is_not_a_contract_change():
    """date_pattern is derived from date_format: a MedFlow upgrade that adds it must not rerun every file."""
    from medflow_assets.landing.contracts import load_contracts
    from medflow_assets.landing.sensors import contract_json_digest

    said = load_contracts(CONTRACTS_DIR)["northwind"].as_dbt_json()
    assert contract_json_digest({**said, "date_pattern": "anything"}) == contract_json_digest(said)
    assert contract_json_digest({**said, "date_format": "%d/%m/%Y"}) != contract_json_digest(said)
