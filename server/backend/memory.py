"""The embedded backend: the same semantics as Redis, in this process, with nothing to set up.

State lives in a ``MemoryStore``; several ``MemoryBackend`` instances may share one store (the
"nodes" of an in-process test), each closing only its own subscriptions and inboxes. Every method
runs to completion without awaiting, so each is atomic on the event loop. Time is the store's ``clock``
(injectable: tests move it instead of sleeping). Values are msgpack round-tripped as in Redis, so
what comes back is what Redis would give back (tuples become lists, unserializable info fails).
"""

from __future__ import annotations

import asyncio
import bisect
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import msgpack

from server.backend.base import (
    DEFAULT_INBOX_LIMIT,
    DEFAULT_MAX_LOG_ENTRIES,
    Backend,
    BackendClosed,
    Conflict,
    Inbox,
    Lease,
    LeaseLost,
    OutOfOrder,
    Owner,
    check_inbox_limit,
    check_index,
    check_rate,
    check_seq,
    check_ttl,
    check_version,
)
from server.backend.inbox import QueuedInbox

_BATCH = 256  # entries a subscription copies out of the log at a time
_SWEEP_S = 60.0  # how often idle rate-limit keys are forgotten


def _seq_of(entry: tuple[int, bytes]) -> int:
    return entry[0]


@dataclass(slots=True)
class _Log:
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    waiters: set[asyncio.Future[None]] = field(default_factory=set)

    @property
    def last(self) -> int:
        return self.entries[-1][0] if self.entries else 0

    def index_after(self, seq: int) -> int:
        return bisect.bisect_right(self.entries, seq, key=_seq_of)

    def wake(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)


@dataclass(slots=True)
class _Held:
    lease: Lease
    deadline: float


class _MemoryInbox(QueuedInbox):
    def __init__(self, backend: MemoryBackend, node_id: str, limit: int) -> None:
        super().__init__(limit)
        self._backend = backend
        self.node_id = node_id

    async def aclose(self) -> None:
        self._backend._forget(self)


class MemoryStore:
    """The shared state of in-process backends. Not thread-safe: one event loop."""

    def __init__(
        self, clock: Callable[[], float] = time.time, max_log_entries: int = DEFAULT_MAX_LOG_ENTRIES
    ) -> None:
        if max_log_entries < 1:
            raise ValueError("max_log_entries must be at least 1")
        self.clock = clock
        self.max_log_entries = max_log_entries
        # Trim in steps of 1% (like XADD MAXLEN ~): at least N entries are kept, about N at most.
        self.trim_slack = max_log_entries // 100
        self.leases: dict[str, _Held] = {}
        self.heartbeats: dict[str, float] = {}  # node id -> deadline
        self.urls: dict[str, str] = {}  # node id -> its public URL, from its last beat
        self.presence: dict[str, dict[str, tuple[str, bytes]]] = {}  # stage -> pid -> (node, info)
        self.logs: dict[str, _Log] = {}
        self.rates: dict[str, tuple[float, deque[float]]] = {}  # key -> (window, times of hits)
        self.next_sweep = 0.0
        self.bans: dict[str, dict[str, bytes]] = {}
        self.revoked: dict[str, bytes] = {}
        self.states: dict[str, bytes] = {}
        self.ledger_heads: dict[tuple[str, str], bytes] = {}  # (stage, session) -> signed head
        self.clubs: dict[str, tuple[int, bytes]] = {}  # club id -> (version, payload)
        self.people_log: list[bytes] = []  # the people ledger's entries, index = position
        self.inboxes: dict[str, set[_MemoryInbox]] = {}  # node id -> its open inboxes (any backend's)

    def holds(self, stage_id: str, lease: Lease) -> bool:
        """Whether ``lease`` is the one holding ``stage_id`` now (the fence of a write)."""
        held = self.held(stage_id)
        return held is not None and held.lease.token == lease.token

    def held(self, stage_id: str) -> _Held | None:
        held = self.leases.get(stage_id)
        if held is not None and held.deadline <= self.clock():
            del self.leases[stage_id]
            return None
        return held

    def alive(self, node_id: str) -> bool:
        deadline = self.heartbeats.get(node_id)
        return deadline is not None and deadline > self.clock()

    def log(self, stage_id: str) -> _Log:
        log = self.logs.get(stage_id)
        if log is None:
            log = self.logs[stage_id] = _Log()
        return log


class MemoryBackend(Backend):
    """In-process backend (the embedded default). ``MemoryBackend(store)`` shares ``store``'s state;
    ``inbox_limit`` bounds each of its inboxes' unread messages."""

    def __init__(self, store: MemoryStore | None = None, *, inbox_limit: int = DEFAULT_INBOX_LIMIT) -> None:
        check_inbox_limit(inbox_limit)
        self.store = store if store is not None else MemoryStore()
        self.inbox_limit = inbox_limit
        self._closed = False
        self._waiters: set[asyncio.Future[None]] = set()
        self._inboxes: set[_MemoryInbox] = set()

    def _open(self) -> MemoryStore:
        if self._closed:
            raise BackendClosed("backend is closed")
        return self.store

    # --- stage registry ------------------------------------------------------------------------

    async def claim(self, stage_id: str, node_id: str, node_url: str, ttl_ms: int) -> Lease | None:
        check_ttl(ttl_ms)
        store = self._open()
        if store.held(stage_id) is not None:
            return None
        lease = Lease(stage_id, node_id, node_url, secrets.token_hex(8), ttl_ms)
        store.leases[stage_id] = _Held(lease, store.clock() + ttl_ms / 1000)
        return lease

    async def renew(self, lease: Lease) -> bool:
        store = self._open()
        held = store.held(lease.stage_id)
        if held is None or held.lease.token != lease.token:
            return False
        held.deadline = store.clock() + lease.ttl_ms / 1000
        return True

    async def release(self, lease: Lease) -> bool:
        store = self._open()
        held = store.held(lease.stage_id)
        if held is None or held.lease.token != lease.token:
            return False
        del store.leases[lease.stage_id]
        return True

    async def owner(self, stage_id: str) -> Owner | None:
        held = self._open().held(stage_id)
        if held is None:
            return None
        return Owner(held.lease.node_id, held.lease.node_url, held.deadline)

    # --- presence ------------------------------------------------------------------------------

    async def heartbeat(self, node_id: str, ttl_ms: int, url: str = "") -> bool:
        check_ttl(ttl_ms)
        store = self._open()
        was_alive = store.alive(node_id)
        store.heartbeats[node_id] = store.clock() + ttl_ms / 1000
        store.urls[node_id] = url
        return was_alive

    async def nodes(self) -> set[str]:
        store = self._open()
        return {node_id for node_id in store.heartbeats if store.alive(node_id)}

    async def node_urls(self) -> dict[str, str]:
        store = self._open()
        return {n: url for n, url in store.urls.items() if url and store.alive(n)}

    async def alive_nodes(self, node_ids: Collection[str]) -> set[str]:
        store = self._open()
        return {node_id for node_id in node_ids if store.alive(node_id)}

    async def presence_join(
        self, stage_id: str, participant_id: str, node_id: str, info: dict[str, Any]
    ) -> None:
        packed = msgpack.packb(info)
        self._open().presence.setdefault(stage_id, {})[participant_id] = (node_id, packed)

    async def presence_leave(self, stage_id: str, participant_id: str, node_id: str) -> bool:
        entries = self._open().presence.get(stage_id, {})
        entry = entries.get(participant_id)
        if entry is None or entry[0] != node_id:
            return False
        del entries[participant_id]
        return True

    async def presence(self, stage_id: str) -> dict[str, dict[str, Any]]:
        store = self._open()
        entries = store.presence.get(stage_id, {})
        for pid, (node_id, _) in list(entries.items()):
            if not store.alive(node_id):
                del entries[pid]  # the node's heartbeat lapsed: it is gone, or must join again
        return {pid: msgpack.unpackb(info) for pid, (_, info) in entries.items()}

    # --- event log -----------------------------------------------------------------------------

    async def append(self, stage_id: str, seq: int, payload: bytes, *, lease: Lease | None = None) -> None:
        check_seq(seq)
        store = self._open()
        if lease is not None and not store.holds(stage_id, lease):
            raise LeaseLost(f"lease on stage {stage_id} lost: append of seq {seq} refused")
        log = store.log(stage_id)
        if seq <= log.last:
            i = log.index_after(seq) - 1
            if i >= 0 and log.entries[i] == (seq, payload):
                return  # a retry of an append that succeeded
            raise OutOfOrder(f"stage {stage_id}: seq {seq} is not above the last one, {log.last}")
        log.entries.append((seq, bytes(payload)))
        excess = len(log.entries) - store.max_log_entries
        if excess > store.trim_slack:
            del log.entries[:excess]
        log.wake()

    async def read(self, stage_id: str, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        log = self._open().logs.get(stage_id)
        if log is None:
            return []
        i = log.index_after(after_seq)
        return log.entries[i : i + limit]

    async def last_seq(self, stage_id: str) -> int:
        log = self._open().logs.get(stage_id)
        return 0 if log is None else log.last

    async def subscribe(self, stage_id: str, after_seq: int = 0) -> AsyncGenerator[tuple[int, bytes], None]:
        last = after_seq
        while not self._closed:
            log = self.store.log(stage_id)
            i = log.index_after(last)
            batch = log.entries[i : i + _BATCH]  # a copy: trimming may shift the list while we yield
            if not batch:
                await self._wait(log)
                continue
            for entry in batch:
                last = entry[0]
                yield entry

    async def _wait(self, log: _Log) -> None:
        waiter = asyncio.get_running_loop().create_future()
        log.waiters.add(waiter)
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            log.waiters.discard(waiter)
            self._waiters.discard(waiter)

    # --- stage state -----------------------------------------------------------------------------

    async def save_state(self, stage_id: str, payload: bytes, *, lease: Lease) -> None:
        store = self._open()
        if not store.holds(stage_id, lease):
            raise LeaseLost(f"lease on stage {stage_id} lost: state not saved")
        store.states[stage_id] = bytes(payload)

    async def load_state(self, stage_id: str) -> bytes | None:
        return self._open().states.get(stage_id)

    # --- clubs ---------------------------------------------------------------------------------

    async def load_club(self, club_id: str) -> tuple[bytes, int] | None:
        stored = self._open().clubs.get(club_id)
        return None if stored is None else (stored[1], stored[0])

    async def save_club(self, club_id: str, payload: bytes, *, expected_version: int | None) -> int:
        check_version(expected_version)
        store = self._open()
        stored = store.clubs.get(club_id)
        version = 0 if stored is None else stored[0]
        if version != (expected_version or 0):
            if stored is not None and version == (expected_version or 0) + 1 and stored[1] == payload:
                return version  # a retry of a save that succeeded
            raise Conflict(f"club {club_id} is at version {version or None}, not {expected_version}")
        store.clubs[club_id] = (version + 1, bytes(payload))
        return version + 1

    async def list_clubs(self) -> list[str]:
        return sorted(self._open().clubs)

    # --- node messaging ------------------------------------------------------------------------

    async def send(self, node_id: str, payload: bytes) -> None:
        inboxes = self._open().inboxes.get(node_id)
        if not inboxes:
            return
        payload = bytes(payload)  # the caller may reuse its buffer; Redis would have copied it
        for inbox in list(inboxes):
            inbox.deliver(payload)
            if inbox.broken:  # overflowed: Redis would have dropped this subscriber
                inboxes.discard(inbox)

    async def open_inbox(self, node_id: str) -> Inbox:
        store = self._open()
        inbox = _MemoryInbox(self, node_id, self.inbox_limit)
        store.inboxes.setdefault(node_id, set()).add(inbox)
        self._inboxes.add(inbox)
        return inbox

    def _forget(self, inbox: _MemoryInbox) -> None:
        inbox.finish()
        self._inboxes.discard(inbox)
        inboxes = self.store.inboxes.get(inbox.node_id)
        if inboxes is not None:
            inboxes.discard(inbox)
            if not inboxes:
                del self.store.inboxes[inbox.node_id]

    # --- rate limits ---------------------------------------------------------------------------

    async def hit(self, key: str, window_s: float, limit: int) -> tuple[bool, float]:
        check_rate(window_s, limit)
        store = self._open()
        now = store.clock()
        if now >= store.next_sweep:
            store.next_sweep = now + _SWEEP_S
            for k, (w, times) in list(store.rates.items()):
                if not times or times[-1] <= now - w:
                    del store.rates[k]
        _, times = store.rates.setdefault(key, (window_s, deque()))
        store.rates[key] = (window_s, times)
        while times and times[0] <= now - window_s:
            times.popleft()
        if len(times) < limit:
            times.append(now)
            return True, 0.0
        return False, times[-limit] + window_s - now

    # --- recording evidence ----------------------------------------------------------------------

    async def put_ledger_head(self, stage_id: str, session_id: str, payload: bytes) -> None:
        self._open().ledger_heads[(stage_id, session_id)] = bytes(payload)

    async def ledger_head(self, stage_id: str, session_id: str) -> bytes | None:
        return self._open().ledger_heads.get((stage_id, session_id))

    # --- people ledger -------------------------------------------------------------------------

    async def people_append(self, index: int, payload: bytes) -> bool:
        check_index(index)
        log = self._open().people_log
        if len(log) == index:
            log.append(bytes(payload))
            return True
        return index < len(log) and log[index] == payload

    async def people_read(self, start: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        check_index(start)
        log = self._open().people_log
        return list(enumerate(log[start : start + max(limit, 0)], start))

    async def people_count(self) -> int:
        return len(self._open().people_log)

    # --- bans and revocations ------------------------------------------------------------------

    async def ban(self, stage_id: str, identity: str, reason: str) -> None:
        store = self._open()
        store.bans.setdefault(stage_id, {})[identity] = msgpack.packb({"reason": reason, "at": store.clock()})

    async def is_banned(self, stage_id: str, identity: str) -> bool:
        return identity in self._open().bans.get(stage_id, {})

    async def revoke(self, identity: str) -> None:
        store = self._open()
        store.revoked[identity] = msgpack.packb({"at": store.clock()})

    async def is_revoked(self, identity: str) -> bool:
        return identity in self._open().revoked

    # --- lifecycle -----------------------------------------------------------------------------

    async def ping(self) -> bool:
        return not self._closed

    async def close(self) -> None:
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        for inbox in list(self._inboxes):
            self._forget(inbox)
