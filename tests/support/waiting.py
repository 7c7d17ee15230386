"""Waiting for a condition with a deadline (for state that has no event to wait on, like counters)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> None:
    """Return once ``predicate()`` holds; raise TimeoutError after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - counters have no event to wait on
            await asyncio.sleep(interval)
