"""People's data-encryption keys in Redis (``recording.keys.KeyStore``), for several nodes.

A person's live key is a hash ``ms:{person:ID}:key`` and their tombstones a list
``ms:{person:ID}:destroyed`` (one slot, so one script reads and writes both):

- get-or-create is one script: the live key if there is one; else, when a tombstone exists and the
  caller did not ask for a new key after destruction, the answer "destroyed"; else the caller's new
  key is stored and returned. Two nodes racing both get the key of whichever script ran first.
- destroy is one script: delete the live key and push its tombstone; with no live key it pushes a
  tombstone only if there is none yet (idempotent), and answers the last one.

The key material is in Redis in the clear: Redis must be a private, authenticated service (and its
persistence files are as secret as the keys directory). A destroyed key leaves Redis's memory at once,
and its append-only file at its next rewrite (docs/recording.md, "Key store").
"""

from __future__ import annotations

import json
from typing import Any

from recording.keys import (
    KeyDestroyed,
    KeyEntry,
    KeyStore,
    PersonKey,
    Tombstone,
    key_from_dict,
    key_to_dict,
    new_key,
)
from server.backend import keys
from server.backend.redis import RedisBackend

GET_OR_CREATE = """
local cur = redis.call('HGET', KEYS[1], 'data')
if cur then return {1, cur} end
if ARGV[2] ~= '1' then
  local last = redis.call('LINDEX', KEYS[2], -1)
  if last then return {2, last} end
end
redis.call('HSET', KEYS[1], 'data', ARGV[1], 'id', ARGV[3], 'at', ARGV[4])
return {0, ARGV[1]}
"""

# ARGV[1]: the tombstone's JSON but its last fields and closing brace; the key's id and creation time
# are appended here, from the hash, as stored (no number goes through Lua's float formatting).
DESTROY = """
local id = redis.call('HGET', KEYS[1], 'id')
if not id then
  local last = redis.call('LINDEX', KEYS[2], -1)
  if last then return last end
  local text = ARGV[1] .. ',"key_id":"","created_at":null}'
  redis.call('RPUSH', KEYS[2], text)
  return text
end
local text = ARGV[1] .. ',"key_id":"' .. id .. '","created_at":' .. redis.call('HGET', KEYS[1], 'at') .. '}'
redis.call('DEL', KEYS[1])
redis.call('RPUSH', KEYS[2], text)
return text
"""


class RedisKeyStore(KeyStore):
    """The key store on a ``RedisBackend``'s connection (its timeouts, retry and error mapping:
    ``BackendUnavailable`` when Redis cannot be reached)."""

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self._get_or_create = backend._redis.register_script(GET_OR_CREATE)
        self._destroy = backend._redis.register_script(DESTROY)

    async def get_or_create(self, identity: str, now: float, *, after_destroy: bool = False) -> PersonKey:
        key = new_key(identity, now)
        async with self.backend._call():
            answer: Any = await self._get_or_create(
                keys=[keys.person_key(identity), keys.person_tombstones(identity)],
                args=[
                    json.dumps(key_to_dict(key)),
                    "1" if after_destroy else "0",
                    key.key_id,
                    repr(float(key.created_at)),
                ],
            )
        status, payload = int(answer[0]), json.loads(answer[1])
        if status == 2:
            raise KeyDestroyed(Tombstone.from_dict(payload))
        if status == 0:
            async with self.backend._call():
                await self.backend._redis.sadd(keys.people(), identity)
        return key_from_dict(payload)

    async def get(self, identity: str) -> PersonKey | None:
        async with self.backend._call():
            value: Any = await self.backend._redis.hget(keys.person_key(identity), "data")
        return None if value is None else key_from_dict(json.loads(value))

    async def tombstones(self, identity: str) -> list[Tombstone]:
        async with self.backend._call():
            values: Any = await self.backend._redis.lrange(keys.person_tombstones(identity), 0, -1)
        return [Tombstone.from_dict(json.loads(v)) for v in values]

    async def destroy(self, identity: str, reason: str, now: float) -> Tombstone:
        head = json.dumps({"identity": identity, "destroyed_at": float(now), "reason": reason})[:-1]
        async with self.backend._call():
            answer: Any = await self._destroy(
                keys=[keys.person_key(identity), keys.person_tombstones(identity)],
                args=[head],
            )
            await self.backend._redis.sadd(keys.people(), identity)
        return Tombstone.from_dict(json.loads(answer))

    async def list(self) -> list[KeyEntry]:
        async with self.backend._call():
            members: Any = await self.backend._redis.smembers(keys.people())
        entries = []
        for identity in sorted(m.decode("utf-8") for m in members):
            key = await self.get(identity)
            stones = tuple(await self.tombstones(identity))
            if key is None and not stones:
                continue
            entries.append(
                KeyEntry(identity, key.key_id if key else None, key.created_at if key else None, stones)
            )
        return entries
