"""The Redis backend: redis.asyncio (hiredis parser), msgpack values, the event log in Streams.

Key layout and the reasons for it are in the package docstring. Every script touches keys of one
hash tag only, so all of this works on a Redis Cluster slot by slot. Connection errors become
``BackendUnavailable``; the client retries a command once on a dropped connection, which is safe
because every operation is idempotent (a claim, hit or heartbeat carries a token that recognises
its own earlier attempt). Node messages are the exception: they go over a second client, the bus,
that never retries (at most once; see ``redis_inbox.py``).

``RedisBackend`` is built by concern: its connections and ``_call`` (``redis_client.py``), the Lua
scripts (``redis_scripts.py``), the event log and the stage's state (``redis_log.py``); this module
has the rest: leases, presence, clubs, node messages, rate limits, bans and revocations.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Collection
from typing import Any

import msgpack

from server.backend import keys
from server.backend.base import (
    Backend,
    BackendClosed,
    BackendUnavailable,
    Conflict,
    Inbox,
    Lease,
    Owner,
    check_index,
    check_rate,
    check_ttl,
    check_version,
)
from server.backend.redis_inbox import RedisInbox
from server.backend.redis_log import RedisLog
from server.backend.redis_scripts import lease_value


class RedisBackend(RedisLog, Backend):
    """Backend on a Redis server (``redis://host:port/db``), shared by every node.

    ``block_ms`` is how long a subscription's XREAD waits before asking again; ``command_timeout``
    bounds every other call (and XREAD beyond its block). ``name`` is every connection's CLIENT
    SETNAME (to find them in CLIENT LIST). An inbox holds at most ``inbox_limit`` unread messages, and
    counts its connection lost after ``2 * inbox_ping_s`` without hearing from Redis.
    """

    # --- stage registry ------------------------------------------------------------------------

    async def claim(self, stage_id: str, node_id: str, node_url: str, ttl_ms: int) -> Lease | None:
        check_ttl(ttl_ms)
        lease = Lease(stage_id, node_id, node_url, secrets.token_hex(8), ttl_ms)
        async with self._call():
            got = await self._claim(keys=[keys.owner(stage_id)], args=[lease_value(lease), ttl_ms])
        return lease if got == 1 else None

    async def renew(self, lease: Lease) -> bool:
        async with self._call():
            done = await self._renew(
                keys=[keys.owner(lease.stage_id)], args=[lease_value(lease), lease.ttl_ms]
            )
        return bool(done == 1)

    async def release(self, lease: Lease) -> bool:
        async with self._call():
            done = await self._release(keys=[keys.owner(lease.stage_id)], args=[lease_value(lease)])
        return bool(done == 1)

    async def owner(self, stage_id: str) -> Owner | None:
        async with self._call():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(keys.owner(stage_id))
                pipe.pttl(keys.owner(stage_id))
                value, pttl = await pipe.execute()
        if value is None or pttl < 0:
            return None
        node_id, node_url, _token = msgpack.unpackb(value)
        return Owner(node_id, node_url, time.time() + pttl / 1000)  # Redis's TTL, on this node's clock

    # --- presence ------------------------------------------------------------------------------

    async def heartbeat(self, node_id: str, ttl_ms: int, url: str = "") -> bool:
        check_ttl(ttl_ms)
        beat = secrets.token_bytes(8)
        async with self._call():
            if url:  # the registry of URLs: one small hash read per beat, not a SCAN of every key
                await self._redis.hset(keys.node_urls(), node_id, url)
            previous = await self._redis.set(keys.node(node_id), beat, px=ttl_ms, get=True)
        # ``previous == beat``: a retry whose first attempt landed; we cannot tell what was there.
        return previous is not None and previous != beat

    async def nodes(self) -> set[str]:
        # SCAN, not KEYS: it never blocks Redis; node keys are few (one per node).
        pattern = keys.node("*")
        found: set[str] = set()
        async with self._call():
            async for key in self._redis.scan_iter(match=pattern, count=1000):
                name = key.decode() if isinstance(key, bytes) else str(key)
                found.add(name.split("{node:", 1)[1].split("}", 1)[0])
        return found

    async def node_urls(self) -> dict[str, str]:
        async with self._call():
            registered = await self._redis.hgetall(keys.node_urls())
            urls = {_text(node_id): _text(url) for node_id, url in registered.items()}
            alive = await self._alive(set(urls))
            gone = set(urls) - alive
            if gone:
                # A node that dies leaves its entry: the first reader to see its beat gone drops it (a
                # node that was only late puts it back at its next beat).
                await self._redis.hdel(keys.node_urls(), *sorted(gone))
        return {node_id: url for node_id, url in urls.items() if node_id in alive}

    async def alive_nodes(self, node_ids: Collection[str]) -> set[str]:
        async with self._call():
            return await self._alive(set(node_ids))

    async def _alive(self, node_ids: set[str]) -> set[str]:
        """One round trip; a pipeline, not MGET: each node's key has its own hash tag (slot)."""
        if not node_ids:
            return set()
        nodes = sorted(node_ids)
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in nodes:
                pipe.exists(keys.node(node_id))
            found = await pipe.execute()
        return {node_id for node_id, exists in zip(nodes, found, strict=True) if exists}

    async def presence_join(
        self, stage_id: str, participant_id: str, node_id: str, info: dict[str, Any]
    ) -> None:
        value = msgpack.packb([node_id, info])
        async with self._call():
            await self._redis.hset(keys.presence(stage_id), participant_id, value)

    async def presence_leave(self, stage_id: str, participant_id: str, node_id: str) -> bool:
        key = keys.presence(stage_id)
        async with self._call():
            value = await self._redis.hget(key, participant_id)
            if value is None or msgpack.unpackb(value)[0] != node_id:
                return False
            removed = await self._presence_leave(keys=[key], args=[participant_id, value])
        return bool(removed)

    async def presence(self, stage_id: str) -> dict[str, dict[str, Any]]:
        key = keys.presence(stage_id)
        async with self._call():
            raw: Any = await self._redis.hgetall(key)  # redis-py's stubs do not know decode_responses
            entries = {pid.decode(): (value, msgpack.unpackb(value)) for pid, value in raw.items()}
            alive = await self._alive({node_id for _, (node_id, _) in entries.values()})
            stale = [(pid, value) for pid, (value, (node_id, _)) in entries.items() if node_id not in alive]
            if stale:  # the node's heartbeat lapsed: drop its entries unless they changed meanwhile
                await self._presence_leave(keys=[key], args=[x for pair in stale for x in pair])
        return {pid: info for pid, (_, (node_id, info)) in entries.items() if node_id in alive}

    # --- clubs ---------------------------------------------------------------------------------

    async def load_club(self, club_id: str) -> tuple[bytes, int] | None:
        async with self._call():
            found: Any = await self._redis.hmget(keys.club(club_id), ["v", "data"])  # bytes: no decoding
        version, data = found
        if version is None or data is None:
            return None
        return bytes(data), int(version)

    async def save_club(self, club_id: str, payload: bytes, *, expected_version: int | None) -> int:
        check_version(expected_version)
        async with self._call():
            saved, version = await self._save_club(
                keys=[keys.club(club_id)], args=[expected_version or 0, payload]
            )
            if saved:
                # Another slot, so not in the script: a save that fails here is listed by the next one.
                await self._redis.sadd(keys.clubs(), club_id)
        if not saved:
            raise Conflict(f"club {club_id} is at version {version or None}, not {expected_version}")
        return int(version)

    async def list_clubs(self) -> list[str]:
        async with self._call():
            ids: Any = await self._redis.smembers(keys.clubs())
        return sorted(i.decode() for i in ids)

    # --- node messaging ------------------------------------------------------------------------

    async def send(self, node_id: str, payload: bytes) -> None:
        try:
            async with self._call():
                await self._bus.publish(keys.inbox(node_id), payload)
        except BackendUnavailable:
            await self._drop_idle_bus_connections()
            raise

    async def _drop_idle_bus_connections(self) -> None:
        """After an outage the pool's idle connections point at a Redis that is gone, and redis-py's
        check on checkout does not see it: the first PUBLISH on each would fail (and is never retried).
        Dropping them makes the next send connect afresh. Called when an inbox (re)opens, which is
        how a node learns that Redis is back, and after a failed send."""
        with contextlib.suppress(Exception):
            await self._bus.connection_pool.disconnect(inuse_connections=False)

    async def open_inbox(self, node_id: str) -> Inbox:
        try:
            async with self._call():
                inbox = await RedisInbox.open(
                    self._bus,
                    keys.inbox(node_id),
                    limit=self.inbox_limit,
                    ping_s=self.inbox_ping_s,
                    on_close=self._inboxes.discard,
                )
        except BackendUnavailable:
            if self._closed.is_set():  # close() dropped the connection under us
                raise BackendClosed("backend is closed") from None
            raise
        if self._closed.is_set():  # closed while we subscribed: close() did not see this inbox
            await inbox.aclose()
            raise BackendClosed("backend is closed")
        self._inboxes.add(inbox)
        await self._drop_idle_bus_connections()
        return inbox

    # --- rate limits ---------------------------------------------------------------------------

    async def hit(self, key: str, window_s: float, limit: int) -> tuple[bool, float]:
        check_rate(window_s, limit)
        member = secrets.token_bytes(8)
        async with self._call():
            allowed, retry_us = await self._hit(
                keys=[keys.rate(key)], args=[max(1, round(window_s * 1_000_000)), limit, member]
            )
        return bool(allowed), retry_us / 1_000_000

    # --- recording evidence ----------------------------------------------------------------------

    async def put_ledger_head(self, stage_id: str, session_id: str, payload: bytes) -> None:
        async with self._call():
            await self._redis.hset(keys.ledger_heads(stage_id), session_id, payload)

    async def ledger_head(self, stage_id: str, session_id: str) -> bytes | None:
        async with self._call():
            value: Any = await self._redis.hget(keys.ledger_heads(stage_id), session_id)
        return None if value is None else bytes(value)

    # --- people ledger -------------------------------------------------------------------------

    async def people_append(self, index: int, payload: bytes) -> bool:
        check_index(index)
        async with self._call():
            done: Any = await self._people_append(keys=[keys.people_ledger()], args=[index, payload])
        return bool(done)

    async def people_read(self, start: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        check_index(start)
        if limit < 1:
            return []
        async with self._call():
            values: Any = await self._redis.lrange(keys.people_ledger(), start, start + limit - 1)
        return [(start + i, bytes(v)) for i, v in enumerate(values)]

    async def people_count(self) -> int:
        async with self._call():
            return int(await self._redis.llen(keys.people_ledger()))

    # --- bans and revocations ------------------------------------------------------------------

    async def ban(self, stage_id: str, identity: str, reason: str) -> None:
        value = msgpack.packb({"reason": reason, "at": time.time()})
        async with self._call():
            await self._redis.hset(keys.bans(stage_id), identity, value)

    async def is_banned(self, stage_id: str, identity: str) -> bool:
        async with self._call():
            return bool(await self._redis.hexists(keys.bans(stage_id), identity))

    async def revoke(self, identity: str) -> None:
        async with self._call():
            await self._redis.set(keys.revoked(identity), msgpack.packb({"at": time.time()}))

    async def is_revoked(self, identity: str) -> bool:
        async with self._call():
            return bool(await self._redis.exists(keys.revoked(identity)))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
