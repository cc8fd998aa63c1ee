"""The landing-zone resource: a local folder, or S3 through dagster-aws when a bucket is configured."""

import os
from pathlib import Path

import dagster as dg

from medflow_assets.settings import Settings


class LandingResource(dg.ConfigurableResource):
    """The landing zone: a local folder, or S3 (dagster-aws S3Resource) when `bucket` is set.

    Credentials are EnvVar references (shown by name in the UI, never by value)."""

    local_path: str = ""
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def zone(self):
        from medflow_assets.landing.zone import LocalLanding, S3Landing

        if not self.bucket:
            return LocalLanding(Path(self.local_path))
        return S3Landing(self.s3_client(), self.bucket, self.prefix)

    def s3_client(self):
        from dagster_aws.s3 import S3Resource

        # Fail fast inside one attempt; Dagster's RetryPolicy does the backing off between attempts.
        return S3Resource(endpoint_url=self.endpoint_url, region_name=self.region,
                          aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
                          max_attempts=1).get_client()


def landing_resource(settings: Settings) -> LandingResource:
    if not settings.landing_is_s3:
        return LandingResource(local_path=str(settings.landing_path))
    s3 = settings.s3
    env = os.environ

    def secret(*names: str):
        name = next((n for n in names if env.get(n)), None)
        return dg.EnvVar(name) if name else None

    return LandingResource(
        bucket=s3.bucket, prefix=s3.prefix, endpoint_url=s3.endpoint_url, region=s3.region,
        access_key_id=secret("MEDFLOW_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        secret_access_key=secret("MEDFLOW_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"))
