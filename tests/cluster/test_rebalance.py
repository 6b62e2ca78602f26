"""A gateway that restarts gets its share of devices back (docs/cluster.md, "Rebalancing"):
three real gateway processes, 36 SDK devices, one gateway killed (its devices flee to the
others) and started again; the others ask part of their excess to reconnect, round after
round, until no gateway is far below the mean; devices keep working throughout."""
from __future__ import annotations

from tests.support.cluster import GatewayCluster, device_client
from tests.support.clients import receive
from tests.support.raw import OPEN_CLIENTS
from tests.support.waiting import wait_for

DEVICES = 36


async def connections(cluster: GatewayCluster) -> list[int]:
    return [int((await cluster.metrics(i)).get('switchboard_connections{state="open"}', -1))
            for i in range(len(cluster.gateways))]


async def test_a_restarted_gateway_gets_its_share_back(tmp_path, redis_cluster):
    cluster = GatewayCluster(tmp_path, redis_cluster.addresses, config={
        "cluster.rebalance_interval": 0.5, "cluster.rebalance_rate": 40.0})
    await cluster.start()
    try:
        clients = [await device_client(cluster, f"u{i}", "phone", i % 3)
                   for i in range(DEVICES)]
        # Connected round robin, so even; a rebalancing round during the connects may still
        # move a few (the loads it compares lag the connects on a busy machine).
        await wait_for(lambda: _even(cluster), timeout=15, message="36 devices, spread evenly")
        cluster.kill(2)
        await wait_for(lambda: _sum_is(cluster, DEVICES, among=2), timeout=20,
                       message="the killed gateway's devices on the others")
        await cluster.restart(2)
        loads = await wait_for(lambda: _even(cluster), timeout=30,
                               message="the restarted gateway holding its share")
        assert sum(loads) == DEVICES and min(loads) >= 10, loads
        moved = await _moved(cluster)
        assert 8 <= moved <= 2 * DEVICES, moved  # no herd: a few rounds of half the excess
        await wait_for(lambda: all(c.connected for c in clients), timeout=15)
        chat = (await clients[0].create_direct("u2")).chat_id
        await clients[0].send(chat, b"after the rebalance")
        assert [m.body for m in await receive(clients[2], 1)] == [b"after the rebalance"]
    finally:
        while OPEN_CLIENTS:
            await OPEN_CLIENTS.pop().close()
        cluster.stop()


async def _moved(cluster: GatewayCluster) -> int:
    return sum([(await cluster.metrics(i)).get("switchboard_cluster_rebalanced_devices_total", 0)
                for i in range(len(cluster.gateways))])


async def _sum_is(cluster: GatewayCluster, total: int, among: int) -> bool:
    return sum((await connections(cluster))[:among]) == total


async def _even(cluster: GatewayCluster) -> list[int] | None:
    loads = await connections(cluster)
    return loads if sum(loads) == DEVICES and min(loads) >= 10 else None
