"""`medflow-load`: register every landed file as a partition, then materialize the whole graph for all of
them in ONE run (single-run backfill), in this process.

The run is the one `dagster asset materialize --select '*' --partition-range <first>...<last> -m
medflow_assets.definitions` would start (the same job, tags and instance, so it shows in the Dagster UI), without
a second Python start-up that imports Dagster, dbt and the definitions again (~4 s, BENCHMARKS.md)."""

import argparse
import fcntl
import os
import sys
from pathlib import Path

import dagster as dg

from medflow_assets.landing.contracts import ContractError, load_contracts
from medflow_assets.landing.partitions import landing_file_partitions
from medflow_assets.landing.resource import landing_resource
from medflow_assets.landing.zone import CREDENTIAL_ERRORS, CREDENTIALS_HINT, LandingReadError
from medflow_assets.settings import PROJECT_ROOT, Settings, SettingsError, load_settings

DEFAULT_DAGSTER_HOME = PROJECT_ROOT / "data" / "dagster_home"
LAUNCHED_BY = {"medflow/launched_by": "medflow-load"}
UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED,
              dg.DagsterRunStatus.CANCELING]


def register_landed_files(instance: dg.DagsterInstance, settings: Settings | None = None,
                          invalid: dict[str, str] | None = None) -> list[str]:
    """Add a partition for each landed file not registered yet; returns all partition keys, in order.
    `invalid` receives {payer: why} for contracts that are invalid: their payers' files wait, as the landing
    sensor holds them (one registered before is held by the run's landing step, its loaded rows untouched)."""
    settings = settings or load_settings()
    zone = landing_resource(settings).process_config_and_initialize().zone()
    invalid = {} if invalid is None else invalid
    keys = [o.source_file for o in zone.scan(load_contracts(settings.contracts_path, invalid)).objects
            if o.payer not in invalid]
    known = instance.get_dynamic_partitions(landing_file_partitions.name)
    new = [k for k in keys if k not in set(known)]
    if new:
        instance.add_dynamic_partitions(landing_file_partitions.name, new)
    return instance.get_dynamic_partitions(landing_file_partitions.name)


def landing_job() -> dg.JobDefinition:
    """The job over the whole graph (what the sensors launch); module level, so Dagster can reconstruct it."""
    from medflow_assets.definitions import defs
    from medflow_assets.landing.sensors import LANDING_JOB

    return defs.resolve_job_def(LANDING_JOB)


def fail_abandoned_runs(instance: dg.DagsterInstance) -> list[str]:
    """Runs an earlier medflow-load started and never finished (its process killed: out of memory, kill -9)
    stay STARTED and keep their `duckdb_warehouse` pool slot, so every later run would wait for it for ever.
    Called while this process holds the instance's medflow-load lock (no other medflow-load runs): each is
    marked failed, with why, and its slots are freed. Returns their run ids."""
    abandoned = instance.get_runs(dg.RunsFilter(statuses=UNFINISHED, tags=LAUNCHED_BY))
    for run in abandoned:
        instance.report_run_failed(run, "the medflow-load process running it ended without finishing (killed?); "
                                        "marked failed by the next medflow-load, which frees its pool slot")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
    return [run.run_id for run in abandoned]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="medflow-load", description=__doc__.split("\n\n")[0])
    ap.parse_args(sys.argv[1:] if argv is None else argv)
    if not os.environ.get("DAGSTER_HOME"):
        # the project's instance, as .ci/materialize and the README's dagster commands use (runs show in the UI)
        os.environ["DAGSTER_HOME"] = str(DEFAULT_DAGSTER_HOME)
        DEFAULT_DAGSTER_HOME.mkdir(parents=True, exist_ok=True)
        print(f"medflow-load: DAGSTER_HOME not set; using {DEFAULT_DAGSTER_HOME}", flush=True)
    try:
        load_settings()  # the definitions read them too: a bad one is one line here, not a traceback there
    except SettingsError as exc:
        print(f"medflow-load: {exc}", file=sys.stderr, flush=True)
        return 2
    landing_job()  # import the definitions (Dagster, dbt, Pandera: ~2 s; they end with gc.freeze())
    # one medflow-load at a time per instance: the lock tells a run of a killed one from a running one
    lock = open(Path(os.environ["DAGSTER_HOME"]) / ".medflow-load.lock", "a")  # noqa: SIM115 -- held to the end
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("medflow-load: another medflow-load runs on this Dagster instance; waiting for it to end",
              file=sys.stderr, flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    with dg.DagsterInstance.get() as instance:
        for run_id in fail_abandoned_runs(instance):
            print(f"medflow-load: run {run_id} of an earlier medflow-load never finished (its process was killed?); "
                  "marked failed and its pool slot freed", file=sys.stderr, flush=True)
        invalid: dict[str, str] = {}
        try:
            keys = register_landed_files(instance, invalid=invalid)
        except (SettingsError, ContractError, LandingReadError) as exc:
            # boto's own words when no credentials are set at all count too here (landing retries those)
            refused = any(code in str(exc) for code in (*CREDENTIAL_ERRORS, "Unable to locate credentials"))
            hint = f" -- {CREDENTIALS_HINT}" if refused else ""
            print(f"medflow-load: {exc}{hint}", file=sys.stderr, flush=True)
            return 2
        for payer, why in invalid.items():
            print(f"medflow-load: {why} -- the files of {payer}/ wait until it is fixed (held, not read); the other "
                  "payers' files load", file=sys.stderr, flush=True)
        if not keys:
            print("medflow-load: no landed files found; nothing to materialize", file=sys.stderr)
            return 1
        print(f"medflow-load: {len(keys)} landed files, one run for partitions {keys[0]}...{keys[-1]}", flush=True)
        result = dg.execute_job(dg.reconstructable(landing_job), instance=instance, raise_on_error=False,
                                tags={"dagster/asset_partition_range_start": keys[0],
                                      "dagster/asset_partition_range_end": keys[-1], **LAUNCHED_BY})
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
    if not result.success:
        print(f"medflow-load: run {result.run_id} failed at steps {failed}; see the log above or the run in the "
              "Dagster UI", file=sys.stderr)
        return 1
    print(f"medflow-load: run {result.run_id} succeeded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
