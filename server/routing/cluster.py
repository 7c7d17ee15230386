"""Several nodes on one backend: who hosts which stage, the shared event log, and liveness.

One node hosts a stage: its domain state, its media and its recorder. It holds the stage's lease
(``Backend.claim``) and renews it every third of its TTL; it appends every event, numbered, to the
stage's shared log, fenced by that lease, and saves the stage's durable state (``rooms.durable``) so
that another node can take the stage over. Any node accepts a participant's WebSocket: if it does
not host the stage, it relays the signalling to the node that does (``server.routing.relay``); the media goes
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
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import msgpack

from media.tasks import OwnedTasks
from rooms.errors import StageExists, StageNotFound
from rooms.stage import Stage
from server.backend import (
    Backend,
    BackendError,
    BackendUnavailable,
    Lease,
    MemoryBackend,
    Owner,
    RedisBackend,
)
from server.config import Config
from server.routing.errors import StageUnavailable
from server.routing.ports import Host, RemoteFactory
from server.routing.relay import Relay
from server.routing.stagelog import StageLog

log = logging.getLogger(__name__)



def make_backend(config: Config) -> Backend:
    if config.redis_url:
        # A dead Redis closes its sockets and is noticed at once; the PING only catches a silent one.
        # 5 s, not 1: a node's loop can be busy for a second or two (a wave of joins), and an inbox
        # given up on for that would send every relayed client away.
        return RedisBackend(config.redis_url, name=f"medstage-{config.node_id}", inbox_ping_s=5.0)
    return MemoryBackend()


class Cluster:
    """This node's membership: heartbeat, leases of the stages it hosts, readiness, the relay."""

    def __init__(self, host: Host, config: Config, backend: Backend | None = None) -> None:
        self.host = host
        self.config = config
        self.node_id = config.node_id or "n-" + secrets.token_hex(4)
        self.url = config.url
        self.backend = backend or make_backend(config)
        self.logs: dict[str, StageLog] = {}
        self.relay: Relay | None = None
        # set by the layer that makes signalling connections (server/app.py): a relayed client's host side
        self.open_remote: RemoteFactory | None = None
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
        self.relay = Relay(self)
        await self._beat()
        await self.relay.start()
        self._tasks.supervise("heartbeat", self._heartbeat)

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
        except BackendError as exc:
            # The last known list stays: an outage is not a node's death.
            log.debug("node list unreadable", extra={"error": repr(exc)})
            return
        # This node first (a client retries where it is before it goes elsewhere), then the others.
        found = [self.url, *sorted(set(urls.values()) - {self.url})]
        self.known_urls.update(found)
        if found != self.node_urls:
            self.node_urls = found
            self.host.nodes_changed(found)

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

    def hosting(self, stage: Stage, lease: Lease, via: Callable[[str], str | None]) -> StageLog:
        stage_log = StageLog(self, stage, lease, via)
        self.logs[stage.id] = stage_log
        return stage_log

    async def stop_hosting(self, stage_id: str, *, release: bool) -> None:
        stage_log = self.logs.pop(stage_id, None)
        if stage_log is not None:
            if release:
                await stage_log.flush(self.config.shutdown_timeout_s / 2)
            await stage_log.close(release)
