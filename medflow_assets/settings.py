"""Typed settings from MEDFLOW_* environment variables, with embedded defaults.

Every path, key and target the project uses comes from here; nothing else reads the environment.
The defaults run the whole graph on the committed sample with no server and no variable set.
"""

from __future__ import annotations

import logging
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("medflow.settings")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
CONTRACTS_DIR = Path(__file__).resolve().parent / "landing" / "contracts"
# The on-disk format a new warehouse file is created with (dbt's profile names the same one). DuckDB's
# default keeps files readable by 1.0; the 1.5 format writes text columns ~30% faster (bronze at 10M:
# 45 s -> 31 s; BENCHMARKS.md). A file keeps the format it was created with.
WAREHOUSE_STORAGE_VERSION = "v1.5.0"

# Development-only pseudonymization key. It is public (it is in this file), so pseudonyms made with it
# protect nothing: it is accepted on the dev target only, and every use is logged as such.
DEV_PII_KEY = "medflow-development-key-not-for-real-data"

TARGETS = ("dev", "prod")


@contextmanager
def scoped_environ(values: dict[str, str | None]):
    """Set (or, with None, unset) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message says which variable to set."""


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 landing zone is and how to reach it (credentials never logged)."""

    bucket: str
    prefix: str
    endpoint_url: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None = field(repr=False, default=None)

    @property
    def endpoint_host(self) -> str | None:
        """host:port for DuckDB's ENDPOINT (no scheme)."""
        if not self.endpoint_url:
            return None
        return self.endpoint_url.split("://", 1)[-1].rstrip("/")

    @property
    def use_ssl(self) -> bool:
        return not (self.endpoint_url or "https://").startswith("http://")


@dataclass(frozen=True)
class Settings:
    target: str
    landing_path: Path
    warehouse_path: Path
    pii_key: str
    contracts_path: Path
    memory_limit: str
    threads: int
    checks_memory_limit: str = "512MB"
    landing_url: str = ""          # "" = the local folder landing_path; "s3://bucket/prefix" = S3
    s3: S3Settings | None = None
    landing_settle_seconds: float = 60.0  # a local file this recently modified may still be being written

    @property
    def landing_is_s3(self) -> bool:
        return self.s3 is not None

    @property
    def uses_dev_key(self) -> bool:
        return self.pii_key == DEV_PII_KEY

    def dbt_env(self) -> dict[str, str]:
        """Environment handed to the dbt subprocess (profiles.yml reads these)."""
        return {
            "MEDFLOW_TARGET": self.target,
            "MEDFLOW_WAREHOUSE_PATH": str(self.warehouse_path),
            "MEDFLOW_PII_KEY": self.pii_key,
            "MEDFLOW_DUCKDB_MEMORY_LIMIT": self.memory_limit,
            "MEDFLOW_DUCKDB_THREADS": str(self.threads),
        }


def _path(env: dict[str, str], name: str, default: Path) -> Path:
    raw = env.get(name)
    p = Path(raw) if raw else default
    return p if p.is_absolute() else (PROJECT_ROOT / p).resolve()


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read settings; raise SettingsError (before any data is touched) when they are unusable."""
    env = dict(os.environ if env is None else env)
    target = env.get("MEDFLOW_TARGET", "dev").strip() or "dev"
    if target not in TARGETS:
        raise SettingsError(f"MEDFLOW_TARGET={target!r} is not one of {', '.join(TARGETS)}.")
    key = env.get("MEDFLOW_PII_KEY", "")
    if not key:
        if target != "dev":
            raise SettingsError(
                f"MEDFLOW_PII_KEY is not set and target is {target!r}: the development pseudonymization "
                "key may only be used on the dev target. Set MEDFLOW_PII_KEY to a secret of at least "
                "32 characters; nothing was read or written."
            )
        key = DEV_PII_KEY
    elif key != key.strip():
        raise SettingsError(
            "MEDFLOW_PII_KEY begins or ends with white space (a line break copied with it?): every pseudonym "
            "would depend on it. Set the key without it; nothing was read or written."
        )
    elif target != "dev" and (len(key) < 32 or key == DEV_PII_KEY):
        raise SettingsError(
            f"MEDFLOW_PII_KEY is too weak for target {target!r}: use a secret of at least 32 characters "
            "that is not the development key; nothing was read or written."
        )
    landing_url = env.get("MEDFLOW_LANDING_URL", "").strip()
    s3 = None
    if landing_url:
        if not landing_url.startswith("s3://"):
            raise SettingsError(f"MEDFLOW_LANDING_URL={landing_url!r} must look like s3://bucket/prefix "
                                "(leave it unset for the local folder MEDFLOW_LANDING_PATH).")
        bucket, _, prefix = landing_url[5:].partition("/")
        if not bucket:
            raise SettingsError(f"MEDFLOW_LANDING_URL={landing_url!r} names no bucket.")
        endpoint = env.get("MEDFLOW_S3_ENDPOINT_URL", "").strip() or None
        if endpoint and not endpoint.startswith(("http://", "https://")):
            raise SettingsError(f"MEDFLOW_S3_ENDPOINT_URL={endpoint!r} must start with http:// or https://.")
        s3 = S3Settings(
            bucket=bucket, prefix=prefix.strip("/"),
            endpoint_url=endpoint,
            region=env.get("MEDFLOW_S3_REGION", "us-east-1"),
            access_key_id=env.get("MEDFLOW_S3_ACCESS_KEY_ID") or env.get("AWS_ACCESS_KEY_ID"),
            secret_access_key=env.get("MEDFLOW_S3_SECRET_ACCESS_KEY") or env.get("AWS_SECRET_ACCESS_KEY"),
        )
    return Settings(
        target=target,
        landing_path=_path(env, "MEDFLOW_LANDING_PATH", PROJECT_ROOT / "data" / "landing"),
        warehouse_path=_path(env, "MEDFLOW_WAREHOUSE_PATH", PROJECT_ROOT / "data" / "warehouse" / "medflow.duckdb"),
        pii_key=key,
        contracts_path=_path(env, "MEDFLOW_CONTRACTS_PATH", CONTRACTS_DIR),
        memory_limit=_memory(env, "MEDFLOW_DUCKDB_MEMORY_LIMIT", "800MB"),
        checks_memory_limit=_memory(env, "MEDFLOW_CHECKS_MEMORY_LIMIT", "512MB"),
        threads=_threads(env, "MEDFLOW_DUCKDB_THREADS", os.cpu_count() or 2),
        landing_url=landing_url,
        s3=s3,
        landing_settle_seconds=_seconds(env, "MEDFLOW_LANDING_SETTLE_SECONDS", 60.0),
    )


# DuckDB's memory_limit: a number and a unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; any case)
_MEMORY = re.compile(r"\s*[0-9]+(\.[0-9]+)?\s*([KMGT]i?)?B\s*", re.IGNORECASE)


def _memory(env: dict[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    if not _MEMORY.fullmatch(raw):
        raise SettingsError(f"{name}={raw!r} is not a memory size DuckDB reads (e.g. 800MB, 2GB, 1.5GiB).")
    return raw


def _threads(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number of threads.") from None
    if value < 1:
        raise SettingsError(f"{name}={raw!r} must be 1 or more.")
    return value


def _seconds(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number of seconds.") from None
    if not math.isfinite(value) or value < 0:
        raise SettingsError(f"{name}={raw!r} must be a finite number of seconds, 0 or more.")
    return value


def announce_key(settings: Settings, logger: logging.Logger | None = None) -> None:
    """Say in the logs which kind of key pseudonymizes this run (never the key itself)."""
    logger = logger or log
    if settings.uses_dev_key:
        logger.warning(
            "Using the built-in DEVELOPMENT pseudonymization key (target=dev). Pseudonyms made with it are "
            "not protective; set MEDFLOW_PII_KEY for real data."
        )
    else:
        logger.info("Pseudonymization key taken from MEDFLOW_PII_KEY (target=%s).", settings.target)
