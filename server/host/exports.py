"""Composite exports started over the API: a bounded queue and one child process at a time.

The export decodes and encodes (recording/composite): never on the node's event loop, nor in its
process. Each runs as ``python -m recording export DIR --composite --no-progress`` in a child that
lowers its own priority (``export_nice``, 19 by default), so forwarding keeps the CPU; one at a time
per node, with at most ``export_queue`` waiting (beyond: refused, ``ExportQueueFull``). Asking again
for a session that is queued or running gets the same job. The child's work survives it: the state file
(``exports/composite.json``) says what is done, and a later run resumes there. When a job ends the
node sends the ``recording.exported`` webhook (docs/webhooks.md). Sealed tracks' keys go to the
child on its standard input (``--keys-stdin``), never on its command line or in a log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from media.tasks import OwnedTasks
from recording.composite import read_state
from recording.keys import key_to_dict
from recording.vault import KeyRing
from server.host.webhooks import Webhooks

log = logging.getLogger(__name__)

_STDERR_KEPT = 2000  # bytes of a failed child's last words, for the status and the log
_STOP_WAIT_S = 3.0


class ExportQueueFull(Exception):
    """Already ``limit`` exports wait behind the running one."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} exports are already waiting on this node; try again later")
        self.limit = limit


@dataclass(eq=False)
class ExportJob:
    stage_id: str
    session_id: str
    session_dir: Path
    force: bool
    queued_at: float
    status: str = "queued"  # queued, running, done, failed
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.stage_id, self.session_id


class Exporter:
    """The node's composite exports: queued, run one by one in child processes, announced when done."""

    def __init__(
        self,
        webhooks: Webhooks,
        *,
        limit: int,
        size: str,
        nice: int = 19,
        clock: Callable[[], float] = time.time,
        command: tuple[str, ...] = (sys.executable, "-m", "recording", "export"),
        keys: Callable[[Path], Awaitable[KeyRing]] | None = None,  # a session's keys, for sealed tracks
    ) -> None:
        self.keys = keys
        self.webhooks = webhooks
        self.limit = limit
        self.size = size
        self.nice = nice
        self.clock = clock
        self.command = command
        self.queue: deque[ExportJob] = deque()
        self.running: ExportJob | None = None
        self.finished: dict[tuple[str, str], ExportJob] = {}  # the last job of each session
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()  # a job started or ended
        self._tasks = OwnedTasks(log, "exports")
        self._child: asyncio.subprocess.Process | None = None

    # --- asking ----------------------------------------------------------------------------------

    def request(self, stage_id: str, session_id: str, session_dir: Path, force: bool = False) -> ExportJob:
        """The job exporting this session: the one queued or running, else a new one at the back."""
        current = self.job(stage_id, session_id)
        if current is not None and current.status in ("queued", "running"):
            return current
        if len(self.queue) >= self.limit:
            raise ExportQueueFull(self.limit)
        job = ExportJob(stage_id, session_id, session_dir, force, self.clock())
        self.queue.append(job)
        self._wake.set()
        return job

    def job(self, stage_id: str, session_id: str) -> ExportJob | None:
        key = (stage_id, session_id)
        if self.running is not None and self.running.key == key:
            return self.running
        for job in self.queue:
            if job.key == key:
                return job
        return self.finished.get(key)

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        """The child running the current export, if any."""
        return self._child

    def position(self, job: ExportJob) -> int | None:
        """1 for the next to run; None if not waiting."""
        for i, queued in enumerate(self.queue, 1):
            if queued is job:
                return i
        return None

    async def wait(self, predicate: Callable[[], bool]) -> None:
        """Until ``predicate()`` holds, checked whenever a job starts or ends (put a timeout around it)."""
        async with self._changed:
            await self._changed.wait_for(predicate)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- lifetime --------------------------------------------------------------------------------

    async def start(self) -> None:
        self._tasks.supervise("export worker", self._work)

    async def close(self) -> None:
        """Stop the worker, then the running child (its finished segments stay for a later run: the
        state says ``running``, which the API reports as ``interrupted``). No webhook for it: the
        export did not fail, the node stopped."""
        child = self._child
        await self._tasks.cancel_all()
        if child is not None and child.returncode is None:
            child.terminate()
            try:
                async with asyncio.timeout(_STOP_WAIT_S):
                    await child.wait()
            except TimeoutError:
                child.kill()
                await child.wait()

    # --- the worker ------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            job = self.running = self.queue.popleft()
            try:
                await self._notify()
                await self._run(job)
            finally:
                self.running = None
                self.finished[job.key] = job
            await self._announce(job)
            await self._notify()

    async def _run(self, job: ExportJob) -> None:
        job.status, job.started_at = "running", self.clock()
        args = [*self.command, str(job.session_dir), "--composite", "--no-progress", "--size", self.size]
        args += ["--nice", str(self.nice)]
        if job.force:
            args.append("--force")
        keys = b""
        if self.keys is not None:
            ring = await self.keys(job.session_dir)
            args.append("--keys-stdin")
            live = [k for k in map(ring.by_id, sorted(ring.key_ids())) if k is not None]
            keys = b"".join(json.dumps(key_to_dict(k)).encode() + b"\n" for k in live)
        log.info("export started", extra={"stage": job.stage_id, "session": job.session_id})
        try:
            child = self._child = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE if self.keys is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                # Its own session, so it lowers its own autogroup's weight, not the node's (cli.py).
                start_new_session=True,
            )
            if child.stdin is not None:
                try:
                    child.stdin.write(keys)  # read by the child before it plans anything
                    await child.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the child died at once: its exit status and stderr say why
                finally:
                    child.stdin.close()
            assert child.stderr is not None
            stderr = b""
            while chunk := await child.stderr.read(4096):
                stderr = (stderr + chunk)[-_STDERR_KEPT:]  # its last words are the reason
            await child.wait()
        except OSError as exc:
            job.status, job.error = "failed", f"could not start the export: {exc}"
        else:
            if child.returncode == 0:
                job.status = "done"
            else:
                said = stderr.decode("utf-8", "replace").strip()
                job.status, job.error = "failed", said or f"the export exited with status {child.returncode}"
        finally:
            self._child = None
        job.finished_at = self.clock()
        log.log(
            logging.INFO if job.status == "done" else logging.ERROR,
            "export " + job.status,
            extra={"stage": job.stage_id, "session": job.session_id, "error": job.error},
        )

    async def _announce(self, job: ExportJob) -> None:
        state = await asyncio.to_thread(read_state, job.session_dir) or {}
        base = f"/api/stages/{job.stage_id}/recordings/{job.session_id}"
        data: dict[str, Any] = {
            "stage_id": job.stage_id,
            "session_id": job.session_id,
            "status": job.status,
            "export": f"{base}/export",
        }
        if job.status == "done":
            data.update(
                file="exports/composite.mp4",
                url=f"{base}/files/exports/composite.mp4",
                duration_s=state.get("duration_s"),
                bytes=state.get("bytes"),
                tracks=len(state.get("tracks") or []),
            )
        else:
            data["error"] = job.error
        self.webhooks.emit("recording.exported", data)
