"""The Redis backend: redis.asyncio (hiredis parser), msgpack values, the event log in Streams.

Key layout and the reasons for it are in the package docstring. Every script touches keys of one
hash tag only, so all of this works on a Redis Cluster slot by slot. Connection errors become
``BackendUnavailable``; the client retries a command once on a dropped connection, which is safe
because every operation is idempotent (a claim, hit or heartbeat carries a token that recognises
its own earlier attempt). Node messages are the exception: they go over a second client, the bus,
that never retries (at most once; see ``redis_inbox.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Collection
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

from server.backend import keys
from server.backend.base import (
    DEFAULT_INBOX_LIMIT,
    DEFAULT_MAX_LOG_ENTRIES,
    Backend,
    BackendClosed,
    BackendError,
    BackendUnavailable,
    Conflict,
    Inbox,
    Lease,
    LeaseLost,
    OutOfOrder,
    Owner,
    check_inbox_limit,
    check_rate,
    check_seq,
    check_ttl,
    check_version,
)
from server.backend.redis_inbox import UNAVAILABLE, RedisInbox

log = logging.getLogger(__name__)

_FIELD = b"e"  # the one field of a log entry: the payload

# SET NX PX, or recognise our own claim (a retry whose first attempt succeeded but whose reply was lost).
_CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return 1 end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: log, owner. ARGV: id, payload, maxlen, lease value ('' for none).
# 1 appended, 0 already there (a retry), -1 lease lost, -2 out of order.
_APPEND = """
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then return -1 end
local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[1], 'e', ARGV[2])
if type(added) ~= 'table' or not added.err then return 1 end
if not string.find(added.err, 'equal or smaller', 1, true) then return redis.error_reply(added.err) end
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 1 and found[1][2][2] == ARGV[2] then return 0 end
return -2
"""
# KEYS: state, owner. ARGV: payload, lease value. 1 saved, 0 lease lost.
_SAVE_STATE = """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
# Compare-and-set of a club. KEYS: club. ARGV: expected version (0: must not exist), payload.
# {1, new version} saved (or a retry of the save that made the stored version), {0, stored version}.
_SAVE_CLUB = """
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local expected = tonumber(ARGV[1])
if v ~= expected then
  if v == expected + 1 and redis.call('HGET', KEYS[1], 'data') == ARGV[2] then return {1, v} end
  return {0, v}
end
redis.call('HSET', KEYS[1], 'v', v + 1, 'data', ARGV[2])
return {1, v + 1}
"""
# Compare-and-HDEL: ARGV is field, expected value, field, expected value...
_PRESENCE_LEAVE = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then n = n + redis.call('HDEL', KEYS[1], ARGV[i]) end
end
return n
"""
# Sliding window log in a sorted set, on Redis's clock (one clock for all nodes), in microseconds.
# ARGV: window_us, limit, member (unique per hit). Returns {allowed, retry_after_us}.
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return {1, 0} end
local n = redis.call('ZCARD', KEYS[1])
if n < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
"""


def _lease_value(lease: Lease) -> bytes:
    value: bytes = msgpack.packb([lease.node_id, lease.node_url, lease.token])
    return value


class RedisBackend(Backend):
    """Backend on a Redis server (``redis://host:port/db``), shared by every node.

    ``block_ms`` is how long a subscription's XREAD waits before asking again; ``command_timeout``
    bounds every other call (and XREAD beyond its block). ``name`` is every connection's CLIENT
    SETNAME (to find them in CLIENT LIST). An inbox holds at most ``inbox_limit`` unread messages, and
    counts its connection lost after ``2 * inbox_ping_s`` without hearing from Redis.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "medstage",
        max_log_entries: int = DEFAULT_MAX_LOG_ENTRIES,
        block_ms: int = 2000,
        command_timeout: float = 5.0,
        reconnect_max_s: float = 1.0,
        inbox_limit: int = DEFAULT_INBOX_LIMIT,
        inbox_ping_s: float = 1.0,
    ) -> None:
        if max_log_entries < 1:
            raise ValueError("max_log_entries must be at least 1")
        check_inbox_limit(inbox_limit)
        if inbox_ping_s <= 0:
            raise ValueError(f"inbox_ping_s must be above 0, not {inbox_ping_s}")
        self.max_log_entries = max_log_entries
        self.block_ms = block_ms
        self.command_timeout = command_timeout
        self.reconnect_max_s = reconnect_max_s
        self.inbox_limit = inbox_limit
        self.inbox_ping_s = inbox_ping_s
        self._closed = asyncio.Event()
        self._inboxes: set[RedisInbox] = set()
        # No socket_timeout: with one, redis-py (8.1) sends through asyncio.wait_for, which before
        # Python 3.12 can swallow a cancellation that arrives as the send completes (CPython gh-86296):
        # a cancelled subscription then read on for ever (tests/backend/test_redis.py). Timeouts are
        # ours instead (``_call``, asyncio.timeout); a cancelled read makes redis-py drop the connection.
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url,
            client_name=name,
            socket_timeout=None,
            socket_connect_timeout=min(command_timeout, 2.0),
            socket_keepalive=True,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), retries=1),
        )
        # Node messages: no retry at all (no supported errors, so not even the reconnect redis-py
        # makes before giving up). A retried PUBLISH whose first attempt landed would deliver twice;
        # a Pub/Sub connection re-subscribed behind our back would hide the messages lost meanwhile.
        self._bus: aioredis.Redis = aioredis.Redis.from_url(
            url,
            client_name=name,
            socket_timeout=None,
            socket_connect_timeout=min(command_timeout, 2.0),
            socket_keepalive=True,
            retry=Retry(NoBackoff(), retries=0, supported_errors=()),
        )
        register = self._redis.register_script
        self._claim = register(_CLAIM)
        self._renew = register(_RENEW)
        self._release = register(_RELEASE)
        self._append = register(_APPEND)
        self._presence_leave = register(_PRESENCE_LEAVE)
        self._save_state = register(_SAVE_STATE)
        self._save_club = register(_SAVE_CLUB)
        self._hit = register(_HIT)

    @contextlib.asynccontextmanager
    async def _call(self, seconds: float | None = None) -> AsyncIterator[None]:
        """Bound a call in time; a lost, refused or silent connection becomes BackendUnavailable,
        any other refusal (OOM, READONLY...) a BackendError: callers never see redis-py's types."""
        if self._closed.is_set():
            raise BackendClosed("backend is closed")
        try:
            async with asyncio.timeout(seconds or self.command_timeout):
                yield
        except UNAVAILABLE as exc:  # asyncio's TimeoutError is an OSError
            raise BackendUnavailable(f"redis unavailable: {exc!r}") from exc
        except RedisError as exc:
            raise BackendError(f"redis refused: {exc}") from exc

    # --- stage registry ------------------------------------------------------------------------

    async def claim(self, stage_id: str, node_id: str, node_url: str, ttl_ms: int) -> Lease | None:
        check_ttl(ttl_ms)
        lease = Lease(stage_id, node_id, node_url, secrets.token_hex(8), ttl_ms)
        async with self._call():
            got = await self._claim(keys=[keys.owner(stage_id)], args=[_lease_value(lease), ttl_ms])
        return lease if got == 1 else None

    async def renew(self, lease: Lease) -> bool:
        async with self._call():
            done = await self._renew(
                keys=[keys.owner(lease.stage_id)], args=[_lease_value(lease), lease.ttl_ms]
            )
        return bool(done == 1)

    async def release(self, lease: Lease) -> bool:
        async with self._call():
            done = await self._release(keys=[keys.owner(lease.stage_id)], args=[_lease_value(lease)])
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

    async def heartbeat(self, node_id: str, ttl_ms: int) -> bool:
        check_ttl(ttl_ms)
        beat = secrets.token_bytes(8)
        async with self._call():
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

    # --- event log -----------------------------------------------------------------------------

    async def append(self, stage_id: str, seq: int, payload: bytes, *, lease: Lease | None = None) -> None:
        check_seq(seq)
        fence = b"" if lease is None else _lease_value(lease)
        args: list[bytes | str | int] = [f"{seq}-0", payload, self.max_log_entries, fence]
        async with self._call():
            result = await self._append(keys=[keys.log(stage_id), keys.owner(stage_id)], args=args)
        if result == -1:
            raise LeaseLost(f"lease on stage {stage_id} lost: append of seq {seq} refused")
        if result == -2:
            raise OutOfOrder(f"stage {stage_id}: seq {seq} is not above the last one")

    async def read(self, stage_id: str, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        async with self._call():
            entries: Any = await self._redis.xrange(
                keys.log(stage_id), f"{after_seq + 1}-0", "+", count=limit
            )
        return [(_seq(entry_id), fields[_FIELD]) for entry_id, fields in entries]

    async def last_seq(self, stage_id: str) -> int:
        async with self._call():
            entries: Any = await self._redis.xrevrange(keys.log(stage_id), "+", "-", count=1)
        return _seq(entries[0][0]) if entries else 0

    async def subscribe(self, stage_id: str, after_seq: int = 0) -> AsyncGenerator[tuple[int, bytes], None]:
        key = keys.log(stage_id)
        last = after_seq
        failures = 0
        while not self._closed.is_set():
            try:
                async with self._call(self.block_ms / 1000 + self.command_timeout):
                    reply = await self._read_unless_closed(key, last)
            except BackendClosed:
                return
            except BackendUnavailable as exc:
                if self._closed.is_set():
                    return
                failures += 1
                if failures == 1:
                    log.warning(
                        "event log subscription lost redis, retrying",
                        extra={"stage": stage_id, "error": str(exc)},
                    )
                await self._pause(min(self.reconnect_max_s, 0.05 * 2 ** (failures - 1)))
                continue
            if failures:
                log.info("event log subscription resumed", extra={"stage": stage_id, "after_seq": last})
                failures = 0
            for _key, entries in reply or ():
                for entry_id, fields in entries:
                    last = _seq(entry_id)
                    yield last, fields[_FIELD]

    async def _read_unless_closed(self, key: str, last: int) -> Any:
        """XREAD BLOCK from ``last``; raises BackendClosed at once if the backend closes meanwhile."""
        read = asyncio.ensure_future(self._redis.xread({key: f"{last}-0"}, count=256, block=self.block_ms))
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait((read, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not read.done():
                read.cancel()  # redis-py drops a connection whose read was cancelled
                await asyncio.wait((read,))
        if read.cancelled():
            raise BackendClosed("backend is closed")
        return read.result()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the backend closes."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._closed.wait()

    # --- stage state -----------------------------------------------------------------------------

    async def save_state(self, stage_id: str, payload: bytes, *, lease: Lease) -> None:
        async with self._call():
            saved = await self._save_state(
                keys=[keys.state(stage_id), keys.owner(stage_id)], args=[payload, _lease_value(lease)]
            )
        if saved != 1:
            raise LeaseLost(f"lease on stage {stage_id} lost: state not saved")

    async def load_state(self, stage_id: str) -> bytes | None:
        async with self._call():
            value: Any = await self._redis.get(keys.state(stage_id))  # bytes: no decode_responses
        return None if value is None else bytes(value)

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

    # --- lifecycle -----------------------------------------------------------------------------

    async def ping(self) -> bool:
        if self._closed.is_set():
            return False
        try:
            return bool(await self._redis.ping())
        except UNAVAILABLE:
            return False

    async def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for inbox in list(self._inboxes):
            await inbox.aclose()
        await self._bus.aclose()
        await self._redis.aclose()


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])
