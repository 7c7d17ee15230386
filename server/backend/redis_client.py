"""The Redis backend's connections: the client for commands (retried once on a dropped connection)
and the bus for node messages (never retried), the scripts registered on the first, and ``_call``,
which bounds every call in time and turns redis-py's errors into the backend's.

``RedisBackend`` (``redis.py``) builds on it; that module's docstring says how the backend uses Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

from server.backend.base import (
    DEFAULT_INBOX_LIMIT,
    DEFAULT_MAX_LOG_ENTRIES,
    BackendClosed,
    BackendError,
    BackendUnavailable,
    check_inbox_limit,
)
from server.backend.redis_inbox import UNAVAILABLE, RedisInbox
from server.backend.redis_scripts import (
    APPEND,
    CLAIM,
    HIT,
    PEOPLE_APPEND,
    PRESENCE_LEAVE,
    RELEASE,
    RENEW,
    SAVE_CLUB,
    SAVE_STATE,
)

__all__ = ["RedisClient"]


class RedisClient:
    """The connections of a ``RedisBackend`` (its docstring describes the arguments)."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "medstage",
        max_log_entries: int = DEFAULT_MAX_LOG_ENTRIES,
        block_ms: int = 2000,
        command_timeout: float = 5.0,
        reconnect_max_s: float = 1.0,
        inbox_limit: int = DEFAULT_INBOX_LIMIT,
        inbox_ping_s: float = 1.0,
    ) -> None:
        if max_log_entries < 1:
            raise ValueError("max_log_entries must be at least 1")
        check_inbox_limit(inbox_limit)
        if inbox_ping_s <= 0:
            raise ValueError(f"inbox_ping_s must be above 0, not {inbox_ping_s}")
        self.max_log_entries = max_log_entries
        self.block_ms = block_ms
        self.command_timeout = command_timeout
        self.reconnect_max_s = reconnect_max_s
        self.inbox_limit = inbox_limit
        self.inbox_ping_s = inbox_ping_s
        self._closed = asyncio.Event()
        self._inboxes: set[RedisInbox] = set()
        # No socket_timeout: with one, redis-py (8.1) sends through asyncio.wait_for, which before
        # Python 3.12 can swallow a cancellation that arrives as the send completes (CPython gh-86296):
        # a cancelled subscription then read on for ever (tests/backend/test_redis.py). Timeouts are
        # ours instead (``_call``, asyncio.timeout); a cancelled read makes redis-py drop the connection.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            client_name=name,
            socket_timeout=None,
            socket_connect_timeout=min(command_timeout, 2.0),
            socket_keepalive=True,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), retries=1),
        )
        # Node messages: no retry at all (no supported errors, so not even the reconnect redis-py
        # makes before giving up). A retried PUBLISH whose first attempt landed would deliver twice;
        # a Pub/Sub connection re-subscribed behind our back would hide the messages lost meanwhile.
        self._bus: aioredis.Redis = aioredis.Redis.from_url(
            url,
            client_name=name,
            socket_timeout=None,
            socket_connect_timeout=min(command_timeout, 2.0),
            socket_keepalive=True,
            retry=Retry(NoBackoff(), retries=0, supported_errors=()),
        )
        register = self._redis.register_script
        self._claim = register(CLAIM)
        self._renew = register(RENEW)
        self._release = register(RELEASE)
        self._append = register(APPEND)
        self._presence_leave = register(PRESENCE_LEAVE)
        self._save_state = register(SAVE_STATE)
        self._save_club = register(SAVE_CLUB)
        self._hit = register(HIT)
        self._people_append = register(PEOPLE_APPEND)

    @contextlib.asynccontextmanager
    async def _call(self, seconds: float | None = None) -> AsyncIterator[None]:
        """Bound a call in time; a lost, refused or silent connection becomes BackendUnavailable,
        any other refusal (OOM, READONLY...) a BackendError: callers never see redis-py's types."""
        if self._closed.is_set():
            raise BackendClosed("backend is closed")
        try:
            async with asyncio.timeout(seconds or self.command_timeout):
                yield
        except UNAVAILABLE as exc:  # asyncio's TimeoutError is an OSError
            raise BackendUnavailable(f"redis unavailable: {exc!r}") from exc
        except RedisError as exc:
            raise BackendError(f"redis refused: {exc}") from exc

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the backend closes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closed.wait()

    async def ping(self) -> bool:
        if self._closed.is_set():
            return False
        try:
            return bool(await self._redis.ping())
        except UNAVAILABLE:
            return False

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for inbox in list(self._inboxes):
            await inbox.aclose()
        await self._bus.aclose()
        await self._redis.aclose()
