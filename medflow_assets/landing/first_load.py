"""`medflow-load`: register every landed file as a partition, then materialize the whole graph for all of
them in ONE run (single-run backfill), in this process.

The run is the one `dagster asset materialize --select '*' --partition-range <first>...<last> -m
medflow_assets.definitions` would start (the same job, tags and instance, so it shows in the Dagster UI), without
a second Python start-up that imports Dagster, dbt and the definitions again (~4 s, BENCHMARKS.md)."""

import argparse
import os
import sys

import dagster as dg

from medflow_assets.landing.contracts import load_contracts
from medflow_assets.landing.partitions import landing_file_partitions
from medflow_assets.landing.resource import landing_resource
from medflow_assets.settings import PROJECT_ROOT, Settings, load_settings

DEFAULT_DAGSTER_HOME = PROJECT_ROOT / "data" / "dagster_home"


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="medflow-load", description=__doc__.split("\n\n")[0])
    ap.parse_args(sys.argv[1:] if argv is None else argv)
    if not os.environ.get("DAGSTER_HOME"):
        # the project's instance, as .ci/materialize and the README's dagster commands use (runs show in the UI)
        os.environ["DAGSTER_HOME"] = str(DEFAULT_DAGSTER_HOME)
        DEFAULT_DAGSTER_HOME.mkdir(parents=True, exist_ok=True)
        print(f"medflow-load: DAGSTER_HOME not set; using {DEFAULT_DAGSTER_HOME}", flush=True)
    landing_job()  # import the definitions (Dagster, dbt, Pandera: ~2 s; they end with gc.freeze())
    with dg.DagsterInstance.get() as instance:
        invalid: dict[str, str] = {}
        keys = register_landed_files(instance, invalid=invalid)
        for payer, why in invalid.items():
            print(f"medflow-load: {why} -- the files of {payer}/ wait until it is fixed (held, not read); the other "
                  "payers' files load", file=sys.stderr, flush=True)
        if not keys:
            print("medflow-load: no landed files found; nothing to materialize", file=sys.stderr)
            return 1
        print(f"medflow-load: {len(keys)} landed files, one run for partitions {keys[0]}...{keys[-1]}", flush=True)
        result = dg.execute_job(dg.reconstructable(landing_job), instance=instance, raise_on_error=False,
                                tags={"dagster/asset_partition_range_start": keys[0],
                                      "dagster/asset_partition_range_end": keys[-1]})
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
    if not result.success:
        print(f"medflow-load: run {result.run_id} failed at steps {failed}; see the log above or the run in the "
              "Dagster UI", file=sys.stderr)
        return 1
    print(f"medflow-load: run {result.run_id} succeeded", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
