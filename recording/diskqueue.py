"""A session's small durable writes (consent ledger, signed heads, manifest) on one thread, in order.

Each of those writes ends with an fsync, which a slow or busy disk can hold for hundreds of
milliseconds; on the event loop that would stall every stage of the node. The loop only queues a job
(a closure over data it has already copied) and goes on; one thread per session runs the jobs in the
order they were queued, so a manifest never names a ledger head whose entry is not on disk yet, and a
signed head always follows the entry it signs. :meth:`DiskQueue.drain` waits until everything queued so
far is on disk (a stop reports done only after it).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

Job = Callable[[], object]
OnError = Callable[[str, BaseException], object]  # (what, error), called on the loop


class DiskQueue:
    """One thread running blocking jobs in the order they were submitted (FIFO, never in parallel).

    A job that raises is logged and reported to ``on_error(what, exc)`` on the event loop; the jobs
    after it still run (each decides whether it may: the ledger refuses to write after a gap).
    """

    def __init__(self, name: str, on_error: OnError | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_error = on_error
        self._jobs: queue.SimpleQueue[tuple[str, Job] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"disk {name}", daemon=True)
        self._thread.start()

    def submit(self, what: str, job: Job) -> None:
        """Queue ``job`` (never blocks). ``what`` names it in logs and errors."""
        if self._closed:
            raise RuntimeError(f"disk queue closed: {what} not written")
        self._jobs.put((what, job))

    async def drain(self) -> None:
        """Return once every job submitted before this call has run."""
        if self._closed and not self._thread.is_alive():
            return
        done = self._loop.create_future()

        def mark() -> None:
            self._call_on_loop(_resolve, done)

        self.submit("drain", mark)
        await done

    async def aclose(self) -> None:
        """Drain, then end the thread; ``submit`` refuses from then on."""
        if self._closed:
            return
        await self.drain()
        self._closed = True
        self._jobs.put(None)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            what, job = item
            try:
                job()
            except Exception as exc:  # the thread's top: report, keep serving the jobs after it
                log.error("disk write failed: %s", what, exc_info=exc)
                if self._on_error is not None:
                    self._call_on_loop(self._on_error, what, exc)

    def _call_on_loop(self, callback: Callable[..., object], *args: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed (the process is ending): nobody is left to tell
            log.warning("disk queue: event loop closed, %s not reported", getattr(callback, "__name__", "?"))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
