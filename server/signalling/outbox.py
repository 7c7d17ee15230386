"""What a connection has yet to send, and what happens when a client reads too slowly.

Policy (one slow browser must never delay the stage):
- below ``limit`` queued frames, everything is queued;
- at ``limit``, frames that only matter while fresh (comments, reactions, live counts) are dropped
  and counted; moderation, role, poll results and every reply are still queued;
- at ``2 x limit`` the client is hopeless: the connection is closed with 1013 (try again later).

A broadcast is encoded once per framing, not once per recipient (``wire.Outgoing``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from server.wire import Outgoing

DROPPABLE = frozenset({"comment.posted", "reactions", "poll.counts", "question.updated"})


@dataclass(frozen=True, slots=True)
class Close:
    """Queued after the last frame: the writer closes the socket once everything before is sent."""

    code: int
    reason: str


Item = Outgoing | Close


class Overflow(Exception):
    """The client fell 2 x limit frames behind."""


class Outbox:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self._items: deque[Item] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> bool:
        """Queue ``item``; False when it was dropped. Raises Overflow past the hard limit."""
        if self._closed:
            return False
        size = len(self._items)
        if size >= self.limit and isinstance(item, Outgoing):
            if item.type in DROPPABLE:
                self.dropped += 1
                return False
            if size >= 2 * self.limit:
                raise Overflow(f"{size} frames queued")
        self._items.append(item)
        self._ready.set()
        return True

    def close(self) -> None:
        """No more items; the writer ends after what is queued."""
        self._closed = True
        self._ready.set()

    async def drain(self) -> list[Item] | None:
        """Everything queued (waiting for at least one item); None once closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        items = list(self._items)
        self._items.clear()
        return items
