"""What a test does when a service it needs (redis-server, a JDK for Cassandra) is missing.

Locally the test is skipped, saying what to install. Where SWITCHBOARD_REQUIRE_SERVICES=1 (CI:
.ci/run installs every service first) it fails instead, so a broken install cannot turn the
suite green by skipping."""
from __future__ import annotations

import os

import pytest

REQUIRE_ENV = "SWITCHBOARD_REQUIRE_SERVICES"


def unavailable(reason: str) -> None:
    """Skip the test (locally) or fail it (SWITCHBOARD_REQUIRE_SERVICES=1); never returns."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason}, and {REQUIRE_ENV}=1 requires it", pytrace=False)
    pytest.skip(reason)
