"""Signalling served through another node: the WebSocket on one node (the front), the stage on another
(the host). We serve through rather than redirect so that any node can take a client (behind any load
balancer) and so that WebSocket fan-out, the costly part of a big audience, spreads over the nodes;
the media still goes straight to the host, whose addresses are in the SDP.

Front: after a ``join`` for a stage hosted elsewhere, the connection's frames go, untouched, to the
host (``forward``); what the host sends comes back and goes through the connection's own outbox (so
the slow-reader policy applies where the socket is).
Host: a ``RemoteConnection`` per relayed client, fed with its frames; everything else is the ordinary
``Connection``: the same dispatch, permissions, replies and events. A broadcast to the many relayed
clients of one front is one item naming all of them: encoded once, sent once per front.

Between two nodes, messages travel over the backend's node inboxes (Redis PUBLISH), batched per loop
turn and in order (one sender task per destination). Items::

    front -> host  ["f", conn_id, frame]         a client frame (str: text, bytes: binary)
                   ["c", conn_id]                the client went away
    host -> front  ["o", [conn_id, ...], bytes]  a message for these clients (msgpack)
                   ["x", conn_id, code, reason]  close this client after what was sent

The relay is at most once: when a node's inbox is lost (Redis outage) or a peer node stops beating,
the relayed clients are closed with 1012 and reconnect by themselves; nothing is silently skipped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import TYPE_CHECKING, Any

import msgpack

from media.tasks import OwnedTasks
from server import wire
from server.backend import BackendClosed, BackendError, BackendUnavailable
from server.closecodes import CloseCode
from server.routing.ports import FrontClient, Place, RemoteClient
from server.wire import Outgoing

if TYPE_CHECKING:
    from server.backend.base import Inbox

log = logging.getLogger(__name__)

RETRY_MIN_S, RETRY_MAX_S = 0.1, 2.0


class Relay:
    def __init__(self, cluster: Place) -> None:
        self.cluster = cluster
        self.node_id = cluster.node_id
        self.connected = False
        self.fronted: dict[str, FrontClient] = {}  # conn id -> a client here of a stage elsewhere
        self.remotes: dict[str, RemoteClient] = {}  # conn id -> a client elsewhere of a stage here
        self._ids = itertools.count(1)
        self._queues: dict[str, list[Any]] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._tasks = OwnedTasks(log, "relay")
        self._inbox: Inbox | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            self._inbox = await self.cluster.backend.open_inbox(self.node_id)
            self.connected = True
        except BackendUnavailable:
            self._inbox = None
        self._tasks.supervise("inbox listener", self._listen)

    async def close(self) -> None:
        for conn in list(self.fronted.values()):
            await conn.close(1001, "node shutting down")
        for remote in list(self.remotes.values()):
            remote.drop()
        await self._flush()
        await self._tasks.cancel_all()
        if self._inbox is not None:
            await self._inbox.aclose()

    async def _flush(self) -> None:
        """What is queued for other nodes (the 1001 closes of a shutdown) goes before we stop."""
        try:
            async with asyncio.timeout(1.0):
                for node_id in list(self._queues):
                    batch = self._queues.pop(node_id)
                    if batch:
                        await self.cluster.backend.send(node_id, self._packed(batch))
        except (TimeoutError, BackendError) as exc:
            left = sum(len(batch) for batch in self._queues.values())
            log.warning(
                "relay messages not sent at shutdown: their clients reconnect",
                extra={"node": self.node_id, "error": repr(exc), "left": left},
            )

    async def _listen(self) -> None:
        delay = RETRY_MIN_S
        while True:
            if self._inbox is None:
                try:
                    self._inbox = await self.cluster.backend.open_inbox(self.node_id)
                except BackendUnavailable:
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, RETRY_MAX_S)
                    continue
                except BackendClosed:
                    return
                self.connected = True
                delay = RETRY_MIN_S
                log.info("relay inbox open", extra={"node": self.node_id})
            try:
                async for payload in self._inbox:
                    self._on_batch(payload)
                return  # the backend was closed
            except BackendUnavailable:
                log.warning("relay inbox lost: relayed clients must reconnect", extra={"node": self.node_id})
            except BackendClosed:
                return
            self.connected = False
            self._inbox = None
            self.cluster.set_unavailable()
            self._drop_all()

    def _drop_all(self) -> None:
        """Messages may have been lost both ways: every relayed client starts again."""
        for conn in list(self.fronted.values()):
            conn.close_after_flush(CloseCode.RELAY_LOST, "relay to the stage's node lost; reconnect")
        self.fronted.clear()
        self._queues.clear()
        for remote in list(self.remotes.values()):
            # Tell its front (if Redis still carries messages: the inbox may have been given up on
            # while this loop was busy): a front that is not told would keep a client that gets nothing.
            remote.close_after_flush(CloseCode.RELAY_LOST, "relay to the stage's node lost; reconnect")

    async def check_peers(self) -> None:
        """Close relayed clients whose other node stopped beating (killed, or cut off)."""
        hosts = {getattr(c, "upstream", None) for c in self.fronted.values()}
        fronts = {r.front for r in self.remotes.values()}
        peers = {p for p in hosts | fronts if p}
        if not peers:
            return
        try:
            alive = await self.cluster.backend.alive_nodes(peers)
        except BackendError as exc:
            log.warning("peer liveness unreadable: checked again next beat", extra={"error": repr(exc)})
            return
        for dead in peers - alive:
            log.warning("peer node stopped beating", extra={"peer": dead})
            self._forget_peer(dead)

    def _forget_peer(self, peer: str) -> None:
        for conn_id, conn in list(self.fronted.items()):
            if getattr(conn, "upstream", None) == peer:
                del self.fronted[conn_id]
                conn.close_after_flush(CloseCode.RELAY_LOST, "the stage's node is gone; reconnect")
        for remote in list(self.remotes.values()):
            if remote.front == peer:
                remote.drop()
        self._queues.pop(peer, None)

    # --- front side ----------------------------------------------------------------------------

    def attach(self, conn: FrontClient, host: str) -> str:
        if not self.connected:
            raise BackendUnavailable("relay inbox not connected")
        conn_id = f"{self.node_id}.{next(self._ids)}"
        self.fronted[conn_id] = conn
        conn.upstream = host
        conn.relay_id = conn_id
        return conn_id

    def forward(self, conn: FrontClient, frame: str | bytes) -> None:
        if conn.relay_id in self.fronted and conn.upstream:
            self.enqueue(conn.upstream, ["f", conn.relay_id, frame])

    def detach(self, conn: FrontClient) -> None:
        if self.fronted.pop(conn.relay_id or "", None) is not None and conn.upstream:
            self.enqueue(conn.upstream, ["c", conn.relay_id])

    # --- host side -----------------------------------------------------------------------------

    def to_front(self, front: str, conn_id: str, outgoing: Outgoing) -> None:
        queue = self._queues.get(front)
        if queue and queue[-1][0] == "o" and queue[-1][2] is outgoing:
            queue[-1][1].append(conn_id)  # the same broadcast: one item for all its recipients here
        else:
            self.enqueue(front, ["o", [conn_id], outgoing])

    # --- both ----------------------------------------------------------------------------------

    def enqueue(self, node_id: str, item: list[Any]) -> None:
        queue = self._queues.get(node_id)
        if queue is None:
            queue = self._queues[node_id] = []
        queue.append(item)
        wake = self._wakes.get(node_id)
        if wake is None:
            wake = self._wakes[node_id] = asyncio.Event()
            self._tasks.supervise(f"sender to {node_id}", lambda: self._sender(node_id, wake))
        wake.set()

    async def _sender(self, node_id: str, wake: asyncio.Event) -> None:
        backend = self.cluster.backend
        while True:
            await wake.wait()
            wake.clear()
            await asyncio.sleep(0)  # let this loop turn's other frames join the batch
            batch = self._queues.pop(node_id, None)
            if not batch:
                continue
            try:
                await backend.send(node_id, self._packed(batch))
            except BackendUnavailable:
                log.warning(
                    "relay send failed: that node's relayed clients reconnect",
                    extra={"peer": node_id, "items": len(batch)},
                )
                self.cluster.set_unavailable()
                self._forget_peer(node_id)
            except BackendClosed:
                return

    def _packed(self, batch: list[Any]) -> bytes:
        for item in batch:
            if item[0] == "o":
                item[2] = item[2].encoded(True)
        packed: bytes = msgpack.packb([self.node_id, batch], use_bin_type=True)
        return packed

    def _on_batch(self, payload: bytes) -> None:
        try:
            sender, items = msgpack.unpackb(payload, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            log.error("unreadable relay message", extra={"node": self.node_id})
            return
        for item in items:
            try:
                self._on_item(sender, item)
            except Exception:
                log.exception("relay item failed", extra={"peer": sender})

    def _on_item(self, sender: str, item: list[Any]) -> None:
        match item:
            case ["o", list(conn_ids), bytes(data)]:
                outgoing = Outgoing.from_msgpack(data)
                for conn_id in conn_ids:
                    conn = self.fronted.get(conn_id)
                    if conn is not None:
                        conn.send(outgoing)
            case ["x", str(conn_id), int(code), str(reason)]:
                conn = self.fronted.pop(conn_id, None)
                if conn is not None:
                    conn.close_after_flush(code, reason)
            case ["f", str(conn_id), str() | bytes() as frame]:
                remote = self.remotes.get(conn_id)
                if remote is None:
                    remote = self._open_remote(sender, conn_id, frame)
                if remote is not None:
                    remote.feed(frame)
            case ["r", str(identity)]:
                self.cluster.host.revoke_here(identity)
            case ["e", str(identity), str(erasure_id), str(by), str(capacity)]:
                self.cluster.host.erased_elsewhere(identity, erasure_id, by, capacity)
            case ["n", str(identity), str(name)]:
                self.cluster.host.rename_here(identity, name)
            case ["c", str(conn_id)]:
                remote = self.remotes.get(conn_id)
                if remote is not None:
                    remote.drop()
            case _:
                log.error("unknown relay item", extra={"peer": sender})

    def _open_remote(self, front: str, conn_id: str, frame: str | bytes) -> RemoteClient | None:
        """A new relayed client starts with its join; anything else means we lost track of it."""
        try:
            first = wire.decode(frame, self.cluster.config.max_depth)
        except wire.WireError:
            first = None
        if not isinstance(first, wire.Join) or self.cluster.open_remote is None:
            self.enqueue(front, ["x", conn_id, CloseCode.RELAY_LOST, "relay reset; reconnect"])
            return None
        remote = self.cluster.open_remote(front, conn_id)
        self.remotes[conn_id] = remote
        self._tasks.spawn(remote.run())
        return remote
