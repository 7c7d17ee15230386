"""Sealed files: round trip, a crash's cut tail ignored, damage said, a missing key said, streamed."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import pytest

from recording.keys import key_to_dict, new_key
from recording.sealed import (
    HEADER_BYTES,
    MAGIC,
    SealedError,
    SealedKeyMissing,
    SealedWriter,
    inspect,
    key_id_of,
    open_plaintext,
    seal_stream,
)
from recording.vault import KeyRing
from tests.conftest import ROOT

KEY = new_key("ana", 1.0)
RING = KeyRing([KEY])


def _write(path: Path, parts: list[bytes], chunk: int = 1000) -> None:
    with SealedWriter(path, KEY, chunk_bytes=chunk) as out:
        for part in parts:
            out.write(part)
            out.flush()


def test_round_trip_and_header(tmp_path: Path) -> None:
    path = tmp_path / "a.webm.sealed"
    data = os.urandom(5000) + b"MARKER-plaintext" * 100
    _write(path, [data[:10], data[10:2500], data[2500:]])
    raw = path.read_bytes()
    assert raw.startswith(MAGIC) and raw[len(MAGIC) : len(MAGIC) + 16] == bytes.fromhex(KEY.key_id)
    assert b"MARKER" not in raw
    assert key_id_of(path) == KEY.key_id
    with open_plaintext(path, RING) as stream:
        assert stream.read() == data
        stream.seek(2995)
        assert stream.read(20) == data[2995:3015]  # across a chunk boundary
        assert stream.seek(0, io.SEEK_END) == len(data)
    info = inspect(path)
    assert (info.key_id, info.plaintext_bytes, info.truncated_bytes) == (KEY.key_id, len(data), 0)
    assert info.chunks >= len(data) // 1000


def test_a_plain_file_is_not_sealed(tmp_path: Path) -> None:
    plain = tmp_path / "a.webm"
    plain.write_bytes(b"\x1aE\xdf\xa3" + b"\0" * 100)
    assert key_id_of(plain) is None and key_id_of(tmp_path / "missing") is None
    with pytest.raises(SealedError) as caught:
        open_plaintext(plain, RING)
    assert caught.value.code == "not_sealed"


def test_a_cut_last_chunk_is_ignored(tmp_path: Path) -> None:
    """A crash while a chunk was written: everything flushed before it reads back."""
    path = tmp_path / "a.sealed"
    last = 4 + 45 + 700  # the last chunk: length prefix, envelope overhead, plaintext
    for cut in (1, 3, 30, 700, last - 2):
        _write(path, [b"a" * 700, b"b" * 700, b"c" * 700])
        os.truncate(path, path.stat().st_size - cut)
        with open_plaintext(path, RING) as stream:
            assert stream.read() == b"a" * 700 + b"b" * 700
        assert inspect(path).truncated_bytes == last - cut


def test_unflushed_bytes_are_all_a_crash_loses(tmp_path: Path) -> None:
    path = tmp_path / "a.sealed"
    out = SealedWriter(path, KEY, chunk_bytes=1000)
    out.write(b"x" * 2500)  # two full chunks sealed, 500 bytes buffered
    out.flush()
    out.write(b"y" * 10)  # not flushed: lost in a crash
    with open_plaintext(path, RING) as stream:
        assert stream.read() == b"x" * 2500
    out.close()
    with open_plaintext(path, RING) as stream:
        assert stream.read() == b"x" * 2500 + b"y" * 10


@pytest.mark.parametrize("where", ["ciphertext", "length", "key_id"])
def test_a_tampered_chunk_raises(tmp_path: Path, where: str) -> None:
    path = tmp_path / "a.sealed"
    _write(path, [b"a" * 900, b"b" * 900])
    raw = bytearray(path.read_bytes())
    first = HEADER_BYTES  # the first chunk's length prefix
    if where == "ciphertext":
        raw[first + 4 + 40] ^= 1
    elif where == "length":
        raw[first : first + 4] = (2**31).to_bytes(4, "big")
    else:
        raw[first + 5] ^= 1  # the envelope's key id
    path.write_bytes(bytes(raw))
    with pytest.raises(SealedError) as caught:
        with open_plaintext(path, RING) as stream:
            stream.read()
    assert caught.value.code in ("tampered", "damaged")
    assert not isinstance(caught.value, SealedKeyMissing)


def test_chunks_swapped_do_not_open(tmp_path: Path) -> None:
    path = tmp_path / "a.sealed"
    _write(path, [b"a" * 900, b"b" * 900])
    raw = path.read_bytes()
    size = 4 + 45 + 900
    one, two = raw[HEADER_BYTES : HEADER_BYTES + size], raw[HEADER_BYTES + size :]
    path.write_bytes(raw[:HEADER_BYTES] + two + one)
    with pytest.raises(SealedError) as caught, open_plaintext(path, RING) as stream:
        stream.read()
    assert caught.value.code == "tampered"


def test_wrong_or_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "a.sealed"
    _write(path, [b"secret" * 100])
    other = new_key("bob", 1.0)
    with pytest.raises(SealedKeyMissing) as caught:
        open_plaintext(path, KeyRing([other]))
    assert caught.value.key_id == KEY.key_id and caught.value.code == "key_missing"
    ring = KeyRing([KEY, other])
    ring.drop("ana")  # destroyed
    with pytest.raises(SealedKeyMissing):
        open_plaintext(path, ring)
    # A header naming another key than its chunks: damage, not a missing key.
    raw = bytearray(path.read_bytes())
    raw[len(MAGIC) : len(MAGIC) + 16] = bytes.fromhex(other.key_id)
    path.write_bytes(bytes(raw))
    with pytest.raises(SealedError) as wrong:
        open_plaintext(path, KeyRing([other]))
    assert wrong.value.code == "tampered"


def test_a_large_file_is_streamed(tmp_path: Path) -> None:
    """24 MiB in, read back in blocks: memory holds a chunk or two, never the file."""
    src = tmp_path / "plain.bin"
    block = os.urandom(1 << 20)
    with open(src, "wb") as f:
        for i in range(24):
            f.write(block[i:] + block[:i])
    path = tmp_path / "big.sealed"
    with open(src, "rb") as f:
        assert seal_stream(f, path, KEY) == 24 << 20
    tracemalloc.start()
    try:
        digest = hashlib.sha256()
        with open_plaintext(path, RING) as stream:
            for piece in iter(lambda: stream.read(100_000), b""):
                digest.update(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()
    assert peak < 2 << 20


def test_held_head_takes_patches_at_the_start(tmp_path: Path) -> None:
    """A finalize's copy: the muxer seeks back into the first chunk to patch it, then goes on."""
    path = tmp_path / "a.sealed"
    with SealedWriter(path, KEY, chunk_bytes=100, hold_head=True) as out:
        assert out.seekable()
        out.write(b"h" * 50)
        out.write(b"b" * 300)
        out.seek(10)
        out.write(b"PATCH")
        out.seek(0, io.SEEK_END)
        out.write(b"t" * 7)
        with pytest.raises(OSError):
            out.seek(200)
    with open_plaintext(path, RING) as stream:
        assert stream.read() == b"h" * 10 + b"PATCH" + b"h" * 35 + b"b" * 300 + b"t" * 7
    short = tmp_path / "short.sealed"
    with SealedWriter(short, KEY, chunk_bytes=100, hold_head=True) as out:
        out.write(b"tiny")
    with open_plaintext(short, RING) as stream:
        assert stream.read() == b"tiny"
    assert inspect(short).truncated_bytes == 0


FULL_DISK_CHILD = textwrap.dedent(
    """
    import errno, json, resource, signal, sys
    from recording.keys import key_from_dict
    from recording.sealed import SealedWriter

    key = key_from_dict(json.loads(sys.stdin.readline()))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG), like ENOSPC
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2500, hard))
    out = SealedWriter(sys.argv[1], key, chunk_bytes=1000)
    written = 0
    try:
        for i in range(10):
            out.write(bytes([65 + i]) * 1000)  # a full chunk each: sealed at once
            written += 1
    except OSError as exc:
        assert exc.errno == errno.EFBIG, exc
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again: nothing more is written
    try:
        out.write(b"z" * 1000)
        print("wrote after the failure")
    except OSError:
        pass
    try:
        out.close()
    except OSError:
        pass
    print(written)
    """
)


def test_a_write_that_fails_mid_chunk_ends_the_file_there(tmp_path: Path) -> None:
    """ENOSPC (here EFBIG, a file size limit) cuts a chunk: the writer writes nothing after it, so the
    file reads back whole up to the last complete chunk, even when space comes back."""
    path = tmp_path / "full.sealed"
    run = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, str(path)],
        input=json.dumps(key_to_dict(KEY)) + "\n", capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    complete = int(run.stdout.split()[-1])
    assert complete == 2 and "wrote after" not in run.stdout  # 50 + 2 x 1049 bytes fit in 2500
    assert path.stat().st_size == 2500  # the third chunk cut where the limit was
    with open_plaintext(path, RING) as stream:
        assert stream.read() == b"A" * 1000 + b"B" * 1000
    assert inspect(path).truncated_bytes == 2500 - HEADER_BYTES - 2 * (4 + 45 + 1000)


def test_a_ring_remembers_whose_key_was_dropped_until_a_new_one_comes() -> None:
    ring = KeyRing([KEY])
    assert not ring.dropped("ana") and not ring.dropped("nobody")
    ring.drop("ana")
    assert ring.dropped("ana") and ring.for_identity("ana") is None
    ring.put(new_key("ana", 2.0))  # back after the erasure, with a new key
    assert not ring.dropped("ana")
