"""A hosted stage: the domain state (``rooms.Stage``), its media (``media.MediaRoom``) and the people
connected to it, with ONE way to change it.

``LiveStage.apply(change)`` is that way. ``change(stage, now)`` runs against the domain: it raises a
``DomainError`` and changes nothing, or returns the events it caused. The events then go, in order, to
the sinks (``server.host.sinks``): the shared log, the webhooks, the people who may see them (with the
media following the domain), the recorder. A change asked for while events are being drained (a stage
due to record, a recorder that failed) waits behind them: nothing re-enters, and every sink sees the
events in ``seq`` order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from media.room import MediaRoom
from media.tasks import OwnedTasks
from recording.signing import NodeKey
from recording.vault import KeyRing
from rooms.events import Event
from rooms.stage import Stage, StageState
from server.closecodes import CloseCode
from server.host.quality import QualityMonitor
from server.host.sinks import FanOut, Hooks, RecorderSink
from server.host.webhooks import Webhooks
from server.routing.ledgerheads import LedgerHeadPublisher
from server.wire import Outgoing

if TYPE_CHECKING:
    from server.host.client import Client
    from server.routing.stagelog import StageLog

log = logging.getLogger(__name__)

TICK_S = 0.25  # reactions are aggregated per second; poll timers need no finer grain

Change = Callable[[Stage, float], list[Event]]
Then = Callable[[list[Event]], None]


class LiveStage:
    """One hosted stage and its single owner: every change goes through ``apply``."""

    def __init__(
        self,
        stage: Stage,
        media: MediaRoom,
        recordings_root: Path,
        clock: Callable[[], float] = time.time,
        webhooks: Webhooks | None = None,
        restored: bool = False,
        signing_key: Callable[[], NodeKey] | None = None,
        ring: KeyRing | None = None,
        ledger_heads: LedgerHeadPublisher | None = None,
    ) -> None:
        self.stage = stage
        self.media = media
        self.clock = clock
        self.connections: dict[str, Client] = {}
        self.stage_log: StageLog | None = None  # where events go to the shared log (set once hosted)
        self._tasks = OwnedTasks(log, "stage", stage=stage.id)
        self.fanout = FanOut(self)
        self.hooks = Hooks(stage, webhooks) if webhooks is not None else None
        self.recording = RecorderSink(self, recordings_root, signing_key, ledger_heads, ring)
        self.quality = QualityMonitor(self)  # connection figures and levels (server/host/quality.py)
        self._ids = itertools.count(1)
        # A stage restored on this node (its host died) keeps the ids its comments, questions and
        # polls had; ours must not collide with them, and the old host's counter is gone with it.
        self._id_epoch = secrets.token_hex(2) + "." if restored else ""
        self._later: deque[tuple[Change, Then | None]] = deque()
        self._draining = False
        self._ticker: asyncio.Task[Any] | None = None

    # --- the one way in ------------------------------------------------------------------------

    def apply(self, change: Change, then: Then | None = None) -> list[Event]:
        """Run ``change`` against the stage and drain its events through the sinks, in order.

        ``then(events)`` runs once the domain accepted, before the events leave (a request's reply
        goes before the events it caused). Called while events are being drained, the change is
        queued and runs right after them; it then returns no events (its refusal is logged).
        """
        if self._draining:
            self._later.append((change, then))
            return []
        events = change(self.stage, self.clock())
        if then is not None:
            then(events)
        self._drain(events)
        return events

    def _drain(self, events: list[Event]) -> None:
        self._draining = True
        auto_tried = False  # once per drain: a start that fails must not be retried in a loop
        try:
            while True:
                if events:
                    self._emit(events)
                if self.stage.recording_due and not auto_tried:
                    auto_tried = True
                    self._later.append((self._auto_recording, None))
                if not self._later:
                    return
                change, then = self._later.popleft()
                try:
                    events = change(self.stage, self.clock())
                except Exception:
                    log.exception("queued stage change refused", extra={"stage": self.stage.id})
                    events = []
                    continue
                if then is not None:
                    then(events)
        finally:
            self._draining = False

    def _emit(self, events: list[Event]) -> None:
        if self.stage_log is not None:
            self.stage_log.push(events)
        if self.hooks is not None:
            self.hooks(events)
        self.fanout(events)
        self.recording(events)

    def record_if_due(self) -> None:
        """A stage that records from the start (``recording_mode=auto``) starts its session."""
        self.apply(self._auto_recording)

    def _auto_recording(self, stage: Stage, now: float) -> list[Event]:
        return stage.start_auto_recording(self.new_session_id(now), now) if stage.recording_due else []

    # --- ids -----------------------------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        return f"{prefix}-{self._id_epoch}{next(self._ids)}"

    def new_session_id(self, now: float) -> str:
        """Sortable and unique: ``20261126T140305Z-3f2a``."""
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(2)

    # --- output --------------------------------------------------------------------------------

    def send(self, participant_id: str, message: msgspec.Struct | Outgoing) -> None:
        conn = self.connections.get(participant_id)
        if conn is not None:
            conn.send(message)

    def broadcast(self, message: msgspec.Struct | Outgoing) -> None:
        """A message for everyone on the stage that is not a domain event (e.g. the node list)."""
        outgoing = message if isinstance(message, Outgoing) else Outgoing(message)
        for conn in list(self.connections.values()):
            conn.send(outgoing)

    def front_of(self, participant_id: str) -> str | None:
        """The node whose socket serves this participant, when it is not this one."""
        conn = self.connections.get(participant_id)
        return None if conn is None else conn.front

    def spawn(self, work: Any) -> None:
        self._tasks.spawn(work)

    def announce(self) -> None:
        """``stage.started`` once the stage is live (at creation, or when its host starts it)."""
        if self.hooks is not None and self.stage.state is StageState.LIVE:
            self.hooks.announce()

    # --- time ----------------------------------------------------------------------------------

    def start_ticker(self) -> None:
        self._ticker = self._tasks.supervise("ticker", self._tick)
        self._tasks.supervise("quality", self.quality.run)

    async def _tick(self) -> None:
        """Aggregated reactions and poll timers: the domain says what is due at ``now``."""
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.apply(lambda stage, now: stage.flush_reactions(now) + stage.tick(now))
                self.recording.sync()  # a publication that just got its codec starts recording
            except Exception:
                log.exception("stage tick failed", extra={"stage": self.stage.id})

    # --- end -----------------------------------------------------------------------------------

    async def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "node shutting down") -> None:
        if self._ticker is not None:  # no tick while the stage closes
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        await self.recording.close()
        for conn in list(self.connections.values()):
            await conn.close(code, reason)
        await self.media.close()
        await self._tasks.cancel_all()
