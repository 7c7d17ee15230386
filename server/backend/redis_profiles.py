"""People's corrected profiles in Redis (``recording.profiles.ProfileStore``), for several nodes.

A person's profile is a hash ``ms:{person:ID}:profile`` (field -> value, and ``updated_at``): a
correction is one ``HSET`` of the fields it changes, so two nodes correcting different fields of one
person at once both land. ``ms:profiles`` lists the identities that have one; ``refresh`` reads them
all into the store's mirror (profiles are few: only people who corrected something).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recording.profiles import Profile, ProfileStore, check_changes
from server.backend import keys
from server.backend.redis import RedisBackend


class RedisProfileStore(ProfileStore):
    """The profile store on a ``RedisBackend``'s connection (its timeouts and error mapping)."""

    def __init__(self, backend: RedisBackend) -> None:
        super().__init__()
        self.backend = backend

    async def _load(self, identity: str) -> Profile | None:
        async with self.backend._call():
            raw: Any = await self.backend._redis.hgetall(keys.person_profile(identity))
        return _profile(identity, raw) if raw else None

    async def refresh(self) -> None:
        """Two round trips: the identities, then every profile in one pipeline (each its own slot)."""
        async with self.backend._call():
            members: Any = await self.backend._redis.smembers(keys.profiles())
            identities = sorted(m.decode("utf-8") for m in members)
            async with self.backend._redis.pipeline(transaction=False) as pipe:
                for identity in identities:
                    pipe.hgetall(keys.person_profile(identity))
                found: Any = await pipe.execute() if identities else []
        profiles = {}
        for identity, raw in zip(identities, found, strict=True):
            if raw:
                profiles[identity] = _profile(identity, raw)
        self._mirror(profiles)

    async def put(self, identity: str, changes: Mapping[str, str], now: float) -> Profile:
        checked = check_changes(changes)
        mapping: dict[str, str] = {**checked, "updated_at": repr(float(now))}
        async with self.backend._call():
            await self.backend._redis.hset(keys.person_profile(identity), mapping=mapping)  # type: ignore[arg-type]
            await self.backend._redis.sadd(keys.profiles(), identity)
        profile = await self._load(identity)
        assert profile is not None
        self._mirror({**self._profiles, identity: profile})
        return profile

    async def delete(self, identity: str) -> bool:
        async with self.backend._call():
            removed: Any = await self.backend._redis.delete(keys.person_profile(identity))
            await self.backend._redis.srem(keys.profiles(), identity)
        self._mirror({k: v for k, v in self._profiles.items() if k != identity})
        return bool(removed)


def _profile(identity: str, raw: dict[bytes, bytes]) -> Profile:
    data = {k.decode("utf-8"): v.decode("utf-8") for k, v in raw.items()}
    at = float(data.pop("updated_at", "0") or 0)
    return Profile(identity, data, at)
