"""What follows a change to a finished session's consent ledger made on this node (a deletion, by
hand or by the retention sweeper; an erasure's rewrite): its latest signed head copied to the shared
backend, where recorders keep theirs (server/routing/ledgerheads.py: evidence off the node's disk),
and, for a deletion, the ``recording.deleted`` webhook (docs/webhooks.md)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from recording.signing import HEADS_FILENAME, read_heads
from server.backend import Backend, BackendError

log = logging.getLogger(__name__)


class LedgerChanges:
    """The node's announcements of sessions whose ledger it changed after their recording."""

    def __init__(
        self,
        root: Path,
        backend: Backend,
        emit: Callable[[str, dict[str, Any]], None],
        spawn: Callable[[Coroutine[Any, Any, None]], object],
    ) -> None:
        self.root = root
        self.backend = backend
        self._emit = emit
        self._spawn = spawn

    async def publish_heads(self, sessions: list[tuple[str, str]]) -> None:
        """The latest signed head of each session's consent ledger (its heads file, on this node's
        disk) to the shared backend: after a deletion or an erasure appended a record, the backend's
        copy says so too (docs/recording.md, threat model). A backend that cannot answer is logged:
        the head stays in the session's own file."""
        for stage_id, session_id in sessions:
            path = self.root / stage_id / session_id / HEADS_FILENAME
            heads, _ = await asyncio.to_thread(read_heads, path)
            last = next((h for _, h in reversed(heads) if h is not None), None)
            if last is None:
                continue
            try:
                await self.backend.put_ledger_head(stage_id, session_id, last.line().encode())
            except BackendError as exc:
                log.warning(
                    "ledger head not published",
                    extra={"stage": stage_id, "session": session_id, "error": repr(exc)},
                )

    def deleted(
        self, stage_id: str, session_id: str, reason: str, by: str, days: int | None, paths: list[str]
    ) -> None:
        """A session's media went: its final head to the backend, and the ``recording.deleted``
        webhook (what went and why; the manifest and the consent ledger stay)."""
        self._spawn(self.publish_heads([(stage_id, session_id)]))
        self._emit(
            "recording.deleted",
            {
                "stage_id": stage_id,
                "session_id": session_id,
                "reason": reason,
                "by": by,
                "retention_days": days,
                "deleted": list(paths),
                "manifest": f"/api/stages/{stage_id}/recordings/{session_id}",
            },
        )
