"""Values sealed with a person's key, and the ring of live keys that opens them (issue 15).

What a recording holds of a person (their name, their comments, questions and votes, their consent
records' identity) is stored as a *sealed value*, the same shape in msgpack and in JSON::

    {"sealed": {"key_id": "<32 hex digits>", "data": "<base64 of the envelope>"}}

The envelope is recording/keys.py's (AES-256-GCM, the key id in its header). The associated data
names the purpose (``medstage/comment``, ``medstage/name``...), so a sealed name cannot be passed off as
a sealed comment. Destroying the person's key (erasure) makes every such value unreadable wherever it
was copied: ``open_value`` then answers ``ERASED``, and readers show a placeholder.

``KeyRing`` is the synchronous view the recorder and the readers use: the live keys, by identity and by
key id. It is filled from the ``KeyStore`` (async) before it is needed (``load_ring``, or ``put`` when a
participant joins), so sealing on the media path never waits for a store.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgpack

from recording.keys import EnvelopeError, KeyStore, PersonKey, envelope_key_id, open_, seal

__all__ = [
    "ERASED",
    "KeyRing",
    "is_sealed",
    "load_ring",
    "open_value",
    "seal_value",
    "sealed_key_id",
]


class _Erased:
    """What a sealed value reads as once its key is destroyed."""

    _instance: _Erased | None = None

    def __new__(cls) -> _Erased:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ERASED"

    def __bool__(self) -> bool:
        return False


ERASED: Final = _Erased()

MAX_PURPOSE = 64


class KeyRing:
    """Live person keys in memory, by identity and by key id. Not thread-safe for writers: the loop
    fills it; threads only read (dict reads are atomic)."""

    def __init__(self, keys: Iterable[PersonKey] = ()) -> None:
        self._by_identity: dict[str, PersonKey] = {}
        self._by_id: dict[str, PersonKey] = {}
        self._dropped: set[str] = set()  # identities whose key was dropped, with no new key since
        for key in keys:
            self.put(key)

    def put(self, key: PersonKey) -> None:
        old = self._by_identity.get(key.identity)
        if old is not None and old.key_id != key.key_id:
            self._by_id.pop(old.key_id, None)
        self._by_identity[key.identity] = key
        self._by_id[key.key_id] = key
        self._dropped.discard(key.identity)

    def for_identity(self, identity: str) -> PersonKey | None:
        return self._by_identity.get(identity)

    def by_id(self, key_id: str) -> PersonKey | None:
        return self._by_id.get(key_id)

    def drop(self, identity: str) -> PersonKey | None:
        """Forget the person's key (it was destroyed): nothing is sealed or opened with it again here."""
        key = self._by_identity.pop(identity, None)
        if key is not None:
            self._by_id.pop(key.key_id, None)
        self._dropped.add(identity)
        return key

    def dropped(self, identity: str) -> bool:
        """Was the person's key dropped here (destroyed: erased), with no new key put since? Then
        nothing of theirs may be recorded, not even unsealed (a person without a key is another case:
        the store could not answer when they joined)."""
        return identity in self._dropped

    def key_ids(self) -> frozenset[str]:
        return frozenset(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)


async def load_ring(store: KeyStore) -> KeyRing:
    """Every live key of ``store`` (a reader's ring: one ``get`` per person the store knows)."""
    ring = KeyRing()
    for entry in await store.list():
        if entry.key_id is not None:
            key = await store.get(entry.identity)
            if key is not None:
                ring.put(key)
    return ring


def _aad(purpose: str) -> bytes:
    if not purpose or len(purpose) > MAX_PURPOSE:
        raise ValueError("a purpose is 1-64 characters")
    return b"medstage/" + purpose.encode("utf-8")


def seal_value(key: PersonKey, value: Any, purpose: str) -> dict[str, Any]:
    """``value`` (anything msgpack packs) sealed with ``key`` for ``purpose``."""
    envelope = seal(key, msgpack.packb(value, use_bin_type=True), _aad(purpose))
    return {"sealed": {"key_id": key.key_id, "data": base64.b64encode(envelope).decode("ascii")}}


def is_sealed(obj: Any) -> bool:
    return isinstance(obj, Mapping) and isinstance(obj.get("sealed"), Mapping) and len(obj) == 1


def sealed_key_id(obj: Any) -> str | None:
    """The key id a sealed value was made with (None: not a sealed value)."""
    if not is_sealed(obj):
        return None
    key_id = obj["sealed"].get("key_id")
    return key_id if isinstance(key_id, str) else None


def open_value(obj: Any, ring: KeyRing, purpose: str) -> Any:
    """The value inside ``obj``; ``ERASED`` when its key is not in ``ring`` (destroyed). Raises
    ``EnvelopeError`` for a value that is not a well-formed sealed value of this purpose, or that was
    changed (authentication fails): damage is said, never read as an erasure."""
    key_id = sealed_key_id(obj)
    data = obj["sealed"].get("data") if key_id is not None else None
    if key_id is None or not isinstance(data, str):
        raise EnvelopeError("not_sealed", "not a sealed value")
    try:
        envelope = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError("truncated", "a sealed value's data is not base64") from exc
    if envelope_key_id(envelope) != key_id:
        raise EnvelopeError("tampered", "a sealed value names another key than its envelope")
    key = ring.by_id(key_id)
    if key is None:
        return ERASED
    return msgpack.unpackb(open_(key, envelope, _aad(purpose)), raw=False)
