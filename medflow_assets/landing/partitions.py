"""Landed files are partitions: dynamic partition keys "<payer>/<file name>"."""

import dagster as dg

landing_file_partitions = dg.DynamicPartitionsDefinition(name="landing_file")

# Bronze and silver process a set of files in ONE run (first load, backfills), not a run per file.
single_run = dg.BackfillPolicy.single_run()

# Transient causes are retried inside the step, with backoff: landing reads (listing, checksums, DuckDB reading
# s3://) and a warehouse file another process holds past open_warehouse's 60 s wait. Five attempts, 1, 2, 4
# and 8 s apart (+-jitter). Dagster's run retries (data/dagster_home/dagster.yaml) are only for runs whose
# process died: a step that failed otherwise would fail the same way again.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=4, delay=1.0, backoff=dg.Backoff.EXPONENTIAL,
                                 jitter=dg.Jitter.PLUS_MINUS)
