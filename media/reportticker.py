"""The node's sender reports (RFC 3550): one ticker task for every connected viewer of a process,
each viewer at its own randomized interval. Split from media/subscriber.py, whose ``Subscriber``
builds the reports; this module only says when."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from media.subscriber import Subscriber

log = logging.getLogger(__name__)


def report_interval() -> float:
    """RFC 3550 §6.2 / §6.3.1: a sender reports every 0.5-1.5 x the interval (1 s here), drawn anew
    each time, so that viewers who connected together do not report together."""
    return 0.5 + random.random()


SLACK_S = 0.005


class ReportTicker:
    """The node's sender reports: one task for every connected viewer of this process, each viewer at
    its own randomized interval (``report_interval``), instead of a task per viewer.

    A heap of (due time, viewer); the task sleeps until the earliest is due and exits when no viewer
    is left (the next ``add`` starts it again). It belongs to the event loop it was started on: a new
    loop (tests) starts afresh.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Subscriber]] = []
        self._order = itertools.count()  # ties in due time never compare subscribers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._sleeping_until = 0.0
        self.wakeups = 0  # times the task woke up (tests: one per report at most)

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def add(self, sub: Subscriber) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._heap.clear()
            self._loop, self._task, self._wake = loop, None, None
        due = loop.time() + report_interval()
        heapq.heappush(self._heap, (due, next(self._order), sub))
        if not self.running:
            self._task = loop.create_task(self._run())
            self._task.add_done_callback(_log_failure)
        elif due < self._sleeping_until and self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        heap = self._heap
        while heap:
            due, _, sub = heap[0]
            now = loop.time()
            # Within SLACK_S counts as due: uvloop's timers have a millisecond resolution and may
            # fire a fraction of one early; reports due together go out in one wake-up.
            if due > now + SLACK_S:
                self._wake = loop.create_future()
                self._sleeping_until = due
                timer = loop.call_at(due, _wake_up, self._wake)
                try:
                    await self._wake
                finally:
                    timer.cancel()
                self.wakeups += 1
                continue
            heapq.heappop(heap)
            if sub.closed:
                continue
            try:
                await sub.send_reports()
            except Exception:
                # One viewer's failure must not stop everyone's reports; that viewer stops reporting.
                log.exception("sender reports failed", extra={"participant": sub.participant_id})
                continue
            heapq.heappush(heap, (loop.time() + report_interval(), next(self._order), sub))


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


reports = ReportTicker()  # one per process (a media worker process has its own)


def _log_failure(task: asyncio.Task[None]) -> None:
    """The report ticker is owned by this module (``reports``); a failure is logged, never lost:
    without reports the viewers' lip sync drifts."""
    if not task.cancelled() and task.exception() is not None:
        log.error("sender reports failed", exc_info=task.exception())
