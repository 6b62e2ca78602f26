"""Peer (2), what a Python team would build instead: `websockets` + JSON + Redis pub/sub.

The textbook horizontally scalable chat relay: any number of these processes behind a load
balancer, each websocket subscribed (through one shared PubSub connection per process) to its
user's channel, a message `{"to": user, "body": ...}` published to `user:<to>` and fanned out by
whichever process holds that user. It is written the way a competent team would, not as a straw
man: websockets' own asyncio server with its defaults, uvloop, orjson, redis-py's asyncio client
(with the hiredis parser, which redis-py picks up by itself when installed, and a blocking
connection pool so a burst of publishes queues instead of failing), one PubSub
connection per process rather than per socket, and `websockets.broadcast` for the fan-out so a
slow client never stalls the others. Like the picows relay it has no auth, no storage, no acks
and no ordering guarantee: it does strictly less than Switchboard.

`--workers N` runs N such processes on one port (SO_REUSEPORT: the kernel spreads the
connections), as its users would run one per core; two devices of a chat then often sit in
different processes, which is what the Redis hop is for.

    python -m bench.peers.ws_redis_relay --port 0 --redis redis://127.0.0.1:6379 --workers 2
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from urllib.parse import parse_qs, urlsplit

import orjson
import websockets
from redis.asyncio import BlockingConnectionPool, Redis
from websockets.asyncio.server import ServerConnection, serve

#: A channel nobody publishes to, subscribed at start: redis-py's PubSub.listen() returns as
#: soon as there is no subscription, and this one keeps the fan-in loop alive between users.
KEEPALIVE_CHANNEL = "relay:keepalive"
#: Redis connections per process. A blocking pool makes a publish wait for a free connection
#: under load (redis-py's default pool raises "Too many connections" instead).
REDIS_CONNECTIONS = 64
#: Sent once the socket's channel is subscribed: before it, messages to this user are lost.
READY = '{"ready":true}'


class RelayNode:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self.local: dict[str, set[ServerConnection]] = {}

    async def handler(self, ws: ServerConnection) -> None:
        user = parse_qs(urlsplit(ws.request.path).query).get("user", [""])[0]
        if not user:
            await ws.close(1008, "?user= required")
            return
        sockets = self.local.setdefault(user, set())
        if not sockets:
            await self.pubsub.subscribe(f"user:{user}")
        sockets.add(ws)
        try:
            await ws.send(READY)
            async for raw in ws:
                message = orjson.loads(raw)
                await self.redis.publish(f"user:{message['to']}",
                                         orjson.dumps({"from": user, "body": message["body"]}))
        finally:
            sockets.discard(ws)
            if not sockets:
                del self.local[user]
                await self.pubsub.unsubscribe(f"user:{user}")

    async def fan_in(self) -> None:
        async for message in self.pubsub.listen():
            user = message["channel"].decode()[len("user:"):]
            websockets.broadcast(self.local.get(user, ()), message["data"], text=True)


async def run(sock: socket.socket, redis_url: str, announce: bool) -> None:
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=REDIS_CONNECTIONS)
    node = RelayNode(Redis(connection_pool=pool))
    await node.pubsub.subscribe(KEEPALIVE_CHANNEL)
    fan_in = asyncio.create_task(node.fan_in())
    async with serve(node.handler, sock=sock) as server:
        if announce:
            host, bound = sock.getsockname()[:2]
            print(f"ws+redis relay listening on ws://{host}:{bound}/", flush=True)
        await asyncio.gather(server.serve_forever(), fan_in)


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one port (the first picks it when `port` is 0), made
    before any worker starts, so none is missing from the port's group when the first
    connection comes."""
    sockets: list[socket.socket] = []
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        port = sock.getsockname()[1]
        sockets.append(sock)
    return sockets


def stop_workers(workers: list[int]) -> None:
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    for pid in workers:
        os.waitpid(pid, 0)
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--workers", type=int, default=1, help="processes on the port")
    args = parser.parse_args()
    import uvloop
    sockets = listening_sockets(args.host, args.port, max(1, args.workers))
    index, workers = 0, []
    for worker in range(1, len(sockets)):  # forked before any event loop exists
        pid = os.fork()
        if pid == 0:
            index = worker
            break
        workers.append(pid)
    for i, sock in enumerate(sockets):
        if i != index:
            sock.close()
    if workers:  # the first process is the one the bench stops: it stops the others
        signal.signal(signal.SIGTERM, lambda *_: stop_workers(workers))
    try:
        uvloop.run(run(sockets[index], args.redis, announce=index == 0))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
