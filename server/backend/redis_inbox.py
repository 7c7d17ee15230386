"""A node's inbox on Redis: one dedicated Pub/Sub connection, read by a task the inbox owns.

The connection must come from a client that never retries (``RedisBackend``'s bus): redis-py would
otherwise reconnect and re-subscribe after a drop without a word, hiding the messages lost meanwhile.
Here any error ends the inbox (BackendUnavailable) and the node decides what to do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.backend.base import BackendError, BackendUnavailable
from server.backend.inbox import QueuedInbox

log = logging.getLogger(__name__)

# What "Redis cannot be reached" looks like from redis-py (asyncio's TimeoutError is an OSError).
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_PING = b"medstage-inbox"


class RedisInbox(QueuedInbox):
    """Messages published to ``channel``; see ``Inbox``. Made by ``open``, which subscribes first."""

    def __init__(
        self,
        pubsub: PubSub,
        channel: str,
        *,
        limit: int,
        ping_s: float,
        on_close: Callable[[RedisInbox], None],
    ) -> None:
        super().__init__(limit)
        self._pubsub = pubsub
        self._channel = channel
        self._ping_s = ping_s
        self._on_close = on_close
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        bus: aioredis.Redis,
        channel: str,
        *,
        limit: int,
        ping_s: float,
        on_close: Callable[[RedisInbox], None],
    ) -> RedisInbox:
        """Subscribe and return once Redis confirmed it; redis-py errors pass through (the caller
        maps them, and bounds this in time)."""
        pubsub = bus.pubsub()
        try:
            await pubsub.subscribe(channel)
            # Redis confirms a SUBSCRIBE once it is in effect: any PUBLISH after this reaches us.
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "subscribe":
                    break
        except BaseException:
            await _close(pubsub)
            raise
        inbox = cls(pubsub, channel, limit=limit, ping_s=ping_s, on_close=on_close)
        inbox._reader = asyncio.create_task(inbox._read(), name=f"inbox reader {channel}")
        return inbox

    async def aclose(self) -> None:
        self.finish()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])
        await _close(self._pubsub)
        self._on_close(self)

    async def _read(self) -> None:
        """The reader task's top: turn whatever ends the subscription into the inbox's error."""
        try:
            await self._listen()
        except BackendError as exc:
            self.fail(exc)
        except UNAVAILABLE as exc:
            self.fail(BackendUnavailable(f"inbox {self._channel} lost its connection: {exc!r}"))
        except RedisError as exc:
            self.fail(BackendError(f"inbox {self._channel}: redis refused: {exc}"))
        except Exception as exc:
            log.exception("inbox reader failed", extra={"channel": self._channel})
            self.fail(BackendError(f"inbox {self._channel} failed: {exc!r}"))
        # Not cancelled: the subscription is over (lost, or overflowed). Free the connection now,
        # not when the node gets round to closing the inbox; what was received stays readable.
        await _close(self._pubsub)
        self._on_close(self)

    async def _listen(self) -> None:
        """Deliver messages until the connection fails. A server that dies closes the socket (an
        error at once); a host that vanishes sends nothing, and TCP keepalive would take minutes,
        so after ``ping_s`` of silence we PING, and one more ``ping_s`` without a reply is a loss."""
        clock = asyncio.get_running_loop().time
        heard = clock()
        pinged = False
        while not self.broken:
            wait = heard + self._ping_s * (2 if pinged else 1) - clock()
            if wait <= 0:
                if pinged:
                    raise BackendUnavailable(f"inbox {self._channel}: no reply to a PING in {self._ping_s} s")
                async with asyncio.timeout(self._ping_s):  # a full send buffer must not hang us
                    await self._pubsub.ping(_PING)
                pinged = True
                continue
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if message is None:
                continue
            heard, pinged = clock(), False  # a message or our PING's reply: the connection works
            if message["type"] == "message":
                self.deliver(message["data"])


async def _close(pubsub: PubSub) -> None:
    """Drop the connection (idempotent); redis-py 8.1 leaves ``PubSub.aclose`` unannotated."""
    await pubsub.aclose()  # type: ignore[no-untyped-call]
