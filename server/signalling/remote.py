"""On the host: a client whose WebSocket is on another node (its front), fed through the relay
(server/routing/relay.py). Everything but the I/O is the ordinary ``Connection``: the same dispatch,
permissions, replies and events."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from server.host.node import Node
from server.routing.relay import Relay
from server.signalling.connection import Connection
from server.wire import Outgoing


class RemoteConnection(Connection):
    """On the host: a client whose WebSocket is on another node."""

    front: str

    def __init__(self, node: Node, relay: Relay, front: str, conn_id: str) -> None:
        super().__init__(None, node)
        self.relay = relay
        self.front = front
        self.conn_id = conn_id
        self.remote = True
        self._frames: asyncio.Queue[str | bytes | None] = asyncio.Queue()

    def send(self, message: msgspec.Struct | Outgoing) -> None:
        if not self._closing:
            item = message if isinstance(message, Outgoing) else Outgoing(message)
            self.relay.to_front(self.front, self.conn_id, item)

    def close_after_flush(self, code: int, reason: str) -> None:
        if not self._closing:
            self.relay.enqueue(self.front, ["x", self.conn_id, code, reason])
            self.drop()

    async def close(self, code: int, reason: str) -> None:
        self.close_after_flush(code, reason)

    def feed(self, frame: str | bytes) -> None:
        self._frames.put_nowait(frame)

    def drop(self) -> None:
        """Stop, without a word to the front (it is gone, or was told already)."""
        self._closing = True
        self._frames.put_nowait(None)

    async def run(self) -> None:
        try:
            while (frame := await self._frames.get()) is not None:
                await self._on_frame(frame)
        finally:
            self.relay.remotes.pop(self.conn_id, None)
            await self._leave()
            await self._tasks.cancel_all()


def remote_factory(node: Node) -> Any:
    """The relay's ``open_remote``: a new relayed client of a stage hosted here."""

    def open_remote(front: str, conn_id: str) -> RemoteConnection:
        relay = node.cluster.relay
        assert relay is not None  # the relay calls this, so it exists
        return RemoteConnection(node, relay, front, conn_id)

    return open_remote
