"""Sealed files: a recorded track encrypted at rest with its publisher's key (issue 15).

Destroying the person's key (erasure) shreds the media wherever the file was copied. The format
(docs/recording.md, "Sealed track files")::

    MAGIC (18 bytes, b"MEDSTAGE-SEALED/1\\n") | key id (16 bytes) | file id (16 random bytes)
    then chunks, each: length (u32 big-endian) | envelope (recording/keys.py) of up to CHUNK_BYTES

A chunk's envelope is sealed with associated data ``file id | chunk index (u64 big-endian)``: a chunk
moved to another place, or into another file, does not open. The writer seals a chunk whenever its
buffer is full and on every ``flush``, each chunk written in one ``write`` call, so a crash loses at
most what was not flushed, and leaves at most a cut last chunk, which readers ignore. Any other damage
(an altered byte, a chunk of another key) raises ``SealedError``: it is never read as an erasure.

``open_plaintext`` gives a seekable, buffered stream of the plaintext that decrypts one chunk at a
time (PyAV reads it as it reads a file); the whole file is never in memory.
"""

from __future__ import annotations

import bisect
import io
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from recording.keys import ENVELOPE_VERSION, EnvelopeError, PersonKey, open_, seal
from recording.keys import HEADER_BYTES as ENVELOPE_HEADER
from recording.keys import TAG_BYTES as ENVELOPE_TAG
from recording.vault import KeyRing

__all__ = [
    "CHUNK_BYTES",
    "MAGIC",
    "SUFFIX",
    "SealedError",
    "SealedInfo",
    "SealedKeyMissing",
    "SealedWriter",
    "inspect",
    "iter_plaintext",
    "key_id_of",
    "open_plaintext",
    "plain_name",
    "seal_stream",
]

MAGIC = b"MEDSTAGE-SEALED/1\n"
KEY_ID_BYTES = 16
FILE_ID_BYTES = 16
HEADER_BYTES = len(MAGIC) + KEY_ID_BYTES + FILE_ID_BYTES
CHUNK_BYTES = 64 * 1024  # plaintext per chunk at most: what a crash can lose past the last flush
OVERHEAD = ENVELOPE_HEADER + ENVELOPE_TAG  # 45 bytes of envelope per chunk, plus the 4-byte length
MAX_CHUNK = 16 * 1024 * 1024  # a reader refuses longer chunks (a damaged length, not a real chunk)
SUFFIX = ".sealed"
_LENGTH = struct.Struct(">I")


class SealedError(Exception):
    """A sealed file that cannot be read: ``code`` is ``not_sealed``, ``damaged`` (its structure) or
    ``tampered`` (a chunk does not authenticate)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SealedKeyMissing(SealedError):
    """The file's key is not in the ring: destroyed (erased) or not loaded."""

    def __init__(self, key_id: str, path: str | os.PathLike[str]) -> None:
        super().__init__("key_missing", f"{Path(path).name}: its key {key_id} is not available")
        self.key_id = key_id


def plain_name(path: str | os.PathLike[str]) -> str:
    """The file's name without ``.sealed`` (``a-video-1.webm.sealed`` -> ``a-video-1.webm``)."""
    name = Path(path).name
    return name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name


def _aad(file_id: bytes, index: int) -> bytes:
    return file_id + index.to_bytes(8, "big")


# --- writing ------------------------------------------------------------------------------------------


class SealedWriter(io.RawIOBase):
    """A write-only file that seals what is written to it, ``chunk_bytes`` at a time.

    ``flush`` seals what is buffered (even a short chunk) and hands it to the OS; ``fsync`` puts it on
    disk. Not seekable (PyAV then never seeks back): a live muxer writes straight through.
    ``hold_head=True`` (a finalize's copy, written whole before it is renamed into place) keeps the
    first chunk in memory until ``close`` and lets the muxer seek back into it (the regular Matroska
    muxer patches its header, duration and index position at the end), never further.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: PersonKey,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        hold_head: bool = False,
        mode: int = 0o644,
    ) -> None:
        super().__init__()
        if not 0 < chunk_bytes <= MAX_CHUNK - OVERHEAD:
            raise ValueError("chunk_bytes out of range")
        self.path = Path(path)
        self.key = key
        self.file_id = secrets.token_bytes(FILE_ID_BYTES)
        self._chunk = chunk_bytes
        self._hold = hold_head
        self._index = 0  # of the next chunk to seal
        self._buffer = bytearray()
        self._pos = 0  # where the next write goes (plaintext offset)
        self._end = 0  # plaintext bytes written so far
        self._head: bytearray | None = bytearray() if hold_head else None
        # A failed write (ENOSPC) may have left part of a chunk: nothing is written after it, so the
        # file ends with at most one cut chunk (which readers ignore), never a cut chunk mid-file.
        self._broken: OSError | None = None
        self._fd = -1
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        try:
            self._write_all(MAGIC + bytes.fromhex(key.key_id) + self.file_id)
            if hold_head:  # the first chunk's place, filled at close
                self._write_all(b"\0" * (_LENGTH.size + OVERHEAD + chunk_bytes))
                self._index = 1
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            super().close()
            raise

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._hold

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self._hold:
            raise io.UnsupportedOperation("a sealed file is written straight through")
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._end}
        target = bases[whence] + offset
        if target != self._end and not 0 <= target <= self._chunk:
            raise OSError(f"{self.path.name}: cannot seek back to {target}, past the held head")
        self._pos = target
        return target

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to a closed sealed file")
        view = memoryview(data).cast("B")
        n = len(view)
        if self._head is not None and self._pos < self._chunk:
            # Inside the held head: overwrite or extend it (only a finalize's copy does this).
            take = min(n, self._chunk - self._pos)
            if self._pos > len(self._head):
                raise OSError("a gap in the held head")
            self._head[self._pos : self._pos + take] = view[:take]
            self._pos += take
            self._end = max(self._end, self._pos)
            view = view[take:]
            if not view:
                return n
        if self._pos != self._end:
            raise OSError(f"{self.path.name}: a sealed file is only appended to past its head")
        self._buffer += view
        self._pos = self._end = self._end + len(view)
        while len(self._buffer) >= self._chunk:
            self._seal(bytes(self._buffer[: self._chunk]))
            del self._buffer[: self._chunk]
        return n

    def flush(self) -> None:
        """Seal what is buffered as one chunk (a crash then loses none of it) and hand it to the OS."""
        if self.closed:
            return
        if self._buffer:
            self._seal(bytes(self._buffer))
            self._buffer.clear()

    def fsync(self) -> None:
        self.flush()
        os.fsync(self._fd)

    def close(self) -> None:
        if self.closed:
            return
        if self._fd < 0:
            super().close()
            return
        try:
            self.flush()
            if self._head is not None and self._broken is None:
                head = bytes(self._head)
                if len(head) != self._chunk and self._end > len(head):
                    raise OSError("the held head is incomplete")
                chunk = self._chunk_bytes(head, 0)
                # The placeholder is sized for a full head; a short file has a short head, and then
                # nothing follows it: write it in place and cut the rest.
                os.pwrite(self._fd, chunk, HEADER_BYTES)
                if len(head) < self._chunk:
                    os.ftruncate(self._fd, HEADER_BYTES + len(chunk))
        finally:
            os.close(self._fd)
            self._fd = -1
            super().close()

    def _chunk_bytes(self, plaintext: bytes, index: int) -> bytes:
        envelope = seal(self.key, plaintext, _aad(self.file_id, index))
        return _LENGTH.pack(len(envelope)) + envelope

    def _seal(self, plaintext: bytes) -> None:
        if self._broken is not None:
            raise OSError(self._broken.errno, f"{self.path.name}: an earlier write failed: {self._broken}")
        try:
            self._write_all(
                self._chunk_bytes(plaintext, self._index)
            )  # one write: a crash cuts it, never mixes
        except OSError as exc:
            self._broken = exc
            raise
        self._index += 1

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]


def seal_stream(source: BinaryIO, path: str | os.PathLike[str], key: PersonKey) -> int:
    """Copy ``source`` (plaintext) into a new sealed file at ``path``, fsynced; the bytes copied."""
    total = 0
    with SealedWriter(path, key) as out:
        for block in iter(lambda: source.read(CHUNK_BYTES), b""):
            out.write(block)
            total += len(block)
        out.fsync()
    return total


# --- reading ------------------------------------------------------------------------------------------


def key_id_of(path: str | os.PathLike[str]) -> str | None:
    """The id of the key a sealed file was made with; None when ``path`` is not a sealed file."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + KEY_ID_BYTES)
    except (FileNotFoundError, IsADirectoryError):
        return None
    if len(head) < len(MAGIC) + KEY_ID_BYTES or not head.startswith(MAGIC):
        return None
    return head[len(MAGIC) :].hex()


@dataclass(frozen=True, slots=True)
class SealedInfo:
    """A sealed file's structure, read without its key."""

    key_id: str
    file_id: str
    chunks: int
    plaintext_bytes: int
    truncated_bytes: int  # of a cut last chunk (a crash while writing), ignored by readers


@dataclass(frozen=True, slots=True)
class _Chunk:
    start: int  # plaintext offset
    offset: int  # of its envelope in the file
    length: int  # of its envelope

    @property
    def size(self) -> int:
        return self.length - OVERHEAD


def _header(f: BinaryIO, name: str) -> tuple[str, bytes]:
    head = f.read(HEADER_BYTES)
    if head[: len(MAGIC)] != MAGIC:
        raise SealedError("not_sealed", f"{name}: not a sealed file")
    if len(head) < HEADER_BYTES:
        raise SealedError("damaged", f"{name}: the header is cut short")
    return head[len(MAGIC) : len(MAGIC) + KEY_ID_BYTES].hex(), head[len(MAGIC) + KEY_ID_BYTES :]


def _scan(f: BinaryIO, name: str, key_id: str) -> tuple[list[_Chunk], int]:
    """Every complete chunk (checked to be an envelope of ``key_id``), and the bytes of a cut tail."""
    size = os.fstat(f.fileno()).st_size
    chunks: list[_Chunk] = []
    pos, start = HEADER_BYTES, 0
    while pos < size:
        f.seek(pos)
        prefix = f.read(_LENGTH.size + ENVELOPE_HEADER)
        if len(prefix) < _LENGTH.size:
            break
        (length,) = _LENGTH.unpack_from(prefix)
        if length > MAX_CHUNK or length <= OVERHEAD:
            raise SealedError("damaged", f"{name}: chunk {len(chunks)} has an impossible length {length}")
        if pos + _LENGTH.size + length > size:
            break  # cut by a crash while it was written
        if prefix[_LENGTH.size] != ENVELOPE_VERSION:
            raise SealedError("damaged", f"{name}: chunk {len(chunks)} is no envelope of a known version")
        if prefix[_LENGTH.size + 1 : _LENGTH.size + 1 + KEY_ID_BYTES].hex() != key_id:
            raise SealedError("tampered", f"{name}: chunk {len(chunks)} is sealed with another key")
        chunks.append(_Chunk(start, pos + _LENGTH.size, length))
        start += length - OVERHEAD
        pos += _LENGTH.size + length
    return chunks, size - pos


def inspect(path: str | os.PathLike[str]) -> SealedInfo:
    """The structure of a sealed file (no key needed); ``SealedError`` when it is not one or damaged."""
    name = Path(path).name
    with open(path, "rb") as f:
        key_id, file_id = _header(f, name)
        chunks, cut = _scan(f, name, key_id)
    total = chunks[-1].start + chunks[-1].size if chunks else 0
    return SealedInfo(key_id, file_id.hex(), len(chunks), total, cut)


class _PlainReader(io.RawIOBase):
    """The plaintext of a sealed file, seekable, one decrypted chunk kept."""

    def __init__(self, f: BinaryIO, name: str, key: PersonKey, file_id: bytes, chunks: list[_Chunk]) -> None:
        super().__init__()
        self._f = f
        self._name = name
        self._key = key
        self._file_id = file_id
        self._chunks = chunks
        self._starts = [c.start for c in chunks]
        self._size = chunks[-1].start + chunks[-1].size if chunks else 0
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise OSError("negative seek position")
        self._pos = target
        return target

    @property
    def size(self) -> int:
        return self._size

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._pos >= self._size:
            return 0
        index = bisect.bisect_right(self._starts, self._pos) - 1
        plain = self._plaintext(index)
        skip = self._pos - self._chunks[index].start
        n = min(len(buffer), len(plain) - skip)
        memoryview(buffer).cast("B")[:n] = plain[skip : skip + n]
        self._pos += n
        return n

    def _plaintext(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        chunk = self._chunks[index]
        self._f.seek(chunk.offset)
        envelope = self._f.read(chunk.length)
        try:
            plain = open_(self._key, envelope, _aad(self._file_id, index))
        except EnvelopeError as exc:
            raise SealedError("tampered", f"{self._name}: chunk {index} does not authenticate") from exc
        self._cached = (index, plain)
        return plain

    def close(self) -> None:
        if not self.closed:
            self._f.close()
            self._cached = None
        super().close()


def open_plaintext(path: str | os.PathLike[str], ring: KeyRing) -> BinaryIO:
    """A readable, seekable binary stream of the plaintext of the sealed file at ``path``.

    ``SealedKeyMissing`` when the file's key is not in ``ring``; ``SealedError`` when it is no sealed
    file or its structure is damaged (at once), or when a chunk does not authenticate (as it is read).
    A cut last chunk (a crash while writing) is left out.
    """
    name = Path(path).name
    f = open(path, "rb")  # the stream owns it and closes it
    try:
        key_id, file_id = _header(f, name)
        key = ring.by_id(key_id)
        if key is None:
            raise SealedKeyMissing(key_id, path)
        chunks, _ = _scan(f, name, key_id)
    except BaseException:
        f.close()
        raise
    return io.BufferedReader(_PlainReader(f, name, key, file_id, chunks), CHUNK_BYTES)


def iter_plaintext(path: str | os.PathLike[str], ring: KeyRing, block: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The plaintext in blocks (a download, a copy)."""
    with open_plaintext(path, ring) as stream:
        yield from iter(lambda: stream.read(block), b"")
