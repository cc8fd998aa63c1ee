"""`medflow-load`: register every landed file as a partition, then materialize the whole graph for all of
them in ONE run (single-run backfill) with `dagster asset materialize --select '*' --partition-range`.

Extra arguments go to `dagster asset materialize`."""

import os
import sys

import dagster as dg

from medflow_assets.landing.contracts import load_contracts
from medflow_assets.landing.partitions import landing_file_partitions
from medflow_assets.landing.resource import landing_resource
from medflow_assets.settings import Settings, load_settings


def register_landed_files(instance: dg.DagsterInstance, settings: Settings | None = None) -> list[str]:
    """Add a partition for each landed file not registered yet; returns all partition keys, in order."""
    settings = settings or load_settings()
    zone = landing_resource(settings).process_config_and_initialize().zone()
    keys = [o.source_file for o in zone.list_objects(load_contracts(settings.contracts_path))]
    known = instance.get_dynamic_partitions(landing_file_partitions.name)
    new = [k for k in keys if k not in set(known)]
    if new:
        instance.add_dynamic_partitions(landing_file_partitions.name, new)
    return instance.get_dynamic_partitions(landing_file_partitions.name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    with dg.DagsterInstance.get() as instance:
        keys = register_landed_files(instance)
    if not keys:
        print("medflow-load: no landed files found; nothing to materialize", file=sys.stderr)
        return 1
    cmd = [os.path.join(os.path.dirname(sys.executable), "dagster"), "asset", "materialize", "--select", "*",
           "--partition-range", f"{keys[0]}...{keys[-1]}", "-m", "medflow_assets.definitions", *argv]
    print(f"medflow-load: {len(keys)} landed files -> {' '.join(cmd[1:])}", flush=True)
    os.execv(cmd[0], cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
