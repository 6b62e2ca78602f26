"""An in-repo TCP fault proxy (no netem or nft needed): forwards a port to another until
told to black-hole, which stops both directions without closing anything, as a network
partition looks to the two ends; heal() lets connections through again. reset() drops every
connection with a RST to both ends, as a middlebox or a NIC reset does while both processes
live; new connections pass as before."""
from __future__ import annotations

import asyncio


class FaultProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self.partitioned = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> "FaultProxy":
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def partition(self) -> None:
        """From now on nothing passes, in either direction, on any connection."""
        self.partitioned = True

    def heal(self) -> None:
        """Connections made from now on pass; the black-holed ones are closed (their ends have
        usually timed them out already, as after a real partition)."""
        self.partitioned = False
        for writer in list(self._writers):
            writer.close()

    def reset(self) -> int:
        """Abort every connection through the proxy; returns how many there were."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        return len(writers) // 2

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        born_partitioned = self.partitioned
        for pair in ((reader, up_writer), (up_reader, writer)):
            self._writers.add(pair[1])
            task = asyncio.ensure_future(self._pipe(*pair, born_partitioned))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    born_partitioned: bool) -> None:
        try:
            while data := await reader.read(65536):
                if self.partitioned or born_partitioned:
                    continue  # black-holed: read and drop, like a lost packet
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
