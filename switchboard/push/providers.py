"""The providers that the `[push]` configuration sets up, checked before the gateway listens:
a key file that cannot be read or used is a start failure naming its key."""
from __future__ import annotations

import logging
import ssl
from pathlib import Path

import jwt

from switchboard.config import ConfigError, PushConfig

from .apns import ApnsClient, ApnsSigner
from .delivery import RetryPolicy
from .fcm import FcmClient, ServiceAccount
from .service import Provider

log = logging.getLogger(__name__)


def make_providers(push: PushConfig) -> list[Provider]:
    """The clients for the providers set up in `push` (none while push is off). A provider half
    set up is left off with a warning (`--production` refuses it: config.py)."""
    if not push.enabled:
        return []
    verify: ssl.SSLContext | bool = True
    if push.ca_file:
        try:
            verify = ssl.create_default_context(cafile=push.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"push.ca_file: cannot load {push.ca_file}: {exc}") from None
    policy = RetryPolicy(attempts=push.attempts)
    common = {"timeout": push.timeout, "max_concurrent": push.max_concurrent,
              "policy": policy, "verify": verify}
    providers: list[Provider] = []
    if all(push.apns_settings()):
        signer = ApnsSigner(_apns_key(push.apns_key_file), push.apns_key_id, push.apns_team_id)
        providers.append(ApnsClient(signer, url=push.apns_url, sandbox_url=push.apns_sandbox_url,
                                    default_topic=push.apns_topic, **common))
    elif any(push.apns_settings()):
        log.warning("APNs is off: set push.apns_key_file, push.apns_key_id and "
                    "push.apns_team_id together")
    if push.fcm_credentials_file:
        account = _service_account(push.fcm_credentials_file)
        providers.append(FcmClient(account, url=push.fcm_url, token_url=push.fcm_token_url,
                                   project_id=push.fcm_project_id, **common))
    if not providers:
        log.warning("push.enabled, but no provider is set up: no pushes are sent")
    return providers


def _read(path: str, key: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"push.{key}: cannot read {path}: {exc.strerror or exc}") from None


def _apns_key(path: str) -> bytes:
    key = _read(path, "apns_key_file")
    try:
        jwt.encode({"iss": "check"}, key, algorithm="ES256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(f"push.apns_key_file: {path} is not an ES256 (P-256) private key: "
                          f"{exc}") from None
    return key


def _service_account(path: str) -> ServiceAccount:
    try:
        account = ServiceAccount.from_json(_read(path, "fcm_credentials_file"))
        jwt.encode({"iss": "check"}, account.private_key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(f"push.fcm_credentials_file: {path} is not a service account key: "
                          f"{exc}") from None
    return account
