"""What goes into a session's shared export: the manifest's tracks whose owner's last decision
granted ``share`` (recording/sharing.py), placed on one time axis, and a fingerprint of every input
so a changed one (a new decision in the ledger, a repaired file) invalidates an export in progress."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from recording.sharing import SharePolicy


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

    @property
    def end(self) -> float:
        return self.start + self.duration


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


def _probe_duration(path: Path, fallback: float) -> float:
    """The file's own duration (a finalized file has one); else what the manifest says."""
    try:
        with av.open(os.fspath(path)) as container:
            if container.duration:
                return max(fallback, container.duration / av.time_base)
    except (OSError, av.error.FFmpegError):
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


def plan_session(session_dir: Path) -> Plan:
    """The shared export's inputs, from ``manifest.json`` and ``consent.jsonl``."""
    try:
        manifest = json.loads((session_dir / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
        policy = SharePolicy.of_session(session_dir)
    except (OSError, ValueError, TypeError, AttributeError) as exc:  # a damaged manifest or ledger
        raise ExportError(f"cannot read the session's manifest and consent ledger: {exc}") from exc
    chosen: list[tuple[dict[str, Any], Path, float]] = []
    excluded = 0
    tracks_listed = manifest.get("tracks")
    for entry in tracks_listed if isinstance(tracks_listed, list) else []:
        usable = _usable(session_dir, entry)
        if usable is None or not policy.track_shared(entry):
            excluded += 1
            continue
        chosen.append((entry, *usable))
    if not chosen:
        raise ExportError("nothing to export: no recorded track's owner granted share")
    origin = min(first for _, _, first in chosen)
    tracks = []
    files: list[dict[str, Any]] = []
    for entry, path, first in chosen:
        listed = entry.get("duration_s")
        duration = _probe_duration(path, float(listed) if isinstance(listed, int | float) else 0.0)
        stat = path.stat()
        tracks.append(
            PlannedTrack(
                file=str(entry["file"]),
                path=path,
                participant_id=str(entry["participant_id"]),
                kind=str(entry.get("kind")),
                source=str(entry.get("source") or "camera"),
                start=round(first - origin, 6),
                duration=duration,
            )
        )
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
