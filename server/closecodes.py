"""Every WebSocket close code the node sends, once (docs/protocol.md, "WebSocket close codes").

Standard codes where RFC 6455 has one; 4000-4999 for ours. A client reconnects after the codes in
``RECONNECT`` and stops after the others; ``tests/server/test_closecodes.py`` holds this list against
the table in docs/protocol.md so they cannot drift apart.
"""

from __future__ import annotations

from enum import IntEnum


class CloseCode(IntEnum):
    NORMAL = 1000  # after leave
    GOING_AWAY = 1001  # the node is shutting down
    TOO_BIG = 1009  # a frame beyond 4 x the frame limit (aiohttp closes before buffering it)
    SERVER_FAULT = 1011
    RELAY_LOST = 1012  # "service restart": the relay to the stage's node was lost
    TRY_LATER = 1013  # the client reads too slowly: its outbox overflowed
    REMOVED = 4003
    BANNED = 4004
    ERASED = 4005  # the person was erased (issue 15): their data is gone; final
    STAGE_MOVED = 4010
    REPLACED = 4011
    MEDIA_LOST = 4012  # the media worker holding the viewer's connection stopped (media/workers.py)
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403


RECONNECT = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.SERVER_FAULT,
        CloseCode.RELAY_LOST,
        CloseCode.TRY_LATER,
        CloseCode.STAGE_MOVED,
        CloseCode.MEDIA_LOST,
    }
)
