"""A session as recorded before encryption (plaintext timeline and tracks), with three people who each
leave unique markers (comment text, question text, track bytes), to check an erasure byte by byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

from media.peer import MediaConfig
from media.room import MediaRoom
from recording.session import SessionRecorder
from recording.signing import NodeKey
from rooms.polls import PollSpec
from rooms.roles import Role
from rooms.stage import Stage, StageSettings

POLICY = "2026-11"
T0 = 1_795_703_000.0
PEOPLE = [
    ("p-host", "Dr Host", Role.HOST, "host@x"),
    ("p-alice", "Alice Zqxwv", Role.AUDIENCE, "alice@x"),
    ("p-bob", "Bob Ykjhg", Role.AUDIENCE, "bob@x"),
]


def marker(pid: str, what: str) -> str:
    return f"MARK-{what}-{pid}-{'7f3a9' if 'alice' in pid else 'c51e0'}"


async def record_plain_session(
    root: Path, key: NodeKey | None, session_id: str = "old-1", stage_id: str = "cardio"
) -> Path:
    """Everyone consents to everything; Alice reconnects (p-alice-2); each comments and asks with a
    marker; a named poll where all three vote; a quiz; a track file per participant with a marker."""
    now = T0 - 60
    stage = Stage(stage_id, "Cardiology", now, settings=StageSettings(recording_mode="manual"))
    media = MediaRoom(stage_id, MediaConfig(), lambda pid, message: None)
    for n, (pid, name, role, identity) in enumerate(PEOPLE):
        stage.join(pid, name, role, now, identity=identity)
        stage.give_consent(
            pid, frozenset({"media", "comments", "share"}), POLICY, "join_prompt", now, f"c-{n}"
        )
    failures: list[str] = []
    events = stage.start_recording("p-host", session_id, T0)
    recorder = SessionRecorder(
        root, stage, media, session_id, T0, failures.append, clock=lambda: T0, signing_key=key
    )
    recorder.on_events(events)

    def at(offset: float, batch: list) -> None:  # type: ignore[type-arg]
        recorder.clock = lambda: T0 + offset
        recorder.on_events(batch)

    for n, (pid, _, _, _) in enumerate(PEOPLE):
        at(2 + n, stage.post_comment(pid, f"cm-{pid}", marker(pid, "COMMENT"), T0 + 2 + n))
        at(2 + n, stage.ask_question(pid, f"q-{pid}", marker(pid, "QUESTION"), T0 + 2 + n))
    at(
        10,
        stage.create_poll("p-host", "poll-1", PollSpec("Which drug?", ("A", "B"), anonymous=False), T0 + 10),
    )
    at(10, stage.open_poll("p-host", "poll-1", T0 + 10))
    at(11, stage.vote("p-alice", "poll-1", [1], T0 + 11))
    at(11, stage.vote("p-bob", "poll-1", [0], T0 + 11))
    at(11, stage.vote("p-host", "poll-1", [1], T0 + 11))
    at(12, stage.close_poll("p-host", "poll-1", T0 + 12))
    quiz = PollSpec("2 + 2?", ("3", "4", "5"), quiz=True, correct=(1,))
    at(13, stage.create_poll("p-host", "quiz-1", quiz, T0 + 13))
    at(13, stage.open_poll("p-host", "quiz-1", T0 + 13))
    at(14, stage.vote("p-alice", "quiz-1", [1], T0 + 14))
    at(14, stage.vote("p-bob", "quiz-1", [2], T0 + 14))
    at(15, stage.close_poll("p-host", "quiz-1", T0 + 15))
    at(20, stage.leave("p-alice", T0 + 20))
    at(30, stage.join("p-alice-2", "Alice Zqxwv", Role.AUDIENCE, T0 + 30, identity="alice@x"))
    at(31, stage.post_comment("p-alice-2", "cm-alice-2", marker("p-alice-2", "COMMENT"), T0 + 31))
    at(60, stage.stop_recording("p-host", T0 + 60))
    await recorder.stop(T0 + 60)
    assert failures == []
    add_tracks(recorder.dir, ["p-host", "p-alice", "p-alice-2", "p-bob"])
    return recorder.dir


def add_tracks(session: Path, pids: list[str]) -> None:
    """A plaintext track file per participant (its bytes carry a marker) and its manifest entry, as
    the recorder writes them before encryption."""
    manifest = json.loads((session / "manifest.json").read_text(encoding="utf-8"))
    for pid in pids:
        path = session / "tracks" / f"{pid}-audio-1.webm"
        path.write_bytes(b"\x1aE\xdf\xa3" + marker(pid, "MEDIA").encode() + os.urandom(64))
        manifest["tracks"].append(
            {"participant_id": pid, "kind": "audio", "source": "camera", "file": f"tracks/{path.name}"}
        )
    (session / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def sealed_file(path: Path, key_id: str, payload: bytes = b"") -> Path:
    """A file in the sealed track format's header (recording/sealed.py), its body opaque."""
    path.write_bytes(b"MEDSTAGE-SEALED/1\n" + bytes.fromhex(key_id) + os.urandom(16) + payload)
    return path


def grep(root: Path, needle: str) -> list[Path]:
    """Every file under ``root`` whose raw bytes hold ``needle`` (UTF-8)."""
    raw = needle.encode("utf-8")
    return [p for p in root.rglob("*") if p.is_file() and raw in p.read_bytes()]
