"""`python -m switchboard.tools.devcluster`: a cluster brought up on a planned port range, with
the Redis bus on ports of its own, forms and answers, and `down` stops exactly what `up`
started."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

import pytest

from switchboard.tools.devcluster import DevClusterError, PortRange
from tests.support.services import unavailable


def _free_block(size: int) -> int:
    """The first port of `size` consecutive ports nothing listens on now (a guess: up skips
    ports taken meanwhile)."""
    for low in range(21000, 60000, size):
        if all(_free(port) for port in range(low, low + size)):
            return low
    raise AssertionError("no free block of ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_port_ranges_are_checked():
    assert (PortRange.parse("7000-7099").low, PortRange.parse("7000-7099").high) == (7000, 7099)
    for bad in ("7000", "7099-7000", "0-10", "a-b", "7000-70000"):
        with pytest.raises(ValueError):
            PortRange.parse(bad)
    with pytest.raises(DevClusterError):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        try:
            port = taken.getsockname()[1]
            PortRange(port, port).take()
        finally:
            taken.close()


def test_up_on_a_port_range_with_bus_ports_of_its_own_and_down(tmp_path):
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed (apt-get install redis-server)")
    low = _free_block(40)
    ports, bus = f"{low}-{low + 19}", f"{low + 20}-{low + 39}"
    tool = [sys.executable, "-m", "switchboard.tools.devcluster"]
    up = subprocess.run([*tool, "up", "--redis", "3", "--gateways", "1", "--dir", str(tmp_path),
                         "--ports", ports, "--bus-ports", bus],
                        capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((tmp_path / "devcluster.json").read_text())
        redis_ports = [node["port"] for node in state["redis"]["nodes"]]
        gateway = state["gateways"][0]
        used = [*redis_ports, gateway["port"],
                int(gateway["extra"]["metrics"].rsplit(":", 1)[1].split("/")[0]),
                int(gateway["extra"]["mesh"].rsplit(":", 1)[1])]
        assert all(low <= port < low + 20 for port in used), used
        listing = subprocess.run(["redis-cli", "-p", str(redis_ports[0]), "CLUSTER", "NODES"],
                                 capture_output=True, text=True, timeout=10).stdout
        bus_ports = {int(line.split()[1].split("@")[1].split(",")[0])
                     for line in listing.splitlines()}
        assert len(bus_ports) == 3 and all(low + 20 <= p < low + 40 for p in bus_ports)
        assert "gw0" in up.stdout and f"ws://127.0.0.1:{gateway['port']}/v1/ws" in up.stdout
    finally:
        down = subprocess.run([*tool, "down", "--dir", str(tmp_path)], capture_output=True,
                              text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert down.stdout.count("stopped") == 4
