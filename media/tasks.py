"""Owned background tasks: every task has an owner that keeps a reference, logs its failure, and
cancels and awaits what is left when it closes (STYLE.md: no fire-and-forget ``create_task``).

A long-lived task (a writer, a heartbeat, a listener) is *supervised*: if it fails it is logged at
error level with its owner's context, counted (``medstage_task_failures_total``), and started again
after a backoff. It never dies silently, and the state it works on lives in its owner, so a restart
picks up where it stopped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

RESTART_MIN_S, RESTART_MAX_S = 0.1, 5.0
STEADY_S = 30.0  # a task that ran this long before failing starts again at once

failures = 0  # supervised tasks that failed, process-wide (read by media.stats at scrape time)


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

    def supervise(self, name: str, make: Callable[[], Coroutine[Any, Any, Any]]) -> asyncio.Task[Any]:
        """Run ``make()`` until it returns; when it raises, log, count and run it again after a backoff."""
        return self.spawn(self._supervised(name, make))

    async def _supervised(self, name: str, make: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        global failures
        loop = asyncio.get_running_loop()
        delay = RESTART_MIN_S
        while True:
            started = loop.time()
            try:
                await make()
                return
            except Exception:
                failures += 1
                if loop.time() - started > STEADY_S:
                    delay = RESTART_MIN_S
                self._log.error(
                    f"{self._what} {name} failed; restarting in {delay:.1f} s",
                    exc_info=True,
                    extra={**self._context, "task": name},
                )
            await asyncio.sleep(delay)
            delay = min(2 * delay, RESTART_MAX_S)

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
