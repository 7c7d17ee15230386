"""Several nodes on one backend: who hosts which stage, the shared event log, and liveness.

One node hosts a stage: its domain state, its media and its recorder. It holds the stage's lease
(``Backend.claim``) and renews it every third of its TTL; it appends every event, numbered, to the
stage's shared log, fenced by that lease, and saves the stage's durable state (``rooms.durable``) so
that another node can take the stage over. Any node accepts a participant's WebSocket: if it does
not host the stage, it relays the signalling to the node that does (``server.relay``); the media goes
straight to the hosting node (the SDP carries its addresses). See docs/architecture.md.

The embedded default is the same code on a ``MemoryBackend``: one process, no Redis.

Failure behaviour
    Redis outage: the hosting node keeps its stages (media, local clients, commands); events wait in
    order in ``StageLog`` and are written when Redis is back (the log's ``seq`` makes a retried append
    a no-op: no loss, no duplicates). A lease that lapsed meanwhile is claimed again; if another node
    took the stage, this node lets it go (its clients are told to reconnect, 4010). Relayed clients
    lose their relay and reconnect (1012).
    Node death: its lease expires after ``lease_ttl_ms``; the next join restores the stage from its
    durable state on the node that receives it, and the log continues after the last written ``seq``.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import msgpack
import msgspec

from media.tasks import OwnedTasks
from rooms import durable
from rooms.errors import DomainError, StageExists, StageNotFound
from rooms.events import Event, ParticipantJoined, ParticipantLeft
from server.backend import (
    Backend,
    BackendError,
    BackendUnavailable,
    Lease,
    LeaseLost,
    MemoryBackend,
    OutOfOrder,
    Owner,
    RedisBackend,
)
from server.config import Config

if TYPE_CHECKING:
    from server.relay import Relay
    from server.stages import LiveStage, Node

log = logging.getLogger(__name__)

CLOSE_STAGE_MOVED = 4010
SAVE_INTERVAL_S = 0.25  # the durable state is written at most this often (and after every batch)
RETRY_MIN_S, RETRY_MAX_S = 0.1, 2.0


class StageUnavailable(DomainError):
    """The stage's host is gone and its lease has not expired yet, or the backend is unreachable."""

    code = "stage_unavailable"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def make_backend(config: Config) -> Backend:
    if config.redis_url:
        # A dead Redis closes its sockets and is noticed at once; the PING only catches a silent one.
        # 5 s, not 1: a node's loop can be busy for a second or two (a wave of joins), and an inbox
        # given up on for that would send every relayed client away.
        return RedisBackend(config.redis_url, name=f"medstage-{config.node_id}", inbox_ping_s=5.0)
    return MemoryBackend()


class StageLog:
    """A hosted stage's lease, and its events and durable state on their way to the backend.

    ``push`` never blocks and never fails: events wait here, in order, until the backend takes
    them. One task writes, so appends are in ``seq`` order and the state is saved after them.
    """

    def __init__(self, cluster: Cluster, live: LiveStage, lease: Lease) -> None:
        self.cluster = cluster
        self.live = live
        self.lease = lease
        self.pending: deque[tuple[int, bytes]] = deque()
        self.presence: deque[tuple[str, dict[str, Any] | None]] = deque()  # (participant, info or gone)
        self.dirty = True  # the durable state has changed since it was last saved
        self.written = 0  # the last seq the backend has
        self._wake = asyncio.Event()
        self._tasks = OwnedTasks(log, "stage log", stage=live.stage.id)
        self._tasks.spawn(self._write())
        self._tasks.spawn(self._renew())
        self.lost = False

    @property
    def stage_id(self) -> str:
        return self.live.stage.id

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
        person = self.live.stage.participants.get(pid)
        conn = self.live.connections.get(pid)
        via = getattr(conn, "front", None) or self.cluster.node_id
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
        timer: asyncio.TimerHandle | None = None
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
                        if timer is None or timer.cancelled() or timer.when() <= loop.time():
                            timer = loop.call_later(wait, self._wake.set)
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
        packed: bytes = msgpack.packb(durable.durable_state(self.live.stage))
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
        self.cluster.node.spawn(self.cluster.node.let_go(self.live))
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


class Cluster:
    """This node's membership: heartbeat, leases of the stages it hosts, readiness, the relay."""

    def __init__(self, node: Node, config: Config, backend: Backend | None = None) -> None:
        self.node = node
        self.config = config
        self.node_id = config.node_id or "n-" + secrets.token_hex(4)
        self.url = config.url
        self.backend = backend or make_backend(config)
        self.logs: dict[str, StageLog] = {}
        self.relay: Relay | None = None
        self._tasks = OwnedTasks(log, "cluster")
        self._unavailable_at = 0.0
        self._heartbeat_ok = False
        # The live nodes' public URLs (this one's included), refreshed with every beat: where a client
        # whose node dies may go (``joined.nodes``, the ``nodes`` message). ``known_urls`` keeps every
        # one seen: a page loaded from a node that died still comes from a node of ours (CORS).
        self.node_urls: list[str] = [self.url]
        self.known_urls: set[str] = {self.url}

    @property
    def heartbeat_ttl_ms(self) -> int:
        return 3 * self.config.heartbeat_interval_ms

    async def start(self) -> None:
        from server.relay import Relay  # relay imports signalling, which imports this module

        self.relay = Relay(self)
        await self._beat()
        await self.relay.start()
        self._tasks.spawn(self._heartbeat())

    async def close(self) -> None:
        for stage_log in list(self.logs.values()):
            await stage_log.flush(self.config.shutdown_timeout_s / 2)
            await stage_log.close(release=True)
        self.logs.clear()
        if self.relay is not None:
            await self.relay.close()
        await self._tasks.cancel_all()
        await self.backend.close()

    # --- readiness -----------------------------------------------------------------------------

    def set_unavailable(self) -> None:
        self._unavailable_at = time.monotonic()

    async def readiness(self) -> tuple[bool, str]:
        if not await self.backend.ping():
            self.set_unavailable()
            return False, "backend unreachable"
        if self.relay is not None and not self.relay.connected:
            return False, "relay inbox not connected"
        return True, "ok"

    async def _beat(self) -> None:
        try:
            fresh = not await self.backend.heartbeat(self.node_id, self.heartbeat_ttl_ms, self.url)
            if fresh and self._heartbeat_ok:
                log.warning("heartbeat had lapsed", extra={"node": self.node_id})
            self._heartbeat_ok = True
        except BackendUnavailable:
            self._heartbeat_ok = False
            self.set_unavailable()
            return
        await self._refresh_nodes()

    async def _refresh_nodes(self) -> None:
        """Learn the live nodes' URLs; the clients of this node's stages hear of a change at once."""
        try:
            urls = await self.backend.node_urls()
        except BackendError:
            return  # the last known list stays: an outage is not a node's death
        # This node first (a client retries where it is before it goes elsewhere), then the others.
        found = [self.url, *sorted(set(urls.values()) - {self.url})]
        self.known_urls.update(found)
        if found != self.node_urls:
            self.node_urls = found
            self.node.nodes_changed(found)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_ms / 1000)
            await self._beat()
            if self.relay is not None:
                await self.relay.check_peers()

    # --- hosting -------------------------------------------------------------------------------

    async def claim_new(self, stage_id: str) -> Lease:
        """The lease for a stage created here; StageExists if it exists anywhere (live or saved)."""
        try:
            lease = await self.backend.claim(stage_id, self.node_id, self.url, self.config.lease_ttl_ms)
            if lease is None:
                raise StageExists(f"stage {stage_id} already exists")
            if await self.backend.load_state(stage_id) is not None:
                await self.backend.release(lease)
                raise StageExists(f"stage {stage_id} already exists")
        except BackendUnavailable:
            self.set_unavailable()
            raise StageUnavailable("the shared store is unreachable; try again", 1.0) from None
        return lease

    async def find(self, stage_id: str) -> Owner | tuple[Lease, dict[str, Any], int]:
        """Where a stage not hosted here lives: another node (``Owner``), or nowhere, in which case
        this node takes its lease and gets its saved state and last ``seq`` to restore it.
        StageNotFound if it never existed; StageUnavailable while its dead host's lease runs out."""
        backend = self.backend
        try:
            owner = await backend.owner(stage_id)
            if owner is not None and owner.node_id != self.node_id:
                if owner.node_id in await backend.alive_nodes([owner.node_id]):
                    return owner
                wait = max(0.2, owner.expires_at - time.time())
                raise StageUnavailable(f"stage {stage_id} is being moved to another node", round(wait, 1))
            saved = await backend.load_state(stage_id)
            if saved is None:
                raise StageNotFound(f"stage {stage_id} does not exist")
            lease = await backend.claim(stage_id, self.node_id, self.url, self.config.lease_ttl_ms)
            if lease is None:
                raise StageUnavailable(f"stage {stage_id} is being moved to another node", 0.5)
            state = msgpack.unpackb(saved)
            return lease, state, await backend.last_seq(stage_id)
        except BackendUnavailable:
            self.set_unavailable()
            raise StageUnavailable("the shared store is unreachable; try again", 1.0) from None

    def hosting(self, live: LiveStage, lease: Lease) -> StageLog:
        stage_log = StageLog(self, live, lease)
        self.logs[live.stage.id] = stage_log
        return stage_log

    async def stop_hosting(self, stage_id: str, *, release: bool) -> None:
        stage_log = self.logs.pop(stage_id, None)
        if stage_log is not None:
            if release:
                await stage_log.flush(self.config.shutdown_timeout_s / 2)
            await stage_log.close(release)
