"""The [push] section: off by default, --production refuses a provider half set up, and key
files that cannot be used stop the start naming their key."""
from __future__ import annotations

import pytest

from switchboard.config import ConfigError, load
from switchboard.push.apns import ApnsClient
from switchboard.push.fcm import FcmClient
from switchboard.push.providers import make_providers

SECRET = "s" * 40


def production(**push) -> dict:
    return {"server.production": True, "auth.secret": SECRET, "push.enabled": True,
            **{f"push.{k}": v for k, v in push.items()}}


def test_push_is_off_by_default():
    config = load(None, {}, environ={})
    assert not config.push.enabled and make_providers(config.push) == []


@pytest.mark.parametrize("push,message", [
    ({}, "push.enabled: set up APNs"),
    ({"apns_key_file": "/k.p8", "apns_key_id": "ABC"}, "set all three"),
    ({"apns_key_file": "/k.p8", "apns_key_id": "ABC", "apns_team_id": "T"}, "push.apns_topic"),
    ({"fcm_credentials_file": "/sa.json", "fcm_url": "http://fcm.local"}, "push.fcm_url: .* https"),
    ({"fcm_credentials_file": "/sa.json", "interval": 0.0}, "push.interval: value 0.0 out of range"),
])
def test_production_refuses_incomplete_provider_settings(push, message):
    with pytest.raises(ConfigError, match=message):
        load(None, production(**push), environ={})


def test_complete_settings_load_in_production_and_from_the_environment(push_servers):
    environ = push_servers.environment()
    config = load(None, {"server.production": True, "auth.secret": SECRET}, environ=environ)
    providers = make_providers(config.push)
    assert sorted(type(p).__name__ for p in providers) == ["ApnsClient", "FcmClient"]
    assert isinstance(providers[0], ApnsClient) and isinstance(providers[1], FcmClient)


def test_development_leaves_a_half_set_up_provider_off(push_servers, caplog):
    config = load(None, {"push.enabled": True, "push.apns_key_id": "ABC",
                         "push.fcm_credentials_file": str(push_servers.credentials_file)},
                  environ={})
    assert [type(p).__name__ for p in make_providers(config.push)] == ["FcmClient"]
    assert "APNs is off" in caplog.text


def test_unusable_key_files_name_their_key(tmp_path, push_servers):
    not_a_key = tmp_path / "key.p8"
    not_a_key.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    cases = [
        ({"push.apns_key_file": str(tmp_path / "missing.p8"), "push.apns_key_id": "K",
          "push.apns_team_id": "T"}, "push.apns_key_file: cannot read"),
        ({"push.apns_key_file": str(not_a_key), "push.apns_key_id": "K",
          "push.apns_team_id": "T"}, "push.apns_key_file: .* not an ES256"),
        ({"push.fcm_credentials_file": str(not_a_key)}, "push.fcm_credentials_file: .* not a "
                                                        "service account"),
        ({"push.fcm_credentials_file": str(push_servers.credentials_file),
          "push.ca_file": str(tmp_path / "none.pem")}, "push.ca_file: cannot load"),
    ]
    for values, message in cases:
        config = load(None, {"push.enabled": True, **values}, environ={})
        with pytest.raises(ConfigError, match=message):
            make_providers(config.push)
