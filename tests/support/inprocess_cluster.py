"""Three gateways in one process forming a mesh (each an InProcessServer from `make_server`),
sharing one store: over static peers (cluster.peers, fan-out to every node), or with leases and
sessions in a real Redis Cluster (`redis_cluster`, a key prefix of their own). For the tests
that reach into every node's router; tests/support/cluster.py runs nodes as processes."""
from __future__ import annotations

import uuid

from switchboard.tools.devcluster import free_port
from tests.support.waiting import wait_for

NODES = ("a", "b", "c")


async def start_nodes(request, make_server, registry: str, **settings) -> list:
    """The three nodes ("static" or "redis" registry), fast cluster timers and `settings` each,
    once every pair is linked and every ring has them all."""
    if registry == "static":
        ports = {name: free_port() for name in NODES}
        peers = ",".join(f"{name}=127.0.0.1:{port}" for name, port in ports.items())
        membership = [{"cluster__mesh_port": ports[name], "cluster__peers": peers}
                      for name in NODES]
    else:
        redis = request.getfixturevalue("redis_cluster")
        prefix = f"t{uuid.uuid4().hex[:12]}"
        membership = [{"cluster__redis": ",".join(redis.addresses), "cluster__redis_prefix": prefix,
                       "cluster__lease_ttl": 2.0} for _ in NODES]
    servers = []
    for index, name in enumerate(NODES):
        servers.append(await make_server(
            server__node_id=index, cluster__enabled=True, cluster__node_name=name,
            cluster__heartbeat_interval=0.1, cluster__link_timeout=0.5, **membership[index],
            **settings))
    await wait_for(lambda: all(len(s.gateway.router.mesh.links) == 2 for s in servers),
                   message="every pair of nodes linked")
    await wait_for(lambda: all(len(s.gateway.router.ring.nodes) == 3 for s in servers),
                   message="every ring has three nodes")
    return servers
