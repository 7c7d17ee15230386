"""Signed ledger heads: the consent ledger's chain anchored by a node key kept outside the session.

A hash chain alone proves only that a ledger is consistent with itself: whoever can write the session
directory can edit a record, recompute every hash after it and the manifest's ``ledger_head``, and the
chain verifies. So the node signs the ledger's head (its length and last hash) with an Ed25519 key that
lives outside the session directory (``signing_key`` in the configuration; docs/recording.md has the
threat model). The recorder signs a head after every append and once more when the session stops
(``final``), and keeps them all, one per line, in ``consent.heads.jsonl``; the last one is also in the
manifest (``ledger_signature``). With one signed head per record, ``python -m recording verify`` names
the first record whose hash no longer matches what was signed.

What is signed is the UTF-8 of :data:`DOMAIN` followed by the canonical JSON of the head's fields but
``signature`` (sorted keys, no spaces, as the ledger's own hashes): stage and session are in it, so a
head cannot be moved to another session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from recording.ledger import canonical, fsync_dir

__all__ = [
    "DOMAIN",
    "HEADS_FILENAME",
    "NodeKey",
    "SignedHead",
    "SigningKeyError",
    "default_key_path",
    "key_id",
    "load_public_key",
    "read_heads",
]

DOMAIN = "medstage ledger head v1\n"
HEADS_FILENAME = "consent.heads.jsonl"
KEY_FILENAME = "ledger-ed25519.key"


class SigningKeyError(Exception):
    """A key file is missing, unreadable or not an Ed25519 key; the message says which and why."""


def default_key_path(recordings_dir: str | os.PathLike[str]) -> Path:
    """Where the node keeps its key when ``signing_key`` is not set: ``keys/`` beside the recordings
    directory (``data/keys/ledger-ed25519.key`` for ``data/recordings``), never inside it."""
    return Path(recordings_dir).parent / "keys" / KEY_FILENAME


def key_id(public: Ed25519PublicKey) -> str:
    """A short fingerprint: ``ed25519:`` and the first 16 hex digits of SHA-256 of the raw key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def public_text(public: Ed25519PublicKey) -> str:
    """The raw public key in base64 (as the manifest carries it)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True, slots=True)
class SignedHead:
    """The ledger's state at one moment, signed: ``count`` records whose last hash is ``head``."""

    stage_id: str
    session_id: str
    count: int
    head: str
    signed_at: float
    final: bool  # signed when the session stopped: no record was to follow
    key_id: str
    signature: str = ""  # base64 Ed25519 signature of :meth:`payload`

    def payload(self) -> bytes:
        fields = {k: v for k, v in asdict(self).items() if k != "signature"}
        return (DOMAIN + canonical(fields)).encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return canonical(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> SignedHead:
        """Raises ``ValueError`` when ``data`` is not a signed head (a field missing or of a wrong type)."""
        types: dict[str, type | tuple[type, ...]] = {
            "stage_id": str,
            "session_id": str,
            "count": int,
            "head": str,
            "signed_at": (int, float),
            "final": bool,
            "key_id": str,
            "signature": str,
        }
        if not isinstance(data, dict):
            raise ValueError("not an object")
        for name, kind in types.items():
            value = data.get(name)
            if not isinstance(value, kind) or (name == "count" and isinstance(value, bool)):
                raise ValueError(f"field {name} missing or not a {kind}")
        return cls(**{name: data[name] for name in types})

    def valid(self, public: Ed25519PublicKey) -> bool:
        """Whether ``public`` made this signature over these fields."""
        try:
            public.verify(base64.b64decode(self.signature, validate=True), self.payload())
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


class NodeKey:
    """The node's signing key (Ed25519), read from or created at ``path`` (0600, its directory 0700)."""

    def __init__(self, private: Ed25519PrivateKey, path: Path | None = None) -> None:
        self.private = private
        self.public = private.public_key()
        self.id = key_id(self.public)
        self.path = path

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> NodeKey:
        """The key at ``path``; a new one written there first when there is none (blocking: a few
        small writes and fsyncs, once per node). Its public half is written beside it (``.pub``)."""
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            try:  # O_EXCL: two nodes starting on one data directory keep the first key
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
                    f.flush()
                    os.fsync(f.fileno())
                fsync_dir(path.parent)
        key = cls(load_private_key(path), path)
        pub = path.with_name(path.name + ".pub")
        if not pub.exists() or pub.read_bytes() != public_pem(key.public):
            write_atomic(pub, public_pem(key.public))
        return key

    def sign(self, head: SignedHead) -> SignedHead:
        unsigned = SignedHead(**{**head.to_dict(), "key_id": self.id, "signature": ""})
        signature = base64.b64encode(self.private.sign(unsigned.payload())).decode("ascii")
        return SignedHead(**{**unsigned.to_dict(), "signature": signature})

    def publish(self, recordings_dir: str | os.PathLike[str]) -> Path:
        """Write the public key beside the recordings (``<dir>/.keys/<key id>.pub``: no stage id starts
        with a dot) for whoever checks them; a convenience, not a trust anchor (whoever can write
        there can replace it)."""
        path = Path(recordings_dir) / ".keys" / (self.id.replace(":", "-") + ".pub")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, public_pem(self.public))
        return path


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise SigningKeyError(f"cannot read the signing key {path}: {exc.strerror or exc}") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{path} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 key")
    return key


def load_public_key(source: str) -> Ed25519PublicKey:
    """A public key from a file (PEM public key, or PEM private key: its public half) or given inline
    as the base64 of the raw 32 bytes (the manifest's ``ledger_key.public_key``)."""
    path = Path(source)
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if b"PRIVATE KEY" in data:
            return load_private_key(path).public_key()
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError(f"{path} is not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{path} is not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(source, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise SigningKeyError(
            f"{source!r} is neither a key file nor the base64 of a raw Ed25519 public key"
        ) from None


def read_heads(path: str | os.PathLike[str]) -> tuple[list[tuple[int, SignedHead | None]], bool]:
    """Every complete line of a heads file as ``(line number, head or None when unreadable)``, and
    whether an incomplete last line (a write cut short by a crash) followed them."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], False
    *lines, tail = data.split(b"\n")
    heads: list[tuple[int, SignedHead | None]] = []
    for number, raw in enumerate(lines, 1):
        try:
            heads.append((number, SignedHead.from_dict(json.loads(raw.decode("utf-8")))))
        except (UnicodeDecodeError, ValueError):
            heads.append((number, None))
    return heads, bool(tail)


def append_head(path: Path, head: SignedHead) -> None:
    """Append one signed head and fsync it (blocking: call it off the event loop)."""
    created = not path.exists()
    with open(path, "a", encoding="utf-8", newline="\n") as f:
        f.write(head.line() + "\n")
        f.flush()
        os.fsync(f.fileno())
    if created:
        fsync_dir(path.parent)


def drop_incomplete_tail(path: Path) -> int:
    """Remove what follows the last newline of a heads file (a write cut short by a crash); returns
    the bytes removed. Complete lines are never touched."""
    data = path.read_bytes()
    tail = len(data) - (data.rfind(b"\n") + 1)
    if tail:
        with open(path, "r+b") as f:
            f.truncate(len(data) - tail)
            f.flush()
            os.fsync(f.fileno())
    return tail


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary file, fsynced, renamed over it, and its directory fsynced:
    after a crash the file is the old one or the new one, never a mix (blocking)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)

