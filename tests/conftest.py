import pytest

from tests.support.server import InProcessServer, fast_config


@pytest.fixture
async def make_server(tmp_path):
    """Start in-process servers with config overrides (section__key=value); stopped at teardown."""
    started: list[InProcessServer] = []

    async def start(**overrides) -> InProcessServer:
        srv = await InProcessServer(fast_config(tmp_path, **overrides)).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.stop()


@pytest.fixture
async def server(make_server):
    return await make_server()
