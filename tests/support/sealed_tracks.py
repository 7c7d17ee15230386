"""Reading a node's recorded tracks in tests: sealed ones through the keys the node keeps on disk
(``keys/people/`` beside its recordings directory), plain ones as they are."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from av.container import InputContainer

from recording.keys import FileKeyStore, default_keys_dir
from recording.sealed import key_id_of, open_plaintext
from recording.tracks import open_track
from recording.vault import KeyRing, load_ring


def ring_at(recordings_dir: Path) -> KeyRing:
    """Every live key of the node whose recordings are under ``recordings_dir`` (callable from a
    test's event loop: the store is read on a thread of its own)."""
    store = FileKeyStore(default_keys_dir(recordings_dir))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(load_ring(store))).result()


def recordings_dir_of(track: Path) -> Path:
    """``<recordings>/<stage>/<session>/tracks/<file>`` -> ``<recordings>``."""
    return track.parents[3]


@contextmanager
def open_recorded(track: Path) -> Iterator[InputContainer]:
    """A node's track file opened for demuxing, sealed or not."""
    with open_track(track, ring_at(recordings_dir_of(track))) as container:
        yield container


def ffprobe_input(track: Path) -> tuple[str, bytes | None]:
    """What to give ffprobe for a track: its path, or (sealed) ``pipe:0`` and the plaintext."""
    if key_id_of(track) is None:
        return str(track), None
    with open_plaintext(track, ring_at(recordings_dir_of(track))) as stream:
        return "pipe:0", stream.read()


def ffprobe(args: list[str], track: Path) -> str:
    """ffprobe ``args`` on the track (sealed: its plaintext through a pipe, never a file)."""
    source, data = ffprobe_input(track)
    return subprocess.run(
        ["ffprobe", *args, source], input=data, capture_output=True, check=True
    ).stdout.decode()
