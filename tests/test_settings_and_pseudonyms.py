import hashlib
import hmac
import logging

import duckdb
import pytest

from medflow_assets.settings import DEV_PII_KEY, SettingsError, announce_key, load_settings
from medflow_assets.transform.connection_plugin import hmac_macro_sql


def test_defaults_need_no_environment():
    s = load_settings({})
    assert s.target == "dev" and s.uses_dev_key
    assert s.warehouse_path.name == "medflow.duckdb" and s.landing_path.name == "landing"


def test_prod_without_key_stops_with_clear_message():
    with pytest.raises(SettingsError) as err:
        load_settings({"MEDFLOW_TARGET": "prod"})
    assert "MEDFLOW_PII_KEY is not set" in str(err.value) and "nothing was read or written" in str(err.value)


def test_prod_refuses_weak_or_development_key():
    with pytest.raises(SettingsError, match="too weak"):
        load_settings({"MEDFLOW_TARGET": "prod", "MEDFLOW_PII_KEY": "short"})
    with pytest.raises(SettingsError, match="too weak"):
        load_settings({"MEDFLOW_TARGET": "prod", "MEDFLOW_PII_KEY": DEV_PII_KEY})
    ok = load_settings({"MEDFLOW_TARGET": "prod", "MEDFLOW_PII_KEY": "x" * 40})
    assert not ok.uses_dev_key


def test_unknown_target_is_refused():
    with pytest.raises(SettingsError, match="MEDFLOW_TARGET='staging'"):
        load_settings({"MEDFLOW_TARGET": "staging"})


def test_dev_key_use_is_logged_without_the_key(caplog):
    with caplog.at_level(logging.WARNING):
        announce_key(load_settings({}))
    assert "DEVELOPMENT pseudonymization key" in caplog.text
    assert DEV_PII_KEY not in caplog.text


@pytest.mark.parametrize("key", ["k", DEV_PII_KEY, "z" * 100])
def test_sql_hmac_equals_python_hmac(key):
    con = duckdb.connect()
    con.execute(hmac_macro_sql(key))
    for msg in ["member:NWM000000001", "phone:5551234567", ""]:
        got = con.execute("SELECT medflow_pii_hmac(?)", [msg]).fetchone()[0]
        assert got == hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest()
