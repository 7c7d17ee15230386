"""Finalizing track files: a stream-copy remux that adds duration and cues, and repair after a crash.

A writer's file is muxed in live mode (no duration, no cues: nothing is ever rewritten in place, so a
crash cannot corrupt what is already on disk). Finalizing copies every readable packet into a temporary
file next to it with the regular muxer, which writes the duration and the cues (the index that makes the
file seekable), checks that the copy opens and holds every packet, and only then renames it over the
original. Packets are copied as they are: nothing is decoded or encoded.

A writer keeps ``NAME.partial`` next to its file until the file is finalized, so :func:`repair_session`
knows which files a crash left unfinalized; a file without a marker but without a duration is repaired
too (say the marker was lost).

A sealed file (recording/sealed.py) is finalized the same way, decrypted as it is read and sealed
again with the same key as it is written (a new file id): it needs its key in the ring; without it
(erased, or the key store not given) it is left as it is.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
from av.container import InputContainer

from recording.keys import PersonKey
from recording.sealed import SealedError, SealedWriter, key_id_of
from recording.tracks import TRACK_SUFFIXES, is_track_file, open_input, open_track, track_format
from recording.vault import KeyRing

__all__ = ["TRACK_SUFFIXES", "FinalizeResult", "RepairError", "finalize", "is_finalized", "repair_session"]
PARTIAL_SUFFIX = ".partial"
_TMP_INFIX = ".finalizing"


class RepairError(Exception):
    """A track file could not be finalized; the file itself was left as it was."""


class NoMediaError(RepairError):
    """The file opens but holds no media packet (the writer stopped right after the header)."""


class RepairFailed(Exception):
    """:func:`repair_session` could not repair every file: ``messages`` says what happened to each."""

    def __init__(self, messages: list[str], failed: list[Path]) -> None:
        super().__init__(f"{len(failed)} file(s) could not be repaired")
        self.messages = messages
        self.failed = failed


@dataclass(frozen=True, slots=True)
class FinalizeResult:
    path: Path
    packets: int
    duration: float | None  # seconds, as the finalized container states it
    truncated: bool  # reading stopped at a damaged tail (a crash mid-write); the rest was kept


def marker_path(path: str | os.PathLike[str]) -> Path:
    """The ``.partial`` marker that flags ``path`` as not finalized yet."""
    p = Path(path)
    return p.with_name(p.name + PARTIAL_SUFFIX)


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP_INFIX}{path.suffix}")


def is_finalized(path: str | os.PathLike[str], ring: KeyRing | None = None) -> bool:
    """True when the container states a duration (the live muxer never writes one, finalize does).
    A sealed file whose key is not in ``ring`` counts as not finalized."""
    try:
        with open_track(path, ring) as container:
            return container.duration is not None
    except (av.error.FFmpegError, OSError, SealedError):
        return False


def finalize(path: str | os.PathLike[str], ring: KeyRing | None = None) -> FinalizeResult:
    """Remux ``path`` in place (via a verified temporary copy) and drop its ``.partial`` marker.

    Raises :class:`RepairError` (or ``OSError``, e.g. ENOSPC for the copy) and leaves ``path`` untouched
    when no finalized copy could be made; a sealed file needs its key in ``ring`` (``RepairError``).
    """
    src = Path(path)
    fmt = track_format(src)
    if fmt is None:
        raise RepairError(f"{src.name}: not a track file (expected {', '.join(TRACK_SUFFIXES)})")
    key = None
    key_id = key_id_of(src)
    if key_id is not None:
        key = (ring or KeyRing()).by_id(key_id)
        if key is None:
            raise RepairError(f"{src.name}: sealed with key {key_id}, which is not available")
    tmp = _temp_path(src)
    try:
        copied, truncated = _remux(src, tmp, fmt, ring, key)
        if copied == 0:
            raise NoMediaError(f"{src.name}: no readable media packets")
        packets, duration = _probe(tmp, ring)
        if packets != copied:
            raise RepairError(f"{src.name}: the copy holds {packets} packets, {copied} were written")
        if duration is None:
            raise RepairError(f"{src.name}: the copy has no duration")
        _fsync(tmp)
        os.replace(tmp, src)
        _fsync(src.parent)
    finally:
        tmp.unlink(missing_ok=True)
    marker_path(src).unlink(missing_ok=True)
    return FinalizeResult(src, copied, duration, truncated)


def _remux(src: Path, dst: Path, fmt: str, ring: KeyRing | None, key: PersonKey | None) -> tuple[int, bool]:
    """Copy every readable audio/video packet of ``src`` into a new ``dst`` (sealed with ``key`` if
    given); (packets, truncated)."""
    with ExitStack() as stack:
        try:
            inp = open_input(src, ring, stack)
        except (av.error.FFmpegError, SealedError) as exc:
            raise RepairError(f"{src.name}: unreadable ({exc})") from exc
        target: str | SealedWriter = os.fspath(dst)
        if key is not None:
            # The regular muxer seeks back into the head to write the duration: the head is held.
            target = stack.enter_context(SealedWriter(dst, key, hold_head=True))
        return _copy_packets(src, inp, target, fmt)


def _copy_packets(src: Path, inp: InputContainer, target: str | SealedWriter, fmt: str) -> tuple[int, bool]:
    copied = 0
    truncated = False
    streams = [s for s in inp.streams if s.type in ("audio", "video")]
    if not streams:
        raise RepairError(f"{src.name}: no audio or video track")
    with av.open(target, "w", format=fmt) as out:
        # opaque=True: the stream takes the input's codec parameters; no encoder is looked up or opened.
        mapping = {s.index: out.add_stream_from_template(s, opaque=True) for s in streams}
        packets = inp.demux(*streams)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:  # a block cut short by the crash: keep what came before
                truncated = True
                break
            if packet.size == 0 or packet.pts is None:  # the demuxer's flush packets
                continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)  # write errors (ENOSPC) propagate: the original stays as it is
            copied += 1
    return copied, truncated


def _probe(path: Path, ring: KeyRing | None) -> tuple[int, float | None]:
    with open_track(path, ring) as container:
        packets = sum(1 for p in container.demux() if p.size)
        duration = None if container.duration is None else container.duration / 1_000_000
    return packets, duration


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_session(session_dir: str | os.PathLike[str], ring: KeyRing | None = None) -> list[str]:
    """Finalize every track file of a session that was not finalized (after a crash); one line per action.

    Only for a session no process is writing any more. Never deletes media: a file that cannot be
    repaired is left as it is and named in :class:`RepairFailed` (raised after every other file was
    handled). Leftover temporary copies of an interrupted finalize are
    removed (the original is intact: it is only replaced after the copy was verified). Sealed files
    are opened with the keys of ``ring``.
    """
    root = Path(session_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no session directory at {root}")
    messages: list[str] = []
    failed: list[Path] = []

    def rel(p: Path) -> str:
        return str(p.relative_to(root))

    for tmp in sorted(root.rglob(f".*{_TMP_INFIX}.*")):
        tmp.unlink()
        messages.append(f"removed {rel(tmp)}: temporary copy of an interrupted finalize")

    tracks = sorted(p for p in root.rglob("*") if is_track_file(p))
    for path in tracks:
        marker = marker_path(path)
        if not marker.exists() and is_finalized(path, ring):
            continue
        if path.stat().st_size == 0:
            marker.unlink(missing_ok=True)
            messages.append(f"{rel(path)}: empty (the writer stopped before any media), left as it is")
            continue
        try:
            result = finalize(path, ring)
        except NoMediaError:
            marker.unlink(missing_ok=True)
            messages.append(f"{rel(path)}: holds no media (the writer stopped before any), left as it is")
            continue
        except (RepairError, OSError, av.error.FFmpegError) as exc:
            failed.append(path)
            messages.append(f"{rel(path)}: could not finalize, left as it was: {exc}")
            continue
        tail = ", damaged tail dropped" if result.truncated else ""
        duration = "?" if result.duration is None else f"{result.duration:.3f} s"
        messages.append(f"{rel(path)}: finalized, {result.packets} packets, {duration}{tail}")

    for marker in sorted(root.rglob(f"*{PARTIAL_SUFFIX}")):
        media = marker.with_name(marker.name[: -len(PARTIAL_SUFFIX)])
        if not media.exists():
            marker.unlink()
            messages.append(f"{rel(media)}: never written (no keyframe before the stop), marker removed")

    if failed:
        raise RepairFailed(messages, failed)
    return messages
