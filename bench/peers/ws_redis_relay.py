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

    python -m bench.peers.ws_redis_relay --port 0 --redis redis://127.0.0.1:6379
"""
from __future__ import annotations

import argparse
import asyncio
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


async def run(host: str, port: int, redis_url: str) -> None:
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=REDIS_CONNECTIONS)
    node = RelayNode(Redis(connection_pool=pool))
    await node.pubsub.subscribe(KEEPALIVE_CHANNEL)
    fan_in = asyncio.create_task(node.fan_in())
    async with serve(node.handler, host, port) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"ws+redis relay listening on ws://{host}:{bound}/", flush=True)
        await asyncio.gather(server.serve_forever(), fan_in)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    args = parser.parse_args()
    import uvloop
    try:
        uvloop.run(run(args.host, args.port, args.redis))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
