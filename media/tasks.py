"""Owned background tasks: every task has an owner that keeps a reference, logs its failure, and
cancels and awaits what is left when it closes (STYLE.md: no fire-and-forget ``create_task``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any


class OwnedTasks:
    def __init__(self, logger: logging.Logger, what: str, **context: Any) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = logger
        self._what = what
        self._context = context

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error(f"{self._what} task failed", exc_info=task.exception(), extra=self._context)

    def __len__(self) -> int:
        return len(self._tasks)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
