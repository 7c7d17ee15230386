"""Track files as readers see them: plain (``.webm``, ``.mkv``) or sealed (``.webm.sealed``...).

Every reader of recorded media (repair, the composite export, downloads) opens a track through
:func:`open_track`, which decrypts a sealed file on the fly with the key from the ring
(recording/sealed.py): plaintext never reaches the disk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import av
from av.container import InputContainer

from recording.sealed import SUFFIX, key_id_of, open_plaintext, plain_name
from recording.vault import KeyRing

TRACK_SUFFIXES = {".webm": "webm", ".mkv": "matroska"}


def media_suffix(path: str | os.PathLike[str]) -> str:
    """``.webm`` for ``a.webm`` and for ``a.webm.sealed``."""
    return Path(plain_name(path)).suffix


def track_format(path: str | os.PathLike[str]) -> str | None:
    """The libavformat format of a track file (sealed or not); None: not a track file."""
    return TRACK_SUFFIXES.get(media_suffix(path))


def is_track_file(path: Path) -> bool:
    return track_format(path) is not None and not path.name.startswith(".") and path.is_file()


def is_sealed_name(path: str | os.PathLike[str]) -> bool:
    return Path(path).name.endswith(SUFFIX)


@contextmanager
def open_track(path: str | os.PathLike[str], ring: KeyRing | None = None) -> Iterator[InputContainer]:
    """The track's container for demuxing; a sealed file is decrypted as it is read. Raises
    ``SealedKeyMissing`` when its key is not in ``ring`` (erased), ``SealedError`` when damaged."""
    with ExitStack() as stack:
        yield open_input(path, ring, stack)


def open_input(path: str | os.PathLike[str], ring: KeyRing | None, stack: ExitStack) -> InputContainer:
    """:func:`open_track` for a caller that keeps the container open: what must be closed with it
    goes on ``stack``."""
    if key_id_of(path) is None:
        container = av.open(os.fspath(path))
    else:
        stream = stack.enter_context(open_plaintext(path, ring if ring is not None else KeyRing()))
        container = av.open(stream, "r", format=track_format(path))
    stack.callback(container.close)
    return container


def manifest_key_ids(session_dir: Path) -> set[str]:
    """The key ids the manifest names for the session's sealed tracks (empty: none, or unreadable)."""
    try:
        manifest = json.loads((session_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    tracks = manifest.get("tracks") if isinstance(manifest, dict) else None
    return {
        t["key_id"]
        for t in (tracks if isinstance(tracks, list) else [])
        if isinstance(t, dict) and isinstance(t.get("key_id"), str)
    }
