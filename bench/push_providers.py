"""The local APNs and FCM servers of `python -m bench push`, in a process of their own so that
their cost (pure-Python HTTP/2 and a JWT check per request) is not the bench client's.

    python -m bench.push_providers DIR

Prints one JSON line: the gateway's [push] settings for these servers, as environment
variables. Then answers each line on stdin: `received` -> one JSON line [[monotonic time, chat
id], ...] of every push accepted so far (CLOCK_MONOTONIC is one clock for every process of the
machine); `stop` (or end of input) stops the servers and exits.
"""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path


async def main(directory: Path) -> None:
    from tests.support.push_servers import PushServers  # the tests' provider servers
    servers = await PushServers(directory).start()
    print(json.dumps(servers.environment(interval=10.0)), flush=True)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line != "received":
                return
            arrivals = [[p.at, p.payload["sb"]["chat_id"]] for p in servers.apns.received]
            arrivals += [[p.at, p.message["data"]["chat_id"]] for p in servers.fcm.received]
            print(json.dumps(arrivals), flush=True)
    finally:
        await servers.stop()


if __name__ == "__main__":
    import uvloop
    uvloop.run(main(Path(sys.argv[1])))
