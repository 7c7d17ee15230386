"""A node served in the test's own process and event loop (``server.app.create_app`` on aiohttp's
test server, 127.0.0.1): its objects (connections, peer connections) are there to be inspected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from server.app import create_app
from server.config import Config
from server.host.node import Node


@dataclass
class InProcessNode:
    url: str  # http://127.0.0.1:PORT
    port: int
    node: Node

    def ws_url(self, path: str = "/ws") -> str:
        return self.url.replace("http", "ws", 1) + path


@asynccontextmanager
async def serve(tmp_path: Path, **settings: Any) -> AsyncIterator[InProcessNode]:
    config = Config(
        ice_addresses=["127.0.0.1"],
        recordings_dir=str(tmp_path / "recordings"),
        **{"recording_mode": "off", **settings},  # a test may record (recording_mode="manual")
    )
    app = create_app(config)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        url = str(client.make_url("/")).rstrip("/")
        yield InProcessNode(url, client.port, app["node"])
