"""Three people recorded in two sessions by the project's own recorder (recording/session.py) from a
real domain stage, for the subject access export and correction tests.

Everything personal carries a marker naming its owner (``ALICE-…``, ``BOB-…``, ``CAROL-…``), so a
test can grep an archive for anybody else's. Session ``cardio/s-1``: Carol hosts (media, comments,
share), Alice (comments, share) and Bob (comments only) comment, ask, vote in a named poll and a quiz;
Alice's and Bob's second comments are stored sealed with their keys (the shape of recording/vault.py);
each of the three has a microphone track of their own pitch (``TONES``). Session ``neuro/s-2``: only
Bob and Carol (Alice is absent).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import av
import msgpack
import numpy as np

from media.peer import MediaConfig
from media.room import MediaRoom
from recording.keys import new_key
from recording.session import SessionRecorder
from recording.signing import NodeKey
from recording.vault import KeyRing, seal_value
from rooms.polls import PollSpec
from rooms.roles import Role
from rooms.stage import Stage, StageSettings
from tests.support.session_maker import Capture, Speaker, _audio

POLICY = "2026-11"  # the default consent_policy_version
T0 = 1_796_000_000.0
PEOPLE = {"alice@x": "p-alice", "bob@x": "p-bob", "carol@x": "p-carol"}
MARKERS = {"alice@x": "ALICE", "bob@x": "BOB", "carol@x": "CAROL"}
TONES = {"alice@x": 440.0, "bob@x": 880.0, "carol@x": 1320.0}


@dataclass(frozen=True)
class Three:
    root: Path
    sessions: list[Path]
    ring: KeyRing


async def _session(
    root: Path,
    key: NodeKey | None,
    ring: KeyRing,
    stage_id: str,
    session_id: str,
    who: list[tuple[str, str, Role, frozenset[str]]],
    t0: float,
) -> Path:
    now = t0 - 10
    stage = Stage(stage_id, stage_id.title(), now, settings=StageSettings(recording_mode="manual"))
    media = MediaRoom(stage_id, MediaConfig(), lambda pid, message: None)
    for identity, name, role, _ in who:
        stage.join(PEOPLE[identity], name, role, now, identity=identity)
    for n, (identity, _, _, scopes) in enumerate(who):
        stage.give_consent(PEOPLE[identity], scopes, POLICY, "join_prompt", now, f"c-{session_id}-{n}")
    failures: list[str] = []
    events = stage.start_recording("p-carol", session_id, t0)
    recorder = SessionRecorder(
        root, stage, media, session_id, t0, failures.append, clock=lambda: t0, signing_key=key, ring=ring
    )
    recorder.on_events(events)

    def at(offset: float, batch: list) -> None:  # type: ignore[type-arg]
        recorder.clock = lambda: t0 + offset
        recorder.on_events(batch)

    present = [identity for identity, *_ in who]
    for n, identity in enumerate(present):
        pid, mark = PEOPLE[identity], MARKERS[identity]
        at(
            2 + n,
            stage.post_comment(pid, f"cm-{session_id}-{pid}", f"{mark}-COMMENT-{session_id}", t0 + 2 + n),
        )
        if identity != "carol@x":
            at(
                5 + n,
                stage.ask_question(pid, f"q-{session_id}-{pid}", f"{mark}-QUESTION-{session_id}", t0 + 5 + n),
            )
    poll = PollSpec("Which drug?", ("A", "B"), anonymous=False)
    at(10, stage.create_poll("p-carol", f"poll-{session_id}", poll, t0 + 10))
    at(10, stage.open_poll("p-carol", f"poll-{session_id}", t0 + 10))
    quiz = PollSpec("2 + 2?", ("3", "4"), quiz=True, correct=(1,))
    at(11, stage.create_poll("p-carol", f"quiz-{session_id}", quiz, t0 + 11))
    at(11, stage.open_poll("p-carol", f"quiz-{session_id}", t0 + 11))
    for n, identity in enumerate(i for i in present if i != "carol@x"):
        at(12, stage.vote(PEOPLE[identity], f"poll-{session_id}", [n % 2], t0 + 12))
        at(
            12,
            stage.vote(PEOPLE[identity], f"quiz-{session_id}", [1 if identity == "alice@x" else 0], t0 + 12),
        )
    at(13, stage.close_poll("p-carol", f"poll-{session_id}", t0 + 13))
    at(13, stage.close_poll("p-carol", f"quiz-{session_id}", t0 + 13))
    if stage_id == "cardio":
        at(14, stage.answer_question("p-carol", f"q-{session_id}-p-alice", t0 + 14))
    if stage_id == "cardio":  # the host mutes Bob in the chat, with a reason that names him
        at(15, stage.chat_mute("p-carol", "p-bob", True, t0 + 15))
    at(20, stage.leave("p-bob", t0 + 20))
    at(30, stage.stop_recording("p-carol", t0 + 30))
    await recorder.stop(t0 + 30)
    assert failures == []
    return recorder.dir


def _add_sealed_comments(session: Path, ring: KeyRing, identities: list[str]) -> None:
    """A second comment of each, as sealitems stores them: the text sealed with the author's key."""
    with open(session / "timeline.msgpack", "ab") as f:
        for identity in identities:
            pid, key = PEOPLE[identity], ring.for_identity(identity)
            assert key is not None
            text = seal_value(key, f"{MARKERS[identity]}-SEALED-COMMENT", "comment")
            comment = {
                "id": f"cm-sealed-{pid}",
                "author_id": pid,
                "author_name": "x",
                "text": text,
                "at": T0 + 25,
            }
            event = {
                "type": "comment.posted",
                "stage_id": session.parent.name,
                "at": T0 + 25,
                "comment": comment,
            }
            f.write(msgpack.packb(event, use_bin_type=True))
    (session / "timeline.json").unlink(missing_ok=True)  # the msgpack timeline is the one read


def _add_tracks(session: Path, identities: list[str]) -> None:
    """One microphone each (Opus in WebM, by the recorder's TrackWriter): a continuous tone of the
    person's own pitch (``TONES``), noted in the manifest as the recorder notes a capture."""
    manifest = json.loads((session / "manifest.json").read_text())
    for identity in identities:
        pid = PEOPLE[identity]
        speaker = Speaker(pid, (0, 0, 0), tone_hz=TONES[identity], tone_always=True)
        manifest["tracks"].append(
            _audio(session / "tracks" / f"{pid}-audio-1", speaker, Capture(0.0, 1.0), [], 0.0)
        )
    (session / "manifest.json").write_text(json.dumps(manifest, indent=1))


def tone(data: bytes) -> float:
    """The loudest frequency of an audio file (Hz): whose microphone it is."""
    with av.open(io.BytesIO(data)) as container:
        sound = np.concatenate(
            [f.to_ndarray().astype(np.float64).reshape(-1) for f in container.decode(audio=0)]
        )
    spectrum = np.abs(np.fft.rfft(sound * np.hanning(len(sound))))
    return float(np.fft.rfftfreq(len(sound), 1 / 48_000)[int(np.argmax(spectrum))])


async def record_three(root: Path, key: NodeKey | None = None, ring: KeyRing | None = None) -> Three:
    """The two sessions under ``root``, signed with ``key``; sealed with the keys of ``ring`` (the
    node's key store's, for a node that must open them), else with new ones."""
    ring = ring if ring is not None else KeyRing(new_key(identity, T0) for identity in PEOPLE)
    everything = frozenset({"media", "comments", "share"})
    s1 = await _session(
        root,
        key,
        ring,
        "cardio",
        "s-1",
        [
            ("carol@x", "Carol", Role.HOST, everything),
            ("alice@x", "Alice", Role.AUDIENCE, frozenset({"comments", "share"})),
            ("bob@x", "Bob", Role.AUDIENCE, frozenset({"comments"})),
        ],
        T0,
    )
    _add_sealed_comments(s1, ring, ["alice@x", "bob@x"])
    _add_tracks(s1, ["alice@x", "bob@x", "carol@x"])
    s2 = await _session(
        root,
        key,
        ring,
        "neuro",
        "s-2",
        [("carol@x", "Carol", Role.HOST, everything), ("bob@x", "Bob", Role.AUDIENCE, everything)],
        T0 + 3600,
    )
    _add_tracks(s2, ["bob@x", "carol@x"])
    return Three(root, [s1, s2], ring)
