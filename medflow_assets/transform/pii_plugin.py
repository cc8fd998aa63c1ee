"""dbt-duckdb plugin: registers `medflow_pii_hmac(text)` (keyed HMAC-SHA256, hex) on every connection.

The key reaches DuckDB only as a temporary macro of the dbt session: it is never written into compiled
SQL, dbt's target/ folder, the warehouse file or any log. HMAC is built from DuckDB's own sha256:
HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)) with K padded to the 64-byte block (RFC 2104).
"""

from __future__ import annotations

import hashlib

from dbt.adapters.duckdb.plugins import BasePlugin

from medflow_assets.settings import announce_key, load_settings


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


class Plugin(BasePlugin):
    def initialize(self, plugin_config):
        settings = load_settings()  # raises before any data is touched when the key is unusable
        announce_key(settings)
        self._sql = hmac_macro_sql(settings.pii_key)

    def configure_connection(self, conn):
        conn.execute(self._sql)

    def configure_cursor(self, cursor):
        cursor.execute(self._sql)
