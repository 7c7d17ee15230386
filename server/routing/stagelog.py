"""A hosted stage's lease, and its events and durable state on their way to the shared backend.

The host appends every event, numbered, to the stage's log, fenced by the lease, and saves the stage's
durable state (``rooms.durable``) so that another node can take the stage over (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import msgpack
import msgspec

from media.tasks import OwnedTasks
from rooms import durable
from rooms.events import Event, ParticipantJoined, ParticipantLeft
from rooms.stage import Stage
from server.backend import BackendError, BackendUnavailable, Lease, LeaseLost, OutOfOrder
from server.routing.ports import Place

log = logging.getLogger(__name__)

SAVE_INTERVAL_S = 0.25  # the durable state is written at most this often (and after every batch)
RETRY_MIN_S, RETRY_MAX_S = 0.1, 2.0


class StageLog:
    """A hosted stage's lease, and its events and durable state on their way to the backend.

    ``push`` never blocks and never fails: events wait here, in order, until the backend takes
    them. One task writes, so appends are in ``seq`` order and the state is saved after them.
    """

    def __init__(
        self, cluster: Place, stage: Stage, lease: Lease, via: Callable[[str], str | None]
    ) -> None:
        self.cluster = cluster
        self.stage = stage
        self._via = via  # the front node of a participant relayed from another node
        self.lease = lease
        self.pending: deque[tuple[int, bytes]] = deque()
        self.presence: deque[tuple[str, dict[str, Any] | None]] = deque()  # (participant, info or gone)
        self.dirty = True  # the durable state has changed since it was last saved
        self.written = 0  # the last seq the backend has
        self._wake = asyncio.Event()
        self._tasks = OwnedTasks(log, "stage log", stage=stage.id)
        self._tasks.supervise("writer", self._write)
        self._tasks.supervise("lease renewal", self._renew)
        self.lost = False

    @property
    def stage_id(self) -> str:
        return self.stage.id

    def push(self, events: list[Event]) -> None:
        for event in events:
            entry = (event.seq, _ENCODER.encode(event))
            if self.pending and event.seq < self.pending[-1][0]:
                # Delivered late (a bug upstream, but the log must stay in order): put it in place.
                bisect.insort(self.pending, entry)
                log.warning("event delivered out of order", extra={"stage": self.stage_id, "seq": event.seq})
            else:
                self.pending.append(entry)
            if isinstance(event, ParticipantJoined):
                self.presence.append((event.participant, self._presence_info(event.participant)))
            elif isinstance(event, ParticipantLeft):
                self.presence.append((event.participant, None))
        self.dirty = True
        self._wake.set()

    def _presence_info(self, pid: str) -> dict[str, Any]:
        person = self.stage.participants.get(pid)
        via = self._via(pid) or self.cluster.node_id
        if person is None:
            return {"via": via}
        return {"name": person.name, "role": str(person.role), "identity": person.identity, "via": via}

    def mark_dirty(self) -> None:
        self.dirty = True
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self.pending)

    async def _write(self) -> None:
        """Append every pending event as soon as it comes; save the state at most every
        SAVE_INTERVAL_S (it is the larger write, and a burst of comments needs only the last one)."""
        backend = self.cluster.backend
        loop = asyncio.get_running_loop()
        delay = RETRY_MIN_S
        saved_at = 0.0
        # Whether a save timer is pending. Tracked here, not read from the handle: on uvloop a delay
        # that rounds to 0 ms gives a plain Handle (no .when()), and uvloop's clock ticks in whole
        # milliseconds, so the timer is never set below 1 ms (it would fire with the save still due).
        timer_pending = False

        def save_due() -> None:
            nonlocal timer_pending
            timer_pending = False
            self._wake.set()

        self._wake.set()  # a restarted writer looks at what is pending at once
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while self.pending:
                    seq, payload = self.pending[0]
                    await backend.append(self.stage_id, seq, payload, lease=self.lease)
                    self.pending.popleft()
                    self.written = seq
                while self.presence:
                    pid, info = self.presence[0]
                    if info is None:
                        await backend.presence_leave(self.stage_id, pid, self.cluster.node_id)
                    else:
                        await backend.presence_join(self.stage_id, pid, self.cluster.node_id, info)
                    self.presence.popleft()
                if self.dirty:
                    wait = saved_at + SAVE_INTERVAL_S - loop.time()
                    if wait > 0:
                        if not timer_pending:
                            timer_pending = True
                            loop.call_later(max(wait, 0.001), save_due)
                    else:
                        self.dirty = False
                        try:
                            await backend.save_state(self.stage_id, self._state(), lease=self.lease)
                        except BaseException:
                            self.dirty = True
                            raise
                        saved_at = loop.time()
                delay = RETRY_MIN_S
            except BackendUnavailable:
                self.cluster.set_unavailable()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                self._wake.set()
            except OutOfOrder as exc:
                # The lease is ours (the append is fenced), so this is our own ordering fault: the
                # entry cannot go in without breaking the log. Drop it, loudly; the stage goes on.
                seq, _ = self.pending.popleft()
                log.error("event not written: out of order", extra={"stage": self.stage_id, "seq": seq})
                log.debug("out of order", exc_info=exc)
                self._wake.set()
            except LeaseLost as exc:
                if not await self._reclaim(str(exc)):
                    return
                self._wake.set()

    def _state(self) -> bytes:
        packed: bytes = msgpack.packb(durable.durable_state(self.stage))
        return packed

    async def _renew(self) -> None:
        """Renew every third of the TTL; an outage keeps the stage here (the media goes on)."""
        backend = self.cluster.backend
        while True:
            await asyncio.sleep(self.lease.ttl_ms / 3000)
            try:
                if not await backend.renew(self.lease) and not await self._reclaim("lease expired"):
                    return
            except BackendUnavailable:
                self.cluster.set_unavailable()
            except BackendError:
                log.exception("lease renewal failed", extra={"stage": self.stage_id})

    async def _reclaim(self, why: str) -> bool:
        """The lease lapsed (an outage longer than its TTL): take it again unless another node has."""
        backend = self.cluster.backend
        while True:
            try:
                lease = await backend.claim(
                    self.stage_id, self.cluster.node_id, self.cluster.url, self.lease.ttl_ms
                )
                break
            except BackendUnavailable:
                await asyncio.sleep(RETRY_MAX_S)
        if lease is not None:
            log.warning("lease claimed again", extra={"stage": self.stage_id, "reason": why})
            self.lease = lease
            return True
        log.error("stage taken over by another node", extra={"stage": self.stage_id, "reason": why})
        self.lost = True
        self.cluster.host.spawn(self.cluster.host.let_go(self.stage_id))
        return False

    async def flush(self, within: float) -> None:
        """Wait (a bounded time) until every pending event is written: a clean shutdown."""
        try:
            async with asyncio.timeout(within):
                while (self.pending or self.dirty) and not self.lost:
                    self._wake.set()
                    await asyncio.sleep(0.02)
        except TimeoutError:
            log.error(
                "events not written at shutdown", extra={"stage": self.stage_id, "pending": len(self.pending)}
            )

    async def close(self, release: bool) -> None:
        await self._tasks.cancel_all()
        if release and not self.lost:
            try:
                await self.cluster.backend.release(self.lease)
            except BackendError:
                pass  # it expires on its own


_ENCODER = msgspec.msgpack.Encoder()
