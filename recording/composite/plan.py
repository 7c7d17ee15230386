"""What goes into a session's shared export: the manifest's tracks whose owner's last decision
granted ``share`` (recording/sharing.py), placed on one time axis, and a fingerprint of every input
so a changed one (a new decision in the ledger, a repaired file) invalidates an export in progress.

A sealed track (recording/sealed.py) is read through its publisher's key, which the plan carries to
the segment workers (pickled through their pipe, never on a command line); one whose key is not in the
ring (erased) is left out like a track whose owner did not grant ``share``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
from av.container import InputContainer

from recording.keys import PersonKey
from recording.sealed import SealedError, key_id_of
from recording.sharing import SharePolicy
from recording.tracks import open_input
from recording.vault import KeyRing


class ExportError(Exception):
    """The export cannot be made (no shared track, an unreadable manifest, a failed encoder)."""


@dataclass(frozen=True, slots=True)
class PlannedTrack:
    file: str  # relative to the session: the key of its tile
    path: Path
    participant_id: str
    kind: str  # "audio" or "video"
    source: str  # "camera" or "screen"
    start: float  # seconds from the export's origin (its first_frame_at)
    duration: float
    key: PersonKey | None = None  # the publisher's, for a sealed file

    @property
    def end(self) -> float:
        return self.start + self.duration

    def open(self, stack: ExitStack) -> InputContainer:
        """The file's container (a sealed one decrypted as it is read); what to close goes on ``stack``."""
        return open_input(self.path, KeyRing([self.key] if self.key is not None else []), stack)


@contextmanager
def opened(track: PlannedTrack) -> Iterator[InputContainer]:
    with ExitStack() as stack:
        yield track.open(stack)


@dataclass(frozen=True, slots=True)
class Plan:
    session_dir: Path
    origin: float  # wall-clock time (Unix seconds) of the export's 0: the earliest shared first frame
    duration: float
    tracks: tuple[PlannedTrack, ...]
    excluded: int  # tracks left out: their owner did not grant share (or the file has no frames)
    inputs: dict[str, Any]  # what the fingerprint covers, for the state file

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.inputs, sort_keys=True).encode()).hexdigest()

    def of_kind(self, kind: str) -> list[PlannedTrack]:
        return [t for t in self.tracks if t.kind == kind]


def _probe_duration(track: PlannedTrack, fallback: float) -> float:
    """The file's own duration (a finalized file has one); else what the manifest says."""
    try:
        with opened(track) as container:
            if container.duration:
                return max(fallback, container.duration / av.time_base)
    except (OSError, av.error.FFmpegError, SealedError):  # unreadable now: the export will say so
        pass
    return fallback


def _sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _usable(session_dir: Path, entry: Any) -> tuple[Path, float] | None:
    """A manifest track entry's file and first frame time, if it names a file with frames in the
    session (a damaged entry counts as a track left out, not as a reason to fail)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("participant_id"), str):
        return None
    first, name = entry.get("first_frame_at"), entry.get("file")
    if not isinstance(first, int | float) or not isinstance(name, str) or not entry.get("frames"):
        return None
    path = (session_dir / name).resolve()
    if session_dir.resolve() not in path.parents or not path.is_file():
        return None
    return path, float(first)


def plan_session(session_dir: Path, ring: KeyRing | None = None) -> Plan:
    """The shared export's inputs, from ``manifest.json`` and ``consent.jsonl``; sealed tracks are
    read with the keys of ``ring`` (a track whose key is not there is left out)."""
    try:
        manifest = json.loads((session_dir / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        policy = SharePolicy.of_session(session_dir)
    except (OSError, ValueError, TypeError, AttributeError) as exc:  # a damaged manifest or ledger
        raise ExportError(f"cannot read the session's manifest and consent ledger: {exc}") from exc
    chosen: list[tuple[dict[str, Any], Path, float, PersonKey | None]] = []
    excluded = 0
    tracks_listed = manifest.get("tracks")
    for entry in tracks_listed if isinstance(tracks_listed, list) else []:
        usable = _usable(session_dir, entry)
        if usable is None or not policy.track_shared(entry):
            excluded += 1
            continue
        key_id = key_id_of(usable[0])
        key = None if key_id is None else (ring or KeyRing()).by_id(key_id)
        if key_id is not None and key is None:
            excluded += 1  # sealed with a key this export does not have: erased (or not given)
            continue
        chosen.append((entry, *usable, key))
    if not chosen:
        raise ExportError("nothing to export: no recorded track's owner granted share")
    origin = min(first for _, _, first, _ in chosen)
    tracks = []
    files: list[dict[str, Any]] = []
    for entry, path, first, key in chosen:
        listed = entry.get("duration_s")
        track = PlannedTrack(
            file=str(entry["file"]),
            path=path,
            participant_id=str(entry["participant_id"]),
            kind=str(entry.get("kind")),
            source=str(entry.get("source") or "camera"),
            start=round(first - origin, 6),
            duration=0.0,
            key=key,
        )
        duration = _probe_duration(track, float(listed) if isinstance(listed, int | float) else 0.0)
        stat = path.stat()
        tracks.append(replace(track, duration=duration))
        files.append(
            {
                "file": entry["file"],
                "bytes": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
                "first_frame_at": first,
            }
        )
    tracks.sort(key=lambda t: (t.start, t.file))
    duration = max(t.end for t in tracks)
    inputs = {
        "tracks": sorted(files, key=lambda f: f["file"]),
        "consent": _sha256(session_dir / "consent.jsonl"),
    }
    return Plan(session_dir, origin, duration, tuple(tracks), excluded, inputs)
