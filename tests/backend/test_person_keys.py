"""People's key stores (recording/keys.py): the file store and the Redis one (a real redis-server) pass
the same tests; the envelope is checked with real AES-256-GCM (tampered, wrong key, destroyed key)."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from recording.keys import (
    EnvelopeError,
    FileKeyStore,
    KeyDestroyed,
    KeyStore,
    envelope_key_id,
    open_,
    seal,
)
from server.backend import RedisBackend
from server.backend.redis_keys import RedisKeyStore
from tests.support.redis_server import RedisServer

NOW = 1_796_000_000.25


@pytest.fixture(params=["file", "redis"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[KeyStore]]:
    """Two stores on the same keys, as two nodes see them."""
    if request.param == "file":
        yield [FileKeyStore(tmp_path / "keys" / "people"), FileKeyStore(tmp_path / "keys" / "people")]
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    with server.admin() as admin:
        admin.flushall()
    backends = [RedisBackend(server.url, name=f"keys-{i}") for i in range(2)]
    try:
        yield [RedisKeyStore(b) for b in backends]
    finally:
        for backend in backends:
            await backend.close()


async def test_a_person_gets_one_key_and_keeps_it(stores: list[KeyStore]) -> None:
    a, b = stores
    assert await a.get("alice") is None
    key = await a.get_or_create("alice", NOW)
    assert len(key.material) == 32 and len(key.key_id) == 32 and key.created_at == NOW
    assert await b.get_or_create("alice", NOW + 5) == key, "the second node gets the same key"
    assert await b.get("alice") == key
    other = await a.get_or_create("bob", NOW)
    assert other.key_id != key.key_id and other.material != key.material
    assert key.material.hex() not in repr(key) and "material" not in repr(key)
    listed = await b.list()
    assert [(e.identity, e.key_id, e.destroyed) for e in listed] == [
        ("alice", key.key_id, ()),
        ("bob", other.key_id, ()),
    ]


async def test_racing_creations_end_with_one_key(stores: list[KeyStore]) -> None:
    a, b = stores
    made = await asyncio.gather(*(s.get_or_create("carol", NOW + i) for i, s in enumerate([a, b] * 10)))
    assert len({k.key_id for k in made}) == 1 and len({k.material for k in made}) == 1
    assert await a.get("carol") == made[0]


async def test_a_destroyed_key_is_gone_for_good_and_leaves_a_tombstone(stores: list[KeyStore]) -> None:
    a, b = stores
    key = await a.get_or_create("dave", NOW)
    envelope = seal(key, b"dave's comment", b"timeline:7")
    stone = await a.destroy("dave", "erasure requested", NOW + 10)
    assert (stone.identity, stone.key_id, stone.destroyed_at, stone.reason, stone.created_at) == (
        "dave",
        key.key_id,
        NOW + 10,
        "erasure requested",
        NOW,
    )
    assert await b.get("dave") is None
    assert await b.destroyed("dave") == stone
    with pytest.raises(KeyDestroyed) as refused:
        await b.get_or_create("dave", NOW + 20)
    assert refused.value.tombstone == stone, "no silent new key for a shredded person"
    assert await a.destroy("dave", "again", NOW + 30) == stone, "idempotent: the first tombstone"
    assert await b.tombstones("dave") == [stone]
    # Nothing in the store opens the envelope any more: the only key was the destroyed one.
    assert envelope_key_id(envelope) == key.key_id
    assert all(e.key_id != key.key_id for e in await a.list())
    # Asked for, a new key is made: another id, another secret; the tombstone stays.
    fresh = await b.get_or_create("dave", NOW + 40, after_destroy=True)
    assert fresh.key_id != key.key_id
    assert await a.get_or_create("dave", NOW + 45) == fresh, "the new key lives: no flag needed to get it"
    with pytest.raises(EnvelopeError) as wrong:
        open_(fresh, envelope, b"timeline:7")
    assert wrong.value.code == "wrong_key"
    assert next(e for e in await a.list() if e.identity == "dave").destroyed == (stone,)
    second = await a.destroy("dave", "second erasure", NOW + 50)
    assert second.key_id == fresh.key_id and await a.tombstones("dave") == [stone, second]


async def test_a_person_without_a_key_can_be_destroyed_too(stores: list[KeyStore]) -> None:
    a, b = stores
    stone = await a.destroy("erin", "erased before any recording", NOW)
    assert stone.key_id == "" and stone.created_at is None
    with pytest.raises(KeyDestroyed):
        await b.get_or_create("erin", NOW + 1)


async def test_the_file_store_writes_private_files_and_shreds_them(tmp_path: Path) -> None:
    directory = tmp_path / "keys" / "people"
    store = FileKeyStore(directory)
    identity = "frank/../../etc"  # any identity: file names are hashes
    key = await store.get_or_create(identity, NOW)
    (path,) = directory.glob("*.key")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert path.parent == directory and identity not in path.name
    assert list(directory.glob(".*")) == [], "no temporary file left"
    inode = path.stat().st_ino
    await store.destroy(identity, "test", NOW + 1)
    assert not path.exists()
    assert all(p.stat().st_ino != inode for p in directory.iterdir())
    assert key.material not in b"".join(p.read_bytes() for p in directory.iterdir())
    # A key file overwritten but not unlinked (a shredding cut short) is no key: get says None.
    other = await store.get_or_create("gina", NOW)
    key_file = next(p for p in directory.glob("*.key"))
    key_file.write_bytes(b"\0" * 40)
    assert await store.get("gina") is None
    assert key_file.exists()
    assert (await store.destroy("gina", "finish", NOW + 2)).key_id == ""
    assert other.key_id  # the key whose file was zeroed is unrecoverable: the tombstone says none


def test_the_envelope_opens_only_with_its_key_and_data() -> None:
    from recording.keys import new_key

    key, other = new_key("h", NOW), new_key("h", NOW)
    envelope = seal(key, b"secret words", b"aad")
    assert envelope[0] == 1 and envelope[1:17].hex() == key.key_id
    assert len(envelope) == 1 + 16 + 12 + len(b"secret words") + 16
    assert open_(key, envelope, b"aad") == b"secret words"
    assert seal(key, b"secret words", b"aad") != envelope, "a fresh nonce per seal"
    failures = {
        "tampered": [
            lambda: open_(key, envelope[:-1] + bytes([envelope[-1] ^ 1]), b"aad"),  # the tag
            lambda: open_(key, envelope[:20] + bytes([envelope[20] ^ 1]) + envelope[21:], b"aad"),  # nonce
            lambda: open_(key, envelope[:30] + bytes([envelope[30] ^ 1]) + envelope[31:], b"aad"),
            lambda: open_(key, envelope, b"other aad"),
        ],
        "wrong_key": [lambda: open_(other, envelope, b"aad")],
        "unknown_version": [lambda: open_(key, b"\x02" + envelope[1:], b"aad")],
        "truncated": [lambda: open_(key, envelope[:40], b"aad"), lambda: open_(key, b"", b"aad")],
    }
    for code, attempts in failures.items():
        for attempt in attempts:
            with pytest.raises(EnvelopeError) as failed:
                attempt()
            assert failed.value.code == code
    # A changed key id is refused as another key's envelope, and the same key id on another key
    # material (a forged header) does not authenticate.
    forged = type(key)(key.identity, key.key_id, other.material, NOW)
    with pytest.raises(EnvelopeError) as failed:
        open_(forged, envelope, b"aad")
    assert failed.value.code == "tampered"
