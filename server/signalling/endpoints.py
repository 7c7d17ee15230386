"""The two WebSocket endpoints: ``GET /ws`` for participants and ``GET /console`` for moderators'
consoles (the same protocol, joined as an observer)."""

from __future__ import annotations

from aiohttp import web

from server import metrics
from server.host.node import Node
from server.signalling.connection import Connection


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    """``GET /ws``: a participant's signalling socket (docs/protocol.md)."""
    return await _serve(request, observer=False)


async def console_handler(request: web.Request) -> web.WebSocketResponse:
    """``GET /console``: a moderator console's socket, the /ws protocol joined as an observer."""
    return await _serve(request, observer=True)


async def _serve(request: web.Request, observer: bool) -> web.WebSocketResponse:
    node: Node = request.app["node"]
    # Frames up to 4x the limit are read and refused with an error frame (the connection stays
    # usable); beyond that aiohttp closes with 1009 without buffering them.
    # No permessage-deflate (RFC 7692), which browsers always offer: a compressed socket keeps a
    # zlib compressor of its own (about 90 KB of RSS per socket measured, up to 256 KB) and
    # compresses every broadcast again for itself, where an uncompressed one is sent the same
    # bytes as everyone (Connection.send). Our frames are small; the media dwarfs them.
    ws = web.WebSocketResponse(
        max_msg_size=4 * node.config.max_frame_bytes, heartbeat=20.0, compress=False
    )
    await ws.prepare(request)
    conn = Connection(ws, node, None if ws.compress else request.transport)
    conn.observer = observer
    conn.query_token = request.query.get("access_token")
    metrics.connections.inc()
    try:
        await conn.run()
    finally:
        metrics.connections.dec()
    return ws
