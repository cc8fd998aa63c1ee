"""Landed files are partitions: dynamic partition keys "<payer>/<file name>"."""

import dagster as dg

landing_file_partitions = dg.DynamicPartitionsDefinition(name="landing_file")

# Bronze and silver process a set of files in ONE run (first load, backfills), not a run per file.
single_run = dg.BackfillPolicy.single_run()

# Landing reads (listing, checksums, DuckDB reading s3://) back off and retry before failing.
LANDING_RETRY = dg.RetryPolicy(max_retries=3, delay=0.5, backoff=dg.Backoff.EXPONENTIAL,
                               jitter=dg.Jitter.PLUS_MINUS)
