"""Timeline items and consent records sealed with each person's key (recording/items.py): no plaintext
of them in any stored file, readers (report, playback, timeline export) open them with the keys, and
once a key is destroyed they read as erased while the ledger still verifies and the totals still hold."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from media.peer import MediaConfig
from media.room import MediaRoom
from recording import playback, report, timeline
from recording.items import session_key_ids
from recording.keys import FileKeyStore
from recording.ledger import verify
from recording.session import SessionRecorder
from recording.signing import NodeKey
from recording.vault import KeyRing, is_sealed, load_ring
from rooms.roles import Role
from rooms.stage import Stage, StageSettings
from tests.conftest import ROOT
from tests.recording.recorded import COMMENTS, POLICY, T0, Recorded, record_session

PEOPLE = ("host@x", "alice@x", "bob@x", "carol@x", "dave@x")
# Everything stored of the people that must never be readable without their key.
SECRETS = (
    *COMMENTS.values(),
    "What about beta blockers?",
    "bob's secret question",
    *PEOPLE,
    "Dr Host",
    "Alice",
    "Bob",
    "Carol",
    "Dave",
)
STORED = ("timeline.msgpack", "timeline.json", "consent.jsonl", "manifest.json")


@pytest.fixture
async def keyed(tmp_path: Path) -> tuple[Recorded, FileKeyStore]:
    store = FileKeyStore(tmp_path / "people-keys")
    for identity in PEOPLE:
        await store.get_or_create(identity, T0 - 100)
    key = NodeKey.load_or_create(tmp_path / "keys" / "ledger-ed25519.key")
    recorded = await record_session(tmp_path / "recordings", key, ring=await load_ring(store))
    return recorded, store


def stored_bytes(session: Path) -> bytes:
    return b"".join((session / name).read_bytes() for name in STORED)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recording", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def assert_verifies(session: Path) -> None:
    manifest = json.loads((session / "manifest.json").read_text())
    assert verify(session / "consent.jsonl", anchor=(manifest["ledger_count"], manifest["ledger_head"])).ok
    run = cli("verify", str(session))
    assert run.returncode == 0, run.stdout + run.stderr


def by_identity(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["identity"]: p for p in data["attendance"]["people"]}


async def test_no_plaintext_of_a_keyed_person_in_any_stored_file(
    keyed: tuple[Recorded, FileKeyStore],
) -> None:
    recorded, _ = keyed
    raw = stored_bytes(recorded.session)
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
    events = list(timeline.read(recorded.session / "timeline.msgpack"))
    posted = [e["comment"] for e in events if e["type"] == "comment.posted"]
    assert [c["id"] for c in posted] == ["c-alice", "c-bob"]  # ids, authors' ids and times stay clear
    assert all(is_sealed(c["text"]) and is_sealed(c["author_name"]) for c in posted)
    voters = next(e for e in events if e["type"] == "poll.voters")["voters"]
    assert set(voters) == {"p-alice", "p-bob"} and all(is_sealed(v) for v in voters.values())
    closed = next(e for e in events if e["type"] == "poll.closed")
    assert closed["poll"]["results"]["counts"] == [1, 2]  # the anonymous totals stay clear
    records = [json.loads(line)["record"] for line in (recorded.session / "consent.jsonl").open()]
    assert all(is_sealed(r["identity"]) and is_sealed(r["name"]) and len(r["person"]) == 16 for r in records)
    assert len(session_key_ids(recorded.session)) == len(PEOPLE)
    assert_verifies(recorded.session)
    packed = recorded.session / "timeline.msgpack"
    packed.write_bytes(packed.read_bytes() + b"\xc1")  # never msgpack: the keys before it still count
    assert len(session_key_ids(recorded.session)) == len(PEOPLE)


async def test_unkeyed_people_stay_plaintext(tmp_path: Path) -> None:
    recorded = await record_session(tmp_path / "recordings", None)
    raw = stored_bytes(recorded.session)
    assert COMMENTS["alice@x"].encode() in raw and b"alice@x" in raw
    assert session_key_ids(recorded.session) == set()


async def test_readers_open_the_items_with_the_keys(keyed: tuple[Recorded, FileKeyStore]) -> None:
    recorded, store = keyed
    ring = await load_ring(store)
    data = report.build(recorded.session, ring=ring)
    assert (data["attendance"]["named"], data["attendance"]["anonymous"]) == (2, 3)
    assert by_identity(data)["alice@x"]["name"] == "Alice"
    questions = {q["question_id"]: q for q in data["questions"]["items"]}
    assert questions["q-a"]["text"] == "What about beta blockers?" and questions["q-a"]["name"] == "Alice"
    assert questions["q-b"]["text"] is None  # Bob did not grant share: counted, not named
    poll = next(p for p in data["polls"] if p["poll_id"] == "poll-1")
    assert [(a["identity"], a["choices"]) for a in poll["answers"]] == [("alice@x", [1])]

    shown = playback.of_session(recorded.session, ring=ring)
    assert [(c.author_name, c.text) for c in shown.comments] == [("Alice", COMMENTS["alice@x"])]
    pinned = [m for m in shown.markers if m.kind == "comment.pinned"]
    assert pinned and pinned[0].comment is not None and pinned[0].comment.text == COMMENTS["alice@x"]

    out = timeline.export_json(
        recorded.session / "timeline.msgpack", recorded.session.parent / "t.json", ring=ring
    )
    text = out.read_text()
    assert COMMENTS["alice@x"] in text and COMMENTS["bob@x"] in text and '"sealed"' not in text
    with pytest.raises(ValueError):  # an opened copy never lands in the session directory
        timeline.export_json(recorded.session / "timeline.msgpack", recorded.session / "t.json", ring=ring)


async def test_without_the_keys_the_readers_name_nobody(keyed: tuple[Recorded, FileKeyStore]) -> None:
    recorded, _ = keyed
    data = report.build(recorded.session)  # no ring: nothing sealed opens
    assert (data["attendance"]["attendees"], data["attendance"]["named"]) == (5, 0)
    assert data["questions"]["asked"] == 2 and data["questions"]["named"] == 0
    assert playback.of_session(recorded.session).comments == []


async def test_a_destroyed_key_erases_the_person_everywhere_and_the_ledger_still_verifies(
    keyed: tuple[Recorded, FileKeyStore],
) -> None:
    recorded, store = keyed
    before = report.build(recorded.session, ring=await load_ring(store))
    await store.destroy("alice@x", "erasure", T0 + 1000)
    ring = await load_ring(store)
    assert ring.for_identity("alice@x") is None
    assert_verifies(recorded.session)

    data = report.build(recorded.session, ring=ring)
    attendance = data["attendance"]
    # Alice (two connections) is counted anonymously now: never named, still in every total.
    assert (
        set(by_identity(data)) == {"host@x"} and attendance["attendees"] == before["attendance"]["attendees"]
    )
    assert attendance["total_s"] == before["attendance"]["total_s"]
    assert "Alice" not in json.dumps(data) and "alice@x" not in json.dumps(data)
    questions = {q["question_id"]: q for q in data["questions"]["items"]}
    assert questions["q-a"]["text"] is None and questions["q-a"]["status"] == "answered"
    poll = next(p for p in data["polls"] if p["poll_id"] == "poll-1")
    assert poll["answers"] == [] and poll["counts"] == [1, 2] and poll["anonymous_answers"] == 3
    assert data["quiz"]["correct"] == before["quiz"]["correct"] and data["quiz"]["scores"] == [
        s for s in before["quiz"]["scores"] if s["identity"] != "alice@x"
    ]

    shown = playback.of_session(recorded.session, ring=ring)
    assert shown.comments == [] and not [m for m in shown.markers if m.kind == "comment.pinned"]

    out = timeline.export_json(
        recorded.session / "timeline.msgpack", recorded.session.parent / "t.json", ring=ring
    )
    events = json.loads(out.read_text())
    posted = {e["comment"]["id"]: e["comment"] for e in events if e["type"] == "comment.posted"}
    assert posted["c-alice"] == {"id": "c-alice", "at": T0 + 7, "erased": True}
    assert posted["c-bob"]["text"] == COMMENTS["bob@x"]
    assert COMMENTS["alice@x"] not in out.read_text()


async def test_a_corrected_name_is_preferred_by_every_reader(keyed: tuple[Recorded, FileKeyStore]) -> None:
    recorded, store = keyed
    ring = await load_ring(store)
    names = {"alice@x": "Alice Corrected"}.get
    data = report.build(recorded.session, ring=ring, names=names)
    assert by_identity(data)["alice@x"]["name"] == "Alice Corrected"
    assert by_identity(data)["host@x"]["name"] == "Dr Host"
    shown = playback.of_session(recorded.session, ring=ring, names=names)
    assert [c.author_name for c in shown.comments] == ["Alice Corrected"]
    out = timeline.export_json(
        recorded.session / "timeline.msgpack", recorded.session.parent / "t.json", ring=ring, names=names
    )
    assert "Alice Corrected" in out.read_text()


async def test_the_command_line_report_and_export_open_with_the_key_directory(
    keyed: tuple[Recorded, FileKeyStore], tmp_path: Path
) -> None:
    recorded, _ = keyed

    def run(*extra: str) -> dict[str, Any]:
        done = cli("report", str(recorded.session), *extra)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    keys = ["--people-keys", str(tmp_path / "people-keys")]
    assert set(by_identity(run(*keys))) == {"host@x", "alice@x"}
    assert by_identity(run()) == {}
    opened = tmp_path / "opened.json"
    done = cli("export", str(recorded.session), "--opened", str(opened), *keys)
    assert done.returncode == 0, done.stderr
    assert COMMENTS["alice@x"] in opened.read_text()
    assert COMMENTS["alice@x"].encode() not in stored_bytes(recorded.session)  # the stored copy: sealed


async def test_forget_stops_recording_the_person_at_once(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path / "keys")
    now = T0 - 10
    stage = Stage("s1", "Talk", now, settings=StageSettings(recording_mode="manual"))
    media = MediaRoom("s1", MediaConfig(), lambda pid, message: None)
    ring = KeyRing()
    for pid, name, role, identity in [
        ("p-h", "Host", Role.HOST, "h@x"),
        ("p-e", "Eve", Role.AUDIENCE, "e@x"),
    ]:
        stage.join(pid, name, role, now, identity=identity)
        stage.give_consent(
            pid, frozenset({"media", "comments", "share"}), POLICY, "join_prompt", now, "c-" + pid
        )
        ring.put(await store.get_or_create(identity, now))
    recorder = SessionRecorder(tmp_path, stage, media, "rec", T0, lambda reason: None, ring=ring)
    recorder.on_events(stage.start_recording("p-h", "rec", T0))
    recorder.on_events(stage.post_comment("p-e", "c1", "MARKER-BEFORE", T0 + 1))
    assert recorder.forget("e@x") == []  # no capture of hers (no media here)
    recorder.on_events(stage.post_comment("p-e", "c2", "MARKER-AFTER", T0 + 2))
    recorder.on_events(stage.post_comment("p-h", "c3", "host's", T0 + 3))
    recorder.on_events(stage.withdraw_consent("p-e", T0 + 4, "c-w"))
    recorder.ring.drop("e@x")  # the erasure destroys the key: nothing can be sealed with it any more
    recorder.on_events(stage.remove("p-h", "p-e", "erased", T0 + 4.5))
    assert recorder.participants["p-e"]["name"] is None and "p-e" not in recorder.consent
    await recorder.stop(T0 + 5)
    events = list(timeline.read(recorder.dir / "timeline.msgpack"))
    comments = [e["comment"]["id"] for e in events if e["type"] == "comment.posted"]
    assert comments == ["c1", "c3"]  # c1 was recorded (sealed) before; nothing of hers after
    records = [json.loads(line)["record"] for line in (recorder.dir / "consent.jsonl").open()]
    assert [r["participant_id"] for r in records] == ["p-h", "p-e"]  # her withdrawal is not recorded
    raw = stored_bytes(recorder.dir)
    assert b"MARKER" not in raw and b"e@x" not in raw and b"Eve" not in raw
    [audit] = [e for e in events if e["type"] == "moderation.audit" and e["action"] == "moderation.remove"]
    assert (audit["target"], audit["target_identity"], audit["target_name"]) == ("p-e", None, None)


async def test_forget_stops_the_persons_capture_at_once_and_for_good(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tests.recording.test_simulcast_recording import Encoding

    now = T0
    stage = Stage("s1", "Talk", now, settings=StageSettings(recording_mode="manual"))
    stage.join("p-h", "Host", Role.HOST, now, identity="h@x")
    stage.give_consent("p-h", frozenset({"media", "comments"}), POLICY, "join_prompt", now, "c-h")
    stage.start_publishing("p-h", ("video",), now)
    stage.start_recording("p-h", "rec", now)
    camera = Encoding(0, time.monotonic)  # the tap reads the monotonic clock, as the node's do
    media = MediaRoom("s1", MediaConfig(), lambda pid, message: None)
    media.publishers["p-h"] = SimpleNamespace(publications={"video": camera.pub})  # type: ignore[assignment]
    ring = KeyRing([await FileKeyStore(tmp_path / "keys").get_or_create("h@x", now)])
    recorder = SessionRecorder(tmp_path, stage, media, "rec", now, lambda reason: None, ring=ring)
    assert list(recorder.captures) == [("p-h", "video")]
    writer = recorder.captures[("p-h", "video")].writer
    async with asyncio.timeout(10):
        while writer.stats.frames_written < 3:
            camera.send_frame()
            await asyncio.sleep(1 / 30)
    assert recorder.forget("h@x") == ["p-h"]
    assert recorder.captures == {} and camera.pub.taps == []  # stopped at once
    await recorder.writers_closed()
    [track] = recorder.manifest()["tracks"]
    path = recorder.dir / track["file"]
    assert track["finalized"] and track["capture_ended_at"] is not None and path.is_file()
    size = path.stat().st_size
    camera.send_frame()
    recorder.sync()  # still published, still consented: never captured again
    assert recorder.captures == {} and path.stat().st_size == size
    await recorder.stop(now + 1)


def test_every_sealed_event_type_round_trips_and_erases_to_its_placeholder() -> None:
    from recording.items import Opener, Sealer
    from recording.keys import new_key

    ana, bob = new_key("ana@x", 1.0), new_key("bob@x", 1.0)
    identities = {"p-ana": "ana@x", "p-bob": "bob@x", "p-ned": "ned@x"}  # Ned has no key
    sealer = Sealer(KeyRing([ana, bob]), identities.get)
    comment = {"id": "c1", "author_id": "p-ana", "author_name": "Ana", "text": "MARKER-1", "at": 5.0}
    audit = {"actor": "p-bob", "actor_identity": "bob@x", "actor_name": "Bob", "action": "participant.remove"}
    audit |= {"target": "p-ana", "target_identity": "ana@x", "target_name": "Ana"}
    question = {**comment, "id": "q1", "votes": 2, "status": "open"}
    result = {"participant_id": "p-ana", "poll_id": "z", "correct": True, "score": 3}
    board = [{"participant_id": "p-ana", "name": "Ana", "score": 3}]
    events: list[dict[str, Any]] = [
        {"type": "comment.posted", "at": 5.0, "comment": comment},
        {"type": "question.asked", "at": 6.0, "question": question},
        {"type": "poll.voters", "at": 7.0, "poll_id": "v", "voters": {"p-ana": [1], "p-ned": [0]}},
        {"type": "quiz.result", "at": 8.0, **result},
        {"type": "quiz.leaderboard", "at": 9.0, "entries": board},
        {"type": "moderation.audit", "at": 10.0, **audit},
        {"type": "observer.joined", "at": 11.0, "participant_id": "p-bob", "name": "Bob", "role": "host"},
        {"type": "invitation", "at": 12.0, "participant_id": "p-ned", "by": "p-bob", "by_name": "Bob"},
    ]  # fmt: skip
    stored = [sealer.event(e) for e in events]
    raw = json.dumps(stored)
    for secret in ("MARKER-1", "Ana", "Bob", "ana@x", "bob@x", '"score": 3'):
        assert secret not in raw, secret
    assert stored[2]["voters"]["p-ned"] == [0]  # unkeyed: as before
    assert Opener(KeyRing([ana, bob])).event(stored[0]) == events[0]
    assert [Opener(KeyRing([ana, bob])).event(e) for e in stored[1:]] == [
        *events[1:2],
        {**events[2], "erased_voters": 0},
        *events[3:],
    ]

    gone = Opener(KeyRing([bob]))  # Ana's key destroyed
    opened = [gone.event(e) for e in stored]
    assert opened[0]["comment"] == {"id": "c1", "at": 5.0, "erased": True}
    assert opened[1]["question"] == {"id": "q1", "at": 5.0, "votes": 2, "status": "open", "erased": True}
    assert opened[2]["voters"] == {"p-ned": [0]} and opened[2]["erased_voters"] == 1
    assert opened[3] == {"type": "quiz.result", "at": 8.0, "poll_id": "z", "correct": True, "erased": True}
    assert opened[4]["entries"] == [{"participant_id": "p-ana", "name": None, "score": None, "erased": True}]
    assert (opened[5]["actor_name"], opened[5]["target_identity"], opened[5]["target_name"]) == (
        "Bob",
        None,
        None,
    )
    assert opened[6]["name"] == "Bob" and opened[7]["by_name"] == "Bob"
