"""A stage's event log in Redis Streams (one entry per event, its ``seq`` as the entry id, appended
only under the stage's lease) and its durable state beside it (saved under the lease too).

A subscription reads with XREAD BLOCK, waits out a lost Redis (backing off up to
``reconnect_max_s``) and ends at once when the backend closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from server.backend import keys
from server.backend.base import BackendClosed, BackendUnavailable, Lease, LeaseLost, OutOfOrder, check_seq
from server.backend.redis_client import RedisClient
from server.backend.redis_scripts import lease_value

__all__ = ["RedisLog"]

log = logging.getLogger(__name__)

_FIELD = b"e"  # the one field of a log entry: the payload


class RedisLog(RedisClient):
    """The event log and the stage state of a ``RedisBackend``."""

    # --- event log -----------------------------------------------------------------------------

    async def append(self, stage_id: str, seq: int, payload: bytes, *, lease: Lease | None = None) -> None:
        check_seq(seq)
        fence = b"" if lease is None else lease_value(lease)
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

    # --- stage state -----------------------------------------------------------------------------

    async def save_state(self, stage_id: str, payload: bytes, *, lease: Lease) -> None:
        async with self._call():
            saved = await self._save_state(
                keys=[keys.state(stage_id), keys.owner(stage_id)], args=[payload, lease_value(lease)]
            )
        if saved != 1:
            raise LeaseLost(f"lease on stage {stage_id} lost: state not saved")

    async def load_state(self, stage_id: str) -> bytes | None:
        async with self._call():
            value: Any = await self._redis.get(keys.state(stage_id))  # bytes: no decode_responses
        return None if value is None else bytes(value)


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-", 1)[0])
