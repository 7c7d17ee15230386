"""Sealed values: round trip, purposes apart, erased when the key is gone, damage never an erasure."""

from __future__ import annotations

import json

import msgpack
import pytest

from recording.keys import EnvelopeError, FileKeyStore, new_key
from recording.vault import ERASED, KeyRing, load_ring, open_value, seal_value, sealed_key_id


def test_round_trip_in_json_and_msgpack() -> None:
    key = new_key("ana", 1.0)
    ring = KeyRing([key])
    sealed = seal_value(key, {"text": "MARKER-ána", "n": [1, 2]}, "comment")
    assert sealed_key_id(sealed) == key.key_id
    assert "MARKER" not in json.dumps(sealed)
    for copy in (json.loads(json.dumps(sealed)), msgpack.unpackb(msgpack.packb(sealed))):
        assert open_value(copy, ring, "comment") == {"text": "MARKER-ána", "n": [1, 2]}


def test_another_purpose_does_not_open() -> None:
    key = new_key("ana", 1.0)
    sealed = seal_value(key, "Ana", "name")
    with pytest.raises(EnvelopeError):
        open_value(sealed, KeyRing([key]), "comment")


def test_without_the_key_it_reads_as_erased() -> None:
    key, other = new_key("ana", 1.0), new_key("bob", 1.0)
    sealed = seal_value(key, "secret", "comment")
    ring = KeyRing([key, other])
    ring.drop("ana")
    assert open_value(sealed, ring, "comment") is ERASED
    assert not ERASED
    assert ring.by_id(key.key_id) is None and ring.for_identity("bob") is other


def test_damage_is_an_error_not_an_erasure() -> None:
    key = new_key("ana", 1.0)
    ring = KeyRing([key])
    sealed = seal_value(key, "secret", "comment")
    other = new_key("bob", 1.0)
    swapped = {"sealed": {**sealed["sealed"], "key_id": other.key_id}}
    with pytest.raises(EnvelopeError):
        open_value(swapped, KeyRing([key, other]), "comment")
    with pytest.raises(EnvelopeError):
        open_value({"sealed": {"key_id": key.key_id, "data": "%%%"}}, ring, "comment")
    with pytest.raises(EnvelopeError):
        open_value({"text": "plain"}, ring, "comment")


def test_a_new_key_replaces_the_old_in_the_ring() -> None:
    first, second = new_key("ana", 1.0), new_key("ana", 2.0)
    ring = KeyRing([first])
    ring.put(second)
    assert ring.by_id(first.key_id) is None and ring.for_identity("ana") is second and len(ring) == 1


async def test_load_ring_holds_live_keys_only(tmp_path) -> None:
    store = FileKeyStore(tmp_path / "keys")
    ana = await store.get_or_create("ana", 1.0)
    bob = await store.get_or_create("bob", 1.0)
    await store.destroy("bob", "erasure", 2.0)
    ring = await load_ring(store)
    assert ring.key_ids() == {ana.key_id} and ring.by_id(bob.key_id) is None
