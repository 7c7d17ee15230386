"""A session recorded by the project's own recorder (recording/session.py) from a real domain stage
(rooms/stage.py): attendance with a reconnect, a named poll, an anonymous quiz, questions, and people
with every kind of consent. No media (no publisher): the report and retention read the rest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from media.peer import MediaConfig
from media.room import MediaRoom
from recording.session import SessionRecorder
from recording.signing import NodeKey
from recording.vault import KeyRing
from rooms.polls import PollSpec
from rooms.roles import Role
from rooms.stage import Stage, StageSettings

POLICY = "2026-11"
T0 = 1_795_703_000.0  # the recording starts here; the stage was created 60 s before


@dataclass(frozen=True)
class Recorded:
    session: Path
    started_at: float
    stopped_at: float


COMMENTS = {"alice@x": "MARKER-ALICE-COMMENT", "bob@x": "MARKER-BOB-COMMENT"}


async def record_session(
    root: Path, key: NodeKey | None, session_id: str = "rec-1", ring: KeyRing | None = None
) -> Recorded:
    """Who does what (times relative to T0), and what their consent allows the report to name:

    - Dr Host (host@x): media, comments, share; present all along; asks nothing.
    - Alice (alice@x): comments, share; leaves at +20, comes back at +30 as another connection; votes
      option 1 in the named poll, right in the quiz, asks a question (answered).
    - Bob (bob@x): comments only (no share): counted, never named; votes option 0, right in the quiz,
      asks "bob's secret question".
    - Carol (carol@x): no decision: her vote and quiz answer (wrong) are placeholders in the timeline.
    - Dave (dave@x): joins at +5 with share, withdraws at +40: his last decision shares nothing.

    Alice and Bob comment at +7 (``COMMENTS``); the host pins Alice's. ``ring``: the people's keys
    (their items are sealed with them, recording/items.py).
    """
    now = T0 - 60
    stage = Stage("cardio", "Cardiology", now, settings=StageSettings(recording_mode="manual"))
    media = MediaRoom("cardio", MediaConfig(), lambda pid, message: None)
    for pid, name, role, identity in [
        ("p-host", "Dr Host", Role.HOST, "host@x"),
        ("p-alice", "Alice", Role.AUDIENCE, "alice@x"),
        ("p-bob", "Bob", Role.AUDIENCE, "bob@x"),
        ("p-carol", "Carol", Role.AUDIENCE, "carol@x"),
    ]:
        stage.join(pid, name, role, now, identity=identity)
    stage.give_consent("p-host", frozenset({"media", "comments", "share"}), POLICY, "join_prompt", now, "c-1")
    stage.give_consent("p-alice", frozenset({"comments", "share"}), POLICY, "join_prompt", now, "c-2")
    stage.give_consent("p-bob", frozenset({"comments"}), POLICY, "join_prompt", now, "c-3")

    failures: list[str] = []
    events = stage.start_recording("p-host", session_id, T0)
    recorder = SessionRecorder(
        root,
        stage,
        media,
        session_id,
        T0,
        failures.append,
        clock=lambda: T0,
        signing_key=key,
        ring=ring if ring is not None else KeyRing(),
    )
    recorder.on_events(events)

    def at(offset: float, batch: list) -> None:  # type: ignore[type-arg]
        recorder.clock = lambda: T0 + offset
        recorder.on_events(batch)

    at(5, stage.join("p-dave", "Dave", Role.AUDIENCE, T0 + 5, identity="dave@x"))
    at(
        6,
        stage.give_consent("p-dave", frozenset({"share", "comments"}), POLICY, "join_prompt", T0 + 6, "c-4"),
    )
    at(7, stage.post_comment("p-alice", "c-alice", COMMENTS["alice@x"], T0 + 7))
    at(7, stage.post_comment("p-bob", "c-bob", COMMENTS["bob@x"], T0 + 7))
    at(7.5, stage.pin_comment("p-host", "c-alice", T0 + 7.5))
    at(8, stage.ask_question("p-alice", "q-a", "What about beta blockers?", T0 + 8))
    at(9, stage.ask_question("p-bob", "q-b", "bob's secret question", T0 + 9))
    at(
        10,
        stage.create_poll("p-host", "poll-1", PollSpec("Which drug?", ("A", "B"), anonymous=False), T0 + 10),
    )
    at(10, stage.open_poll("p-host", "poll-1", T0 + 10))
    at(11, stage.vote("p-alice", "poll-1", [1], T0 + 11))
    at(11, stage.vote("p-bob", "poll-1", [0], T0 + 11))
    at(11, stage.vote("p-carol", "poll-1", [1], T0 + 11))
    at(12, stage.close_poll("p-host", "poll-1", T0 + 12))
    quiz = PollSpec("2 + 2?", ("3", "4", "5"), quiz=True, correct=(1,))
    at(13, stage.create_poll("p-host", "quiz-1", quiz, T0 + 13))
    at(13, stage.open_poll("p-host", "quiz-1", T0 + 13))
    at(14, stage.vote("p-alice", "quiz-1", [1], T0 + 14))
    at(14, stage.vote("p-bob", "quiz-1", [1], T0 + 14))
    at(14, stage.vote("p-carol", "quiz-1", [2], T0 + 14))
    at(15, stage.close_poll("p-host", "quiz-1", T0 + 15))
    at(16, stage.answer_question("p-host", "q-a", T0 + 16))
    at(20, stage.leave("p-alice", T0 + 20))
    at(30, stage.join("p-alice-2", "Alice", Role.AUDIENCE, T0 + 30, identity="alice@x"))
    at(40, stage.withdraw_consent("p-dave", T0 + 40, "c-5"))
    at(50, stage.leave("p-carol", T0 + 50))
    at(60, stage.stop_recording("p-host", T0 + 60))
    await recorder.stop(T0 + 60)
    assert failures == []
    return Recorded(recorder.dir, T0, T0 + 60)
