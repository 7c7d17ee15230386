"""People's profile stores (recording/profiles.py): the file store and the Redis one (a real
redis-server) pass the same tests, two stores standing for two nodes: corrections merge field by field,
another store sees them after ``refresh`` (its ``version`` moves only then), ``delete`` forgets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recording.profiles import FileProfileStore, ProfileError, ProfileStore
from server.backend import RedisBackend
from server.backend.redis_profiles import RedisProfileStore
from tests.support.redis_server import RedisServer


@pytest.fixture(params=["file", "redis"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[ProfileStore]]:
    if request.param == "file":
        yield [FileProfileStore(tmp_path / "people"), FileProfileStore(tmp_path / "people")]
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    with server.admin() as admin:
        admin.flushall()
    backends = [RedisBackend(server.url, name=f"profiles-{i}") for i in range(2)]
    try:
        yield [RedisProfileStore(b) for b in backends]
    finally:
        for backend in backends:
            await backend.close()


async def test_two_nodes_share_corrections(stores: list[ProfileStore]) -> None:
    a, b = stores
    await a.put("alice@x", {"name": "Alice M"}, 10.0)
    await b.put("alice@x", {"title": "Dr"}, 11.0)  # another field, on the other node
    assert a.get_name("alice@x") == "Alice M"
    version = a.version
    await a.refresh()
    profile = a.get("alice@x")
    assert profile is not None and dict(profile.fields) == {"name": "Alice M", "title": "Dr"}
    assert profile.updated_at == 11.0 and a.version == version + 1
    await a.refresh()
    assert a.version == version + 1, "nothing changed: readers' caches stay"
    assert await b.delete("alice@x") and not await b.delete("alice@x")
    await a.refresh()
    assert a.get_name("alice@x") is None and a.get("alice@x") is None


async def test_a_bad_correction_stores_nothing(stores: list[ProfileStore]) -> None:
    a, b = stores
    with pytest.raises(ProfileError):
        await a.put("alice@x", {"name": "x" * 65}, 10.0)
    await b.refresh()
    assert b.get("alice@x") is None
