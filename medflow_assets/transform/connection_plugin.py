"""dbt-duckdb plugin, run on every connection dbt opens:

- registers `medflow_pii_hmac(text)` (keyed HMAC-SHA256, hex);
- when the landing zone is S3, loads httpfs (from the offline duckdb-extension wheel) and creates a
  temporary S3 secret, so `read_csv('s3://...')` works without credentials in profiles, SQL or logs.

The key reaches DuckDB only as a temporary macro of the dbt session: it is never written into compiled
SQL, dbt's target/ folder, the warehouse file or any log. HMAC is built from DuckDB's own sha256:
HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)) with K padded to the 64-byte block (RFC 2104).
"""

from __future__ import annotations

import hashlib

from dbt.adapters.duckdb.plugins import BasePlugin

from medflow_assets.settings import S3Settings, Settings, announce_key, load_settings


def hmac_pads(key: str) -> tuple[str, str]:
    """(ipad, opad) key blocks as hex for a text key."""
    k = key.encode()
    if len(k) > 64:
        k = hashlib.sha256(k).digest()
    k = k.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in k).hex(), bytes(b ^ 0x5C for b in k).hex()


def hmac_macro_sql(key: str) -> str:
    ipad, opad = hmac_pads(key)
    return (
        "CREATE OR REPLACE TEMP MACRO medflow_pii_hmac(m) AS "
        f"sha256(unhex('{opad}') || unhex(sha256(unhex('{ipad}') || encode(m))))"
    )


def s3_secret_sql(s3: S3Settings) -> str:
    def lit(v: str) -> str:
        return "'" + v.replace("'", "''") + "'"

    parts = ["TYPE s3", f"REGION {lit(s3.region)}"]
    if s3.access_key_id:
        parts += [f"KEY_ID {lit(s3.access_key_id)}", f"SECRET {lit(s3.secret_access_key or '')}"]
    if s3.endpoint_host:
        parts += [f"ENDPOINT {lit(s3.endpoint_host)}", "URL_STYLE 'path'", f"USE_SSL {str(s3.use_ssl).lower()}"]
    return f"CREATE OR REPLACE SECRET medflow_landing ({', '.join(parts)})"


def ensure_httpfs() -> None:
    """Copy the httpfs extension from its wheel into DuckDB's extension folder (idempotent, offline)."""
    from duckdb_extensions import import_extension

    import_extension("httpfs")


def configure(conn, settings: Settings) -> None:
    conn.execute(hmac_macro_sql(settings.pii_key))
    if settings.landing_is_s3:
        conn.execute("LOAD httpfs")
        conn.execute(s3_secret_sql(settings.s3))


class Plugin(BasePlugin):
    def initialize(self, plugin_config):
        self._settings = load_settings()  # raises before any data is touched when the key is unusable
        announce_key(self._settings)
        if self._settings.landing_is_s3:
            ensure_httpfs()

    def configure_connection(self, conn):
        configure(conn, self._settings)

    def configure_cursor(self, cursor):
        configure(cursor, self._settings)
