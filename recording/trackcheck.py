"""What ``python -m recording verify`` checks of a session's sealed track files, without any key.

For each manifest track entry that says ``sealed`` (and each sealed file it names): the file is a sealed
file (its header), made with the key the entry names, and its chunks are well formed, each an envelope
of that key (recording/sealed.py's ``inspect``). A cut last chunk (a crash while writing) is said, not
a problem; a sealed entry whose file is a plain one, another key, or damaged structure is a problem.
Whether the chunks authenticate needs the key: ``repair``, the export and downloads check that as
they read. A file that is gone (deleted by retention or an erasure) is not a problem here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from recording.sealed import SealedError, inspect, key_id_of


@dataclass
class TrackCheck:
    lines: list[str] = field(default_factory=list)  # what was checked, one line per sealed file
    problems: list[str] = field(default_factory=list)


def check_tracks(session: Path) -> TrackCheck:
    result = TrackCheck()
    try:
        manifest = json.loads((session / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return result  # the ledger's check says what is wrong with the session
    tracks = manifest.get("tracks") if isinstance(manifest, dict) else None
    for entry in tracks if isinstance(tracks, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            continue
        path = session / entry["file"]
        if session.resolve() not in path.resolve().parents or not path.is_file():
            continue
        actual = key_id_of(path)
        if not entry.get("sealed"):
            if actual is not None:
                result.problems.append(f"{entry['file']}: sealed, but its manifest entry says it is not")
            continue
        if actual is None:
            result.problems.append(f"{entry['file']}: its manifest entry says sealed, the file is not")
            continue
        if actual != entry.get("key_id"):
            result.problems.append(
                f"{entry['file']}: sealed with key {actual}, its manifest entry names {entry.get('key_id')}"
            )
            continue
        try:
            info = inspect(path)
        except SealedError as exc:
            result.problems.append(f"{entry['file']}: {exc}")
            continue
        tail = f", a cut last chunk of {info.truncated_bytes} bytes ignored" if info.truncated_bytes else ""
        result.lines.append(
            f"{entry['file']}: sealed with key {actual}, {info.chunks} chunks, "
            f"{info.plaintext_bytes} bytes{tail}"
        )
    return result
