"""File-driven incremental runs, end to end on the local landing zone: a new file, then a corrected one."""

import csv
import hashlib
import shutil

import dagster as dg

from medflow_assets.landing.resource import LandingResource
from medflow_assets.landing.sensors import local_landing_sensor
from medflow_assets.synth.generator import generate
from tests.helpers import (
    check_result,
    file_fingerprints,
    materialize_graph,
    medflow_env,
    query,
    unconserved_files,
)


def _sensor(instance, landing, cursor):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor,
                                  resources={"landing": LandingResource(local_path=str(landing))})
    with medflow_env(landing_settle_seconds=0):  # files written just now count as complete
        return local_landing_sensor(ctx)


def _file_fingerprints(wh) -> dict[str, tuple]:
    return file_fingerprints(wh, "silver.silver_claim_lines_validated")



def test_new_file_runs_alone_and_a_corrected_file_replaces_its_rows(tmp_path):
    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    generate(landing, 9000, seed=21, defect_rate=0.02, manifest_dir=tmp_path / "m0")
    instance = dg.DagsterInstance.ephemeral()
    first = _sensor(instance, landing, None)
    assert len(first.run_requests) == 1  # the three new files in one run (a partition range)
    for req in first.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    first_run = materialize_graph(landing, wh, instance=instance)  # first load: all three in one run
    assert first_run.success
    # a run over every landed file checks whole tables (no per-file filter)
    first_check = next(e for e in first_run.get_asset_check_evaluations()
                       if e.check_name == "pandera_SilverClaimLines")
    assert first_check.metadata["scope"].value == "whole table"
    assert first_check.metadata["rows_checked"].value == query(wh, "SELECT count(*) FROM silver.silver_claim_lines")[0][0]
    before = _file_fingerprints(wh)
    assert len(before) == 3

    # a fourth file lands
    batch = generate(tmp_path / "batch", 1800, seed=22, defect_rate=0.02, payers=["northwind"],
                     row_offset=1_000_000, file_tag="batch2", manifest_dir=tmp_path / "m1")[0]
    shutil.copy(batch.path, landing / "northwind" / batch.path.name)
    key = f"northwind/{batch.path.name}"
    tick = _sensor(instance, landing, first.cursor)
    assert [r.partition_key for r in tick.run_requests] == [key]
    result = materialize_graph(landing, wh, instance=instance, partitions=[key])
    assert result.success
    # the run touched only that file's partition
    partitions = {e.partition for e in result.get_asset_materialization_events() if e.partition}
    assert partitions == {key}
    # and its checks looked at that file's rows, not the whole warehouse
    silver_check = next(e for e in result.get_asset_check_evaluations()
                        if e.check_name == "pandera_SilverClaimLines")
    assert silver_check.passed
    assert silver_check.metadata["scope"].value == "rows of the 1 landed file(s) of this run"
    assert silver_check.metadata["rows_checked"].value == query(
        wh, f"SELECT count(*) FROM silver.silver_claim_lines WHERE source_file = '{key}'")[0][0]
    # silver_members has no source_file: its check covers the members that file's lines refer to
    members_check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "pandera_SilverMembers")
    assert members_check.passed
    assert members_check.metadata["scope"].value == "rows whose member_key occurs in the 1 landed file(s) of this run"
    (in_file, all_members) = query(wh, f"""
        SELECT count(*) FILTER (WHERE member_key IN (SELECT member_key FROM silver.silver_claim_lines_validated
                                                     WHERE source_file = '{key}')), count(*)
        FROM silver.silver_members""")[0]
    assert members_check.metadata["rows_checked"].value == in_file and 0 < in_file < all_members
    after = _file_fingerprints(wh)
    assert {f: after[f] for f in before} == before          # the other three files' rows are untouched
    assert after[key][0] == batch.lines
    gold_lines = query(wh, "SELECT sum(lines) FROM gold.claims_monthly_summary")[0][0]
    assert gold_lines == query(wh, "SELECT count(*) FROM silver.silver_claim_lines")[0][0]
    assert query(wh, f"SELECT count(*) > 0 FROM silver.silver_claim_lines WHERE source_file = '{key}'") == [(True,)]
    assert unconserved_files(wh) == []

    # a corrected version of the fourth file, same name
    fixed = generate(tmp_path / "fixed", 1500, seed=23, defect_rate=0.0, payers=["northwind"],
                     row_offset=1_000_000, file_tag="batch2", manifest_dir=tmp_path / "m2")[0]
    shutil.copy(fixed.path, landing / "northwind" / batch.path.name)
    tick2 = _sensor(instance, landing, tick.cursor)
    assert [r.partition_key for r in tick2.run_requests] == [key]
    assert tick2.run_requests[0].run_key != tick.run_requests[0].run_key
    assert materialize_graph(landing, wh, instance=instance, partitions=[key]).success
    final = _file_fingerprints(wh)
    assert {f: final[f] for f in before} == before
    assert final[key][0] == fixed.lines                       # replaced, not added to
    assert query(wh, f"SELECT count(*) FROM silver.silver_claims_quarantine WHERE source_file = '{key}'") == [(0,)]
    assert query(wh, "SELECT count(*) - count(DISTINCT (payer, claim_id, claim_line_number)) "
                     "FROM silver.silver_claim_lines") == [(0,)]
    assert query(wh, f"SELECT checksum FROM landing.landing_file_registry WHERE source_file = '{key}'") == [
        (hashlib.sha256((landing / key).read_bytes()).hexdigest(),)]  # the corrected bytes'
    assert unconserved_files(wh) == []
    # nothing more to do
    assert _sensor(instance, landing, tick2.cursor).run_requests == []

    # corrected again, to a file with its header and no lines: its rows are replaced by none
    path = landing / "northwind" / batch.path.name
    path.write_text(path.read_text().splitlines()[0] + "\n")
    tick3 = _sensor(instance, landing, tick2.cursor)
    assert [r.partition_key for r in tick3.run_requests] == [key]
    assert materialize_graph(landing, wh, instance=instance, partitions=[key]).success
    for table in ("bronze.bronze_claim_lines", "silver.silver_claim_lines_validated"):
        assert query(wh, f"SELECT count(*) FROM {table} WHERE source_file = '{key}'") == [(0,)], table
    assert query(wh, f"SELECT DISTINCT rows_checked FROM silver.silver_data_quality_log WHERE source_file = '{key}'") \
        == [(0,)]
    emptied = _file_fingerprints(wh)
    assert key not in emptied and emptied == before
    assert query(wh, "SELECT sum(lines) FROM gold.claims_monthly_summary") == query(
        wh, "SELECT count(*) FROM silver.silver_claim_lines")
    assert unconserved_files(wh) == []


GOLD_SUMMARY = "SELECT * EXCLUDE (through_load_id) FROM gold.claims_monthly_summary ORDER BY ALL"



def test_a_file_re_sent_under_another_name_is_rejected_at_landing_and_gold_goes_on(tmp_path):
    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    generate(landing, 3000, seed=31, defect_rate=0.0, payers=["cascade"], manifest_dir=tmp_path / "m")
    assert materialize_graph(landing, wh).success
    gold_before = query(wh, GOLD_SUMMARY)
    copy = "cascade/cascade_claims_001_resent.txt"
    shutil.copy(landing / "cascade" / "cascade_claims_001.txt", landing / copy)
    # header-only files with the same bytes have no lines to count twice: they are not copies
    header = (landing / "cascade" / "cascade_claims_001.txt").read_text().splitlines()[0] + "\n"
    for name in ("cascade_empty_a.txt", "cascade_empty_b.txt"):
        (landing / "cascade" / name).write_text(header)
    result = materialize_graph(landing, wh, partitions=[copy, "cascade/cascade_empty_a.txt",
                                                        "cascade/cascade_empty_b.txt"])
    assert result.success
    check = check_result(result, "no_file_landed_twice")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description == f"{copy} is a copy of cascade/cascade_claims_001.txt (not loaded)"
    assert check_result(result, "files_match_payer_contracts").passed
    assert query(wh, "SELECT source_file, status, error LIKE '%same bytes%as cascade/cascade_claims_001.txt%' "
                     "FROM landing.landing_file_registry ORDER BY 1") == [
        ("cascade/cascade_claims_001.txt", "accepted", None),
        (copy, "rejected", True),
        ("cascade/cascade_empty_a.txt", "accepted", None),
        ("cascade/cascade_empty_b.txt", "accepted", None)]
    assert query(wh, f"SELECT count(*) FROM bronze.bronze_claim_lines WHERE source_file = '{copy}'") == [(0,)]
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines") == [(3000,)]
    assert query(wh, GOLD_SUMMARY) == gold_before
    # a file with no rows has no valid rate (not 0%)
    assert query(wh, "SELECT source_file, rows_checked, valid_rate FROM quality.scorecard_history "
                     "WHERE source_file LIKE '%empty%' ORDER BY 1") == [
        ("cascade/cascade_empty_a.txt", 0, None), ("cascade/cascade_empty_b.txt", 0, None)]
    scorecard = next(m for m in result.get_asset_materialization_events()
                     if m.asset_key == dg.AssetKey(["quality", "data_quality_scorecard"])).materialization.metadata
    assert "| cascade | cascade/cascade_empty_a.txt | 0 | n/a (no rows) | - | new | - | - |" in scorecard["scorecard"].value

    # every file processed again in one run: the original stays the original, whatever the order
    result = materialize_graph(landing, wh)
    assert result.success
    assert check_result(result, "no_file_landed_twice").description == \
        f"{copy} is a copy of cascade/cascade_claims_001.txt (not loaded)"
    assert query(wh, "SELECT source_file FROM landing.landing_file_registry WHERE status = 'rejected'") == [
        (copy,)]
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines") == [(3000,)]
    assert query(wh, GOLD_SUMMARY) == gold_before


def test_a_corrected_file_leaves_no_member_version_only_its_old_bytes_had(tmp_path):
    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    generate(landing, 4000, seed=51, defect_rate=0.0, payers=["northwind", "cascade"], manifest_dir=tmp_path / "m")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance).success
    members_before = query(wh, "SELECT count(*) FROM silver.silver_members")[0][0]
    [path] = (landing / "northwind").iterdir()
    header, *lines = list(csv.reader(path.open(newline="")))
    kept = lines[: len(lines) // 2]
    kept[0][header.index("phone")] = "555-010-9999"  # a kept line's member gets a new phone: a new version
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *kept])

    result = materialize_graph(landing, wh, instance=instance, partitions=[f"northwind/{path.name}"])

    assert result.success
    # the same members as a warehouse built from scratch from what is landed now: none of the dropped lines'
    # members, no old phone version that only the old bytes had
    fresh = tmp_path / "fresh.duckdb"
    assert materialize_graph(landing, fresh).success
    members = "SELECT * FROM silver.silver_members ORDER BY ALL"
    assert query(wh, members) == query(fresh, members)
    assert query(wh, "SELECT count(*) FROM silver.silver_members")[0][0] < members_before
    assert query(wh, "SELECT count(DISTINCT payer) FROM silver.silver_members") == [(2,)]


def test_the_quarantine_gate_keeps_gold_held_back_while_any_landed_file_is_over_its_limit(tmp_path):
    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    generate(landing, 2000, seed=53, defect_rate=0.0, payers=["northwind", "cascade"], manifest_dir=tmp_path / "m")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_graph(landing, wh, instance=instance).success
    gold_before = query(wh, GOLD_SUMMARY)
    # a northwind file with every status unknown: all its rows quarantined (northwind allows 10%)
    [nw] = (landing / "northwind").iterdir()
    header, *lines = list(csv.reader(nw.open(newline="")))
    status = header.index("status")
    with (landing / "northwind" / "northwind_bad.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *[[*r[:status], "lost", *r[status + 1:]] for r in lines[:50]]])
    bad = materialize_graph(landing, wh, instance=instance, partitions=["northwind/northwind_bad.csv"])
    assert not bad.success
    assert check_result(bad, "quarantine_rate_gate").description.startswith(
        "northwind/northwind_bad.csv: 100.00% quarantined > 10% (top rules: ")
    # a clean file of another payer: the gate still looks at every file, so gold stays held back
    generate(tmp_path / "more", 300, seed=54, defect_rate=0.0, payers=["cascade"], file_tag="later", row_offset=100_000,
             manifest_dir=tmp_path / "m2")
    [later] = (tmp_path / "more" / "cascade").iterdir()
    shutil.copy(later, landing / "cascade" / later.name)
    clean = materialize_graph(landing, wh, instance=instance, partitions=[f"cascade/{later.name}"])
    assert not clean.success
    gate = check_result(clean, "quarantine_rate_gate")
    assert not gate.passed and gate.description.startswith("northwind/northwind_bad.csv: 100.00% quarantined")
    assert query(wh, GOLD_SUMMARY) == gold_before
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE source_file = ?",
                 [f"cascade/{later.name}"]) == [(300,)]
    assert ("to go on: correct the file in the landing zone (a header-only file withdraws its rows), raise "
            "max_quarantine_rate in the payer's contract, or delete the file to accept the rows already loaded"
            ) in gate.description

    # the operator deletes the bad file: the sensor's run for files that left marks it missing and evaluates
    # the gate, which no longer counts it, so gold goes on (automation) with the clean file
    cursor = _sensor(instance, landing, None).cursor
    (landing / "northwind" / "northwind_bad.csv").unlink()
    [gone_run] = _sensor(instance, landing, cursor).run_requests
    assert gone_run.tags["medflow/change"] == "deleted"
    selection = (dg.AssetSelection.assets(*gone_run.asset_selection).without_checks()
                 | dg.AssetSelection.checks(*gone_run.asset_check_keys))
    gone = materialize_graph(landing, wh, instance=instance, partitions=[gone_run.partition_key],
                             selection=selection, tags=gone_run.tags)
    assert gone.success
    gate = check_result(gone, "quarantine_rate_gate")
    assert gate.passed and gate.description == (
        "all 3 files within their quarantine-rate limit (not counted, no longer in the landing zone: "
        "northwind/northwind_bad.csv)")
    assert check_result(gone, "files_match_payer_contracts").description.startswith("northwind/northwind_bad.csv is no longer in")
    assert materialize_graph(landing, wh, instance=instance, partitions=[],
                             selection=dg.AssetSelection.groups("gold")).success
    assert query(wh, "SELECT sum(lines) FROM gold.claims_monthly_summary WHERE payer = 'cascade'") == query(
        wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE payer = 'cascade'")
    assert query(wh, "SELECT sum(lines) FROM gold.claims_monthly_summary WHERE payer = 'northwind'") == query(
        wh, "SELECT count(*) FROM silver.silver_claim_lines WHERE payer = 'northwind'")

    # another bad file, withdrawn by landing its header line alone under the same name: its rows go
    bad2 = landing / "northwind" / "northwind_bad2.csv"
    with bad2.open("w", newline="") as f:
        csv.writer(f).writerows([header, *[[*r[:status], "lost", *r[status + 1:]] for r in lines[50:80]]])
    assert not materialize_graph(landing, wh, instance=instance, partitions=["northwind/northwind_bad2.csv"]).success
    with bad2.open("w", newline="") as f:
        csv.writer(f).writerows([header])
    withdrawn = materialize_graph(landing, wh, instance=instance, partitions=["northwind/northwind_bad2.csv"])
    assert withdrawn.success and check_result(withdrawn, "quarantine_rate_gate").passed
    assert query(wh, "SELECT count(*) FROM silver.silver_claim_lines_validated "
                     "WHERE source_file = 'northwind/northwind_bad2.csv'") == [(0,)]


def test_deleting_a_file_over_its_limit_whose_correction_was_rejected_lets_gold_go_on(tmp_path):
    """README: delete a file over its quarantine limit to accept its loaded rows. When its correction had been
    rejected at landing (a missing column), the file stayed `rejected` with its old rows loaded, the sensor's
    run for files that left the zone did not mark it missing, and the gate counted it for ever (found by a
    quality review). It is marked missing, with the checksum of the rows silver holds, and the gate passes.
    The gate names a payer's limit as the contract writes it (12.5%, not rounded to 12% or 13%)."""
    from medflow_assets.landing.sensors import LANDING_CHECKS
    from medflow_assets.quality.checks import QUARANTINE_GATE
    from tests.helpers import copy_contracts

    landing, wh = tmp_path / "landing", tmp_path / "wh.duckdb"
    contracts = copy_contracts(tmp_path / "contracts")
    (contracts / "cascade.yaml").write_text((contracts / "cascade.yaml").read_text().replace(
        "max_quarantine_rate: 0.10", "max_quarantine_rate: 0.125"))
    instance = dg.DagsterInstance.ephemeral()
    generate(landing, 600, seed=3, defect_rate=0.0, payers=["northwind"], manifest_dir=tmp_path / "m1")
    generate(landing, 600, seed=4, defect_rate=0.3, payers=["cascade"], manifest_dir=tmp_path / "m2")
    cascade = "cascade/cascade_claims_001.txt"
    first = check_result(materialize_graph(landing, wh, contracts=contracts, instance=instance), "quarantine_rate_gate")
    assert not first.passed and first.description.startswith(f"{cascade}: ")
    assert "% quarantined > 12.5% (top rules: " in first.description
    loaded = query(wh, "SELECT checksum FROM landing.landing_file_registry WHERE source_file = ?", [cascade])
    path = landing / cascade
    path.write_text("\n".join(line.rsplit("|", 1)[0] for line in path.read_text().splitlines()) + "\n")  # no CARC_CD
    assert not check_result(materialize_graph(landing, wh, contracts=contracts, instance=instance,
                                              partitions=[cascade]), "quarantine_rate_gate").passed
    assert query(wh, "SELECT status FROM landing.landing_file_registry WHERE source_file = ?", [cascade]) == [
        ("rejected",)]
    path.unlink()
    deleted = materialize_graph(  # the sensor's run for files that left the zone
        landing, wh, contracts=contracts, instance=instance, partitions=[cascade],
        selection=dg.AssetSelection.assets("landing_files") | dg.AssetSelection.checks(*LANDING_CHECKS,
                                                                                        QUARANTINE_GATE.key),
        tags={"medflow/landing_file": cascade, "medflow/change": "deleted"})
    assert query(wh, "SELECT status, checksum FROM landing.landing_file_registry WHERE source_file = ?",
                 [cascade]) == [("missing", loaded[0][0])]
    gate = check_result(deleted, "quarantine_rate_gate")
    assert gate.passed, gate.description
