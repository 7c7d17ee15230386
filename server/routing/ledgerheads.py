"""The signed heads of a stage's consent ledgers, copied to the shared backend by the stage's host.

The recorder signs its ledger's head after each append and at the stop (recording/signing.py); the
session directory keeps them, and this copies the latest one per session to the backend
(``ms:{stage:ID}:ledger-heads`` on Redis): evidence held outside the node's disk, so a session whose
last records were cut off, signed heads and all, still shows it (docs/recording.md, threat model).

``push`` never blocks: only the latest head per session waits, and one task writes them in turn,
retrying while the backend is unreachable (a head is an idempotent overwrite).
"""

from __future__ import annotations

import asyncio
import logging

from media.tasks import OwnedTasks
from recording.signing import SignedHead
from server.backend import Backend, BackendError, BackendUnavailable

log = logging.getLogger(__name__)

RETRY_MIN_S, RETRY_MAX_S = 0.1, 2.0


class LedgerHeadPublisher:
    """Latest signed head per recording session of one stage, on its way to the backend."""

    def __init__(self, backend: Backend, stage_id: str) -> None:
        self.backend = backend
        self.stage_id = stage_id
        self.pending: dict[str, SignedHead] = {}  # session id -> its latest head not yet written
        self.published: dict[str, SignedHead] = {}  # session id -> the last head written
        self._wake = asyncio.Event()
        self._tasks = OwnedTasks(log, "ledger head publisher", stage=stage_id)
        self._tasks.supervise("writer", self._write)

    def push(self, head: SignedHead) -> None:
        self.pending[head.session_id] = head
        self._wake.set()

    async def _write(self) -> None:
        delay = RETRY_MIN_S
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.pending:
                session_id, head = next(iter(self.pending.items()))
                try:
                    await self.backend.put_ledger_head(self.stage_id, session_id, head.line().encode())
                except BackendUnavailable:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                except BackendError:  # refused (not unreachable): retrying would not help
                    log.exception("ledger head not published", extra={"stage": self.stage_id})
                else:
                    self.published[session_id] = head
                delay = RETRY_MIN_S
                if self.pending.get(session_id) is head:  # a newer one may have come meanwhile
                    del self.pending[session_id]

    async def flush(self, within: float) -> None:
        """Wait (a bounded time) until every pending head is written: a clean stop."""
        try:
            async with asyncio.timeout(within):
                while self.pending:
                    self._wake.set()
                    await asyncio.sleep(0.02)
        except TimeoutError:
            log.error(
                "ledger heads not published", extra={"stage": self.stage_id, "sessions": len(self.pending)}
            )

    async def close(self) -> None:
        await self._tasks.cancel_all()
