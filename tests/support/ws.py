"""A bare signalling socket for tests: send anything, read frames as they come."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import msgpack


class Socket:
    """A bare signalling socket: send anything, read frames as they come."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._probes = 0

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            return json.loads(msg.data)
        if msg.type == aiohttp.WSMsgType.BINARY:
            return msgpack.unpackb(msg.data)
        raise AssertionError(f"socket closed: {msg.type} {msg.data} {msg.extra}")

    async def recv_type(self, type_: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of ``type_``, skipping others (slot and participant events)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv()
                if frame["type"] == type_:
                    return frame

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send(message)
        async with asyncio.timeout(10):
            while True:
                frame = await self.recv()
                if frame.get("id") == message.get("id"):
                    return frame

    async def assert_usable_and_quiet(self) -> None:
        """The next frame answers our ping: nothing else was sent to us in between."""
        await self.send({"type": "ping", "id": "probe"})
        frame = await self.recv()
        assert frame == {"type": "pong", "id": "probe"}, frame

    async def sync(self) -> list[dict[str, Any]]:
        """Everything sent to us up to now: ping, and collect the frames before the pong.

        The server handles one connection's frames in order and queues events before later
        replies, so after an action has been acknowledged to its sender, ``sync()`` on any other
        socket returns exactly what that action sent to it."""
        self._probes += 1
        probe = f"sync-{self._probes}"
        await self.send({"type": "ping", "id": probe})
        frames = []
        async with asyncio.timeout(10):
            while True:
                frame = await self.recv()
                if frame == {"type": "pong", "id": probe}:
                    return frames
                frames.append(frame)

    async def types(self) -> list[str]:
        return [f["type"] for f in await self.sync()]
