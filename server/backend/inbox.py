"""The reading side of an inbox, shared by both backends: a bounded queue that ends or fails.

The backend pushes into it (``deliver``, ``fail``, ``finish``) without awaiting, from ``send`` (memory)
or from the task that reads the Pub/Sub connection (Redis); the node reads it as an ``Inbox``.
"""

from __future__ import annotations

import asyncio
from collections import deque

from server.backend.base import BackendError, BackendUnavailable, Inbox, check_inbox_limit


class QueuedInbox(Inbox):
    """Messages received and not yet read, in order; at most ``limit`` of them (then it fails)."""

    def __init__(self, limit: int) -> None:
        check_inbox_limit(limit)
        self._limit = limit
        self._messages: deque[bytes] = deque()
        self._error: BackendError | None = None  # raised after the messages received before it
        self._finished = False
        self._waiter: asyncio.Future[None] | None = None

    @property
    def broken(self) -> bool:
        """Whether it receives nothing more (failed or finished); what it holds may still be read."""
        return self._finished or self._error is not None

    def deliver(self, payload: bytes) -> None:
        if self.broken:
            return
        if len(self._messages) >= self._limit:
            self.fail(BackendUnavailable(f"inbox overflow: {self._limit} messages unread, later ones lost"))
            return
        self._messages.append(payload)
        self._wake()

    def fail(self, error: BackendError) -> None:
        """The subscription is lost: the reader gets what was received, then ``error``."""
        if not self.broken:
            self._error = error
            self._wake()

    def finish(self) -> None:
        """Closed: the reader stops at once, unread messages are dropped."""
        self._finished = True
        self._messages.clear()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def __anext__(self) -> bytes:
        while True:
            if self._finished:
                raise StopAsyncIteration
            if self._messages:
                return self._messages.popleft()
            if self._error is not None:
                self._finished = True  # like an async generator that raised: done
                raise self._error
            if self._waiter is not None:
                raise RuntimeError("another task is already reading this inbox")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
