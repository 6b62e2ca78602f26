from __future__ import annotations

import pytest

from tests.support.push_servers import PushServers


@pytest.fixture
async def push_servers(tmp_path):
    servers = await PushServers(tmp_path).start()
    yield servers
    await servers.stop()
