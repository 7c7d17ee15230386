"""People's data-encryption keys (issue 15): one AES-256-GCM key per identity, behind one interface.

Crypto-shredding rests on this: what is recorded of a person is sealed with their key (``seal``), so
destroying the key makes every copy unreadable, wherever it went. The store therefore never hands out
a new key for a person whose key was destroyed unless the caller says so (``after_destroy=True``):
a silent new key would let recording of an erased person start again as if nothing happened.

``KeyStore`` is the interface; ``FileKeyStore`` (here) keeps one file per key under
``<data dir>/keys/people/``; ``server.backend.redis_keys.RedisKeyStore`` keeps them in Redis for
several nodes. Both pass the same tests (tests/recording/test_keys.py).

Envelope (docs/recording.md, "Encryption at rest")::

    version (1 byte, 0x01) | key id (16 bytes) | nonce (12 bytes) | ciphertext + GCM tag (16 bytes)

The version byte and key id are authenticated too (prefixed to the caller's associated data), so a
changed header fails like a changed ciphertext.
"""

from __future__ import annotations

import abc
import asyncio
import base64
import binascii
import builtins
import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recording.ledger import fsync_dir

__all__ = [
    "ENVELOPE_VERSION",
    "EnvelopeError",
    "FileKeyStore",
    "KeyDestroyed",
    "KeyEntry",
    "KeyStore",
    "PersonKey",
    "Tombstone",
    "envelope_key_id",
    "open_",
    "seal",
]

ENVELOPE_VERSION = 1
KEY_ID_BYTES = 16
NONCE_BYTES = 12  # GCM's own size: a random nonce per seal (2^32 seals per key stay far from a clash)
TAG_BYTES = 16
HEADER_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES
KEY_BYTES = 32  # AES-256


@dataclass(frozen=True, slots=True)
class PersonKey:
    """A person's data-encryption key. ``material`` is never in its repr (nor in any log line)."""

    identity: str
    key_id: str  # 32 hex digits: the 16 bytes every envelope made with this key carries
    material: bytes = field(repr=False)
    created_at: float


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What is left of a destroyed key: whose it was, when and why it was destroyed."""

    identity: str
    key_id: str  # empty: the person had no key yet (destroyed anyway, so none is made later)
    destroyed_at: float
    reason: str
    created_at: float | None = None  # of the key destroyed

    def to_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "key_id": self.key_id,
            "destroyed_at": self.destroyed_at,
            "reason": self.reason,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tombstone:
        return cls(
            identity=str(data["identity"]),
            key_id=str(data["key_id"]),
            destroyed_at=float(data["destroyed_at"]),
            reason=str(data["reason"]),
            created_at=None if data.get("created_at") is None else float(data["created_at"]),
        )


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One person in ``KeyStore.list``: their live key's id (if any) and their destroyed keys, never
    key material."""

    identity: str
    key_id: str | None
    created_at: float | None
    destroyed: tuple[Tombstone, ...]


class KeyDestroyed(Exception):
    """``get_or_create`` for a person whose key was destroyed: no new key unless asked
    (``after_destroy=True``)."""

    code = "key_destroyed"

    def __init__(self, tombstone: Tombstone) -> None:
        super().__init__(
            f"the key of {tombstone.identity!r} was destroyed ({tombstone.reason}); "
            "a new one is made only when asked"
        )
        self.tombstone = tombstone


class EnvelopeError(Exception):
    """An envelope that cannot be opened. ``code``: ``truncated``, ``unknown_version``, ``wrong_key``
    (made with another key than the one given) or ``tampered`` (authentication failed: a byte of the
    ciphertext, tag, nonce or associated data changed)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class KeyStore(abc.ABC):
    """Per-person keys: get-or-create, get, destroy (irreversible, idempotent, with a tombstone), list."""

    @abc.abstractmethod
    async def get_or_create(self, identity: str, now: float, *, after_destroy: bool = False) -> PersonKey:
        """The person's key, made now if they have none. Two callers racing (two nodes) get the same
        key: one creation wins. Raises ``KeyDestroyed`` when the person's key was destroyed and
        ``after_destroy`` is False."""

    @abc.abstractmethod
    async def get(self, identity: str) -> PersonKey | None:
        """The person's live key; None when they have none or it was destroyed (see ``tombstones``)."""

    @abc.abstractmethod
    async def tombstones(self, identity: str) -> list[Tombstone]:
        """The person's destroyed keys, oldest first (empty: never destroyed)."""

    @abc.abstractmethod
    async def destroy(self, identity: str, reason: str, now: float) -> Tombstone:
        """Destroy the person's live key, for good, leaving a tombstone. Idempotent: with no live key
        it returns the last tombstone; a person who never had a key gets a tombstone too (``key_id``
        empty), so no key is made for them later unless asked."""

    @abc.abstractmethod
    async def list(self) -> list[KeyEntry]:
        """Everyone the store knows (live key or tombstones), sorted by identity."""

    async def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release what the store holds (connections)."""

    async def destroyed(self, identity: str) -> Tombstone | None:
        """The last tombstone when the person has no live key but had one destroyed; else None."""
        if await self.get(identity) is not None:
            return None
        stones = await self.tombstones(identity)
        return stones[-1] if stones else None


def new_key(identity: str, now: float) -> PersonKey:
    return PersonKey(identity, secrets.token_hex(KEY_ID_BYTES), AESGCM.generate_key(bit_length=256), now)


def key_to_dict(key: PersonKey) -> dict[str, Any]:
    return {
        "version": 1,
        "identity": key.identity,
        "key_id": key.key_id,
        "key": base64.b64encode(key.material).decode("ascii"),
        "created_at": key.created_at,
    }


def key_from_dict(data: dict[str, Any]) -> PersonKey:
    material = base64.b64decode(data["key"], validate=True)
    if len(material) != KEY_BYTES or len(bytes.fromhex(data["key_id"])) != KEY_ID_BYTES:
        raise ValueError("not a person key")
    return PersonKey(str(data["identity"]), str(data["key_id"]), material, float(data["created_at"]))


# --- the envelope -------------------------------------------------------------------------------------


def seal(key: PersonKey, plaintext: bytes, aad: bytes = b"") -> bytes:
    """``plaintext`` encrypted and authenticated with ``key``; ``aad`` (e.g. the file and the record it
    belongs to) is authenticated, not stored: ``open_`` needs the same."""
    header = bytes([ENVELOPE_VERSION]) + bytes.fromhex(key.key_id) + secrets.token_bytes(NONCE_BYTES)
    nonce = header[1 + KEY_ID_BYTES :]
    return header + AESGCM(key.material).encrypt(nonce, plaintext, header + aad)


def envelope_key_id(envelope: bytes) -> str:
    """The id of the key an envelope was sealed with (to find it in the store); ``EnvelopeError``
    when it is no envelope of a known version."""
    if len(envelope) < HEADER_BYTES + TAG_BYTES:
        raise EnvelopeError("truncated", "the envelope is shorter than its header and tag")
    if envelope[0] != ENVELOPE_VERSION:
        raise EnvelopeError("unknown_version", f"envelope version {envelope[0]} is not known")
    return envelope[1 : 1 + KEY_ID_BYTES].hex()


def open_(key: PersonKey, envelope: bytes, aad: bytes = b"") -> bytes:
    """The plaintext ``seal`` sealed, or ``EnvelopeError`` (never a partial or unauthenticated result)."""
    if envelope_key_id(envelope) != key.key_id:
        raise EnvelopeError("wrong_key", "the envelope was sealed with another key")
    header = envelope[:HEADER_BYTES]
    try:
        return AESGCM(key.material).decrypt(header[1 + KEY_ID_BYTES :], envelope[HEADER_BYTES:], header + aad)
    except InvalidTag:
        raise EnvelopeError(
            "tampered", "the envelope does not authenticate (altered, or other data)"
        ) from None


# --- the file store ---------------------------------------------------------------------------------


def default_keys_dir(recordings_dir: str | os.PathLike[str]) -> Path:
    """``keys/people/`` beside the recordings directory, as the ledger signing key (never inside it:
    whoever copies the recordings must not get the keys with them)."""
    return Path(recordings_dir).parent / "keys" / "people"


class FileKeyStore(KeyStore):
    """One file per person under ``directory`` (0700), named by the SHA-256 of the identity (any
    identity is a safe file name then): ``<hash>.key`` (0600, JSON with the key in base64) while the
    key lives, ``<hash>.destroyed`` (a JSON list of tombstones) once one was destroyed.

    Creation links a fully written, fsynced temporary file to ``<hash>.key``: ``link`` fails when the
    name exists, so two processes racing both end up with the first one's key. Destruction writes the
    tombstone first (atomically), then overwrites the key file with zeros, fsyncs, unlinks it and
    fsyncs the directory: a crash in between leaves a tombstone, and the next ``destroy`` (or
    ``get``) finishes the job. The file I/O (fsyncs) runs in a thread, off the event loop.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _paths(self, identity: str) -> tuple[Path, Path]:
        name = hashlib.sha256(identity.encode("utf-8")).hexdigest()
        return self.directory / f"{name}.key", self.directory / f"{name}.destroyed"

    def _ensure_dir(self) -> None:
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def get_or_create(self, identity: str, now: float, *, after_destroy: bool = False) -> PersonKey:
        return await asyncio.to_thread(self._get_or_create, identity, now, after_destroy)

    def _get_or_create(self, identity: str, now: float, after_destroy: bool) -> PersonKey:
        key_path, tomb_path = self._paths(identity)
        stones = _read_tombstones(tomb_path)
        existing = _read_key(key_path)
        if existing is not None and stones and stones[-1].key_id == existing.key_id:
            _shred(key_path)  # a destruction cut short by a crash: finish it
            existing = None
        if existing is not None:
            return existing  # a live key, made again after an earlier destruction or never destroyed
        if stones and not after_destroy:
            raise KeyDestroyed(stones[-1])
        self._ensure_dir()
        key = new_key(identity, now)
        tmp = self.directory / f".{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(key_to_dict(key), f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, key_path)  # fails if another creation won: then theirs is the key
            except FileExistsError:
                _shred(tmp)  # the loser's key: never used, never left readable
            else:
                os.unlink(tmp)  # one name less for the key's inode (never overwrite it: it is the key)
        except BaseException:
            _shred(tmp)
            raise
        fsync_dir(self.directory)
        winner = _read_key(key_path)
        if winner is None:  # destroyed between our link and our read
            raise KeyDestroyed(_read_tombstones(tomb_path)[-1])
        return winner

    async def get(self, identity: str) -> PersonKey | None:
        return await asyncio.to_thread(self._get, identity)

    def _get(self, identity: str) -> PersonKey | None:
        key_path, tomb_path = self._paths(identity)
        key = _read_key(key_path)
        if key is None:
            return None
        stones = _read_tombstones(tomb_path)
        if stones and stones[-1].key_id == key.key_id:  # tombstoned, unlink cut short
            _shred(key_path)
            return None
        return key

    async def tombstones(self, identity: str) -> list[Tombstone]:
        return await asyncio.to_thread(_read_tombstones, self._paths(identity)[1])

    async def destroy(self, identity: str, reason: str, now: float) -> Tombstone:
        return await asyncio.to_thread(self._destroy, identity, reason, now)

    def _destroy(self, identity: str, reason: str, now: float) -> Tombstone:
        key_path, tomb_path = self._paths(identity)
        stones = _read_tombstones(tomb_path)
        key = _read_key(key_path)
        if key is not None and stones and stones[-1].key_id == key.key_id:
            key = None  # already tombstoned: only the shredding was left
        if key is None and stones:
            _shred(key_path)
            return stones[-1]
        self._ensure_dir()
        stone = Tombstone(
            identity=identity,
            key_id=key.key_id if key is not None else "",
            destroyed_at=now,
            reason=reason,
            created_at=key.created_at if key is not None else None,
        )
        text = json.dumps([s.to_dict() for s in [*stones, stone]]).encode("utf-8")
        _write_atomic(tomb_path, text)
        _shred(key_path)
        fsync_dir(self.directory)
        return stone

    async def list(self) -> list[KeyEntry]:
        return await asyncio.to_thread(self._list)

    def _list(self) -> builtins.list[KeyEntry]:
        if not self.directory.is_dir():
            return []
        names = {p.name.partition(".")[0] for p in self.directory.iterdir() if not p.name.startswith(".")}
        entries = []
        for name in names:
            key = _read_key(self.directory / f"{name}.key")
            stones = tuple(_read_tombstones(self.directory / f"{name}.destroyed"))
            if key is not None and stones and stones[-1].key_id == key.key_id:
                key = None
            identity = key.identity if key is not None else stones[-1].identity if stones else None
            if identity is None:
                continue
            entries.append(
                KeyEntry(
                    identity,
                    key.key_id if key else None,
                    key.created_at if key else None,
                    stones,
                )
            )
        return sorted(entries, key=lambda e: e.identity)


def _read_key(path: Path) -> PersonKey | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    if not raw.strip(b"\0"):
        return None  # overwritten by a destruction that a crash cut short before the unlink
    try:
        return key_from_dict(json.loads(raw))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ValueError(f"{path} is not a person key file") from exc


def _read_tombstones(path: Path) -> list[Tombstone]:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    return [Tombstone.from_dict(item) for item in data]


def _shred(path: Path) -> None:
    """Overwrite the file with zeros, fsync, unlink. On copy-on-write or flash storage old blocks may
    survive an overwrite (docs/recording.md says so); the key's secrecy then rests on the disk's
    encryption, the overwrite is what we can do."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.write(fd, b"\0" * size)
        os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)

