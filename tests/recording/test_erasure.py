"""recording/erasure.py: a person erased from sessions recorded before encryption (rewritten) and from
sealed track files (deleted by key id); verify passes; a second run changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recording.erasure import erase_person_from_recordings, sealed_key_id
from recording.evidence import TrustedKey, verify_session
from recording.ledger import read_entries
from recording.report import build
from recording.signing import NodeKey
from recording.timeline import read as read_timeline
from tests.recording.erasable import grep, marker, record_plain_session, sealed_file

ALICE_KEY, BOB_KEY = "a" * 32, "b" * 32


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def key(tmp_path: Path) -> NodeKey:
    return NodeKey.load_or_create(tmp_path / "keys" / "ledger-ed25519.key")


async def test_a_pre_encryption_session_is_rewritten_without_the_person(tmp_path: Path, key: NodeKey) -> None:
    root = tmp_path / "recordings"
    session = await record_plain_session(root, key)
    sealed_file(session / "tracks" / "p-new-audio-1.webm.sealed", ALICE_KEY)
    sealed_file(session / "tracks" / "p-bob2-audio-1.webm.sealed", BOB_KEY)
    (session / "exports").mkdir()
    (session / "exports" / "composite.mp4").write_bytes(b"made of everyone")
    assert grep(tmp_path, marker("p-alice", "COMMENT"))

    result = erase_person_from_recordings(
        root, "alice@x", {ALICE_KEY}, erasure_id="e1", now=2e9, signing_key=key
    )

    (done,) = result.sessions
    assert sorted(done.participant_ids) == ["p-alice", "p-alice-2"]
    assert sorted(done.files_deleted) == [
        "exports/",
        "tracks/p-alice-2-audio-1.webm",
        "tracks/p-alice-audio-1.webm",
        "tracks/p-new-audio-1.webm.sealed",
    ]
    assert done.needs_export and not (session / "exports" / "composite.mp4").exists()
    for what in ("COMMENT", "QUESTION", "MEDIA"):
        for pid in ("p-alice", "p-alice-2"):
            if what == "QUESTION" and pid == "p-alice-2":
                continue
            assert grep(tmp_path, marker(pid, what)) == [], (pid, what)
        for pid in ("p-host", "p-bob"):
            assert grep(tmp_path, marker(pid, what)), (pid, what)
    assert grep(tmp_path, "alice@x") == []
    assert grep(tmp_path, "Alice Zqxwv") == []
    assert sealed_key_id(session / "tracks" / "p-bob2-audio-1.webm.sealed") == BOB_KEY

    evidence = verify_session(session, TrustedKey(key.public, "test"))
    assert evidence.ok, evidence.message
    entries = read_entries(session / "consent.jsonl")
    erasure = entries[-1].record
    assert erasure["type"] == "erasure" and erasure["erasure_id"] == "e1"
    assert [entries[i].record["type"] for i in erasure["redacted"]] == ["redacted"]
    assert done.ledger_record == {"index": entries[-1].index, "hash": entries[-1].hash}

    # Counts stay: the poll's ballots, the quiz's answers; the person is anonymous in them.
    events = list(read_timeline(session / "timeline.msgpack"))
    voters = [e for e in events if e["type"] == "poll.voters"]
    assert voters and all("p-alice" not in e["voters"] for e in voters)
    assert any(e.get("redacted_voters") for e in voters)
    assert result.remains()["poll_ballots"] >= 1 and result.remains()["comments"] == 2
    report = build(session)
    closed = [p for p in report["polls"] if p.get("id", p.get("poll_id")) == "poll-1"]
    assert json.dumps(report).count("Alice") == 0
    assert closed
    assert json.loads((session / "timeline.json").read_text())  # the export follows

    # Idempotent: a second run (another erasure of the same person) changes nothing.
    before = snapshot(tmp_path)
    again = erase_person_from_recordings(
        root, "alice@x", {ALICE_KEY}, erasure_id="e2", now=3e9, signing_key=key
    )
    assert not again.changed and again.to_dict()["sessions"] == []
    assert snapshot(tmp_path) == before


async def test_a_session_signed_by_another_key_is_reported_not_rewritten(
    tmp_path: Path, key: NodeKey
) -> None:
    root = tmp_path / "recordings"
    session = await record_plain_session(root, key)
    other = NodeKey.load_or_create(tmp_path / "other.key")
    before = snapshot(session)
    result = erase_person_from_recordings(root, "alice@x", set(), erasure_id="e1", now=2e9, signing_key=other)
    assert [s.skipped for s in result.sessions] == ["no_key"]
    assert snapshot(session) == before


async def test_a_crash_between_ledger_and_heads_is_completed_by_the_next_run(
    tmp_path: Path, key: NodeKey
) -> None:
    root = tmp_path / "recordings"
    session = await record_plain_session(root, key)
    old_heads = (session / "consent.heads.jsonl").read_bytes()
    old_manifest = (session / "manifest.json").read_bytes()
    erase_person_from_recordings(root, "alice@x", set(), erasure_id="e1", now=2e9, signing_key=key)
    # As if the process died after renaming the ledger: old heads, old manifest.
    (session / "consent.heads.jsonl").write_bytes(old_heads)
    (session / "manifest.json").write_bytes(old_manifest)
    assert not verify_session(session, TrustedKey(key.public, "test")).ok
    erase_person_from_recordings(root, "alice@x", set(), erasure_id="e1", now=2e9, signing_key=key)
    assert verify_session(session, TrustedKey(key.public, "test")).ok
    assert grep(tmp_path, "alice@x") == []
    assert sum(e.record.get("type") == "erasure" for e in read_entries(session / "consent.jsonl")) == 1


async def test_values_sealed_with_the_persons_key_are_found_and_dropped(tmp_path: Path, key: NodeKey) -> None:
    """A session recorded with sealed items (recording/vault.py): the consent record's identity and
    the comment's text sealed with the person's key; found by key id alone (the key is gone)."""
    import msgpack

    from recording.keys import PersonKey
    from recording.ledger import Ledger
    from recording.vault import seal_value
    from tests.recording.signed import seal

    person = PersonKey("zed@x", "c" * 32, bytes(32), 1.0)
    other = PersonKey("ann@x", "d" * 32, bytes(range(32)), 1.0)
    session = tmp_path / "recordings" / "cardio" / "new-1"
    (session / "tracks").mkdir(parents=True)
    ledger = Ledger(session / "consent.jsonl")
    for who, pid in ((person, "p-z"), (other, "p-a")):
        sealed_identity = seal_value(who, who.identity, "person")
        ledger.append({"record_id": f"c-{pid}", "participant_id": pid, "identity": sealed_identity,
                       "scopes": ["comments"], "decision": "granted", "at": 1.0})  # fmt: skip
    seal(session, key, ledger, final=True)
    manifest = json.loads((session / "manifest.json").read_text())
    manifest.update(
        status="complete",
        participants=[{"participant_id": "p-z", "name": seal_value(person, "Zed", "name")}],
        tracks=[],
    )
    (session / "manifest.json").write_text(json.dumps(manifest))
    events = [
        {"type": "comment.posted", "seq": n, "at": 2.0,
         "comment": {"id": f"cm-{pid}", "author_id": pid, "at": 2.0,
                     "text": seal_value(who, f"text of {pid}", "comment")}}
        for n, (who, pid) in enumerate(((person, "p-z"), (other, "p-a")))
    ]  # fmt: skip
    (session / "timeline.msgpack").write_bytes(b"".join(msgpack.packb(e) for e in events))
    sealed_file(session / "tracks" / "p-z-audio-1.webm.sealed", person.key_id)

    result = erase_person_from_recordings(
        tmp_path / "recordings", "zed@x", {person.key_id}, erasure_id="e1", now=5.0, signing_key=key
    )
    (done,) = result.sessions
    assert done.participant_ids == ["p-z"] and done.ledger_redacted == [0]
    text = b"".join(p.read_bytes() for p in session.rglob("*") if p.is_file())
    assert person.key_id.encode() not in text, "not one value sealed with the person's key is left"
    assert other.key_id.encode() in text
    timeline = list(read_timeline(session / "timeline.msgpack"))
    assert timeline[0]["comment"] == {"id": "cm-p-z", "at": 2.0, "redacted": True, "erased": True}
    assert verify_session(session, TrustedKey(key.public, "test")).ok


async def test_a_damaged_session_is_reported_and_the_others_are_erased(tmp_path: Path, key: NodeKey) -> None:
    root = tmp_path / "recordings"
    damaged = await record_plain_session(root, key, session_id="old-0")
    await record_plain_session(root, key, session_id="old-1")
    ledger = damaged / "consent.jsonl"
    ledger.write_bytes(ledger.read_bytes() + b"not a ledger entry\n")
    result = erase_person_from_recordings(root, "alice@x", set(), erasure_id="e1", now=2e9, signing_key=key)
    assert [(s.session_id, s.skipped) for s in result.sessions] == [("old-0", "damaged"), ("old-1", None)]
    assert grep(root / "cardio" / "old-1", marker("p-alice", "COMMENT")) == []


async def test_a_crash_between_the_timeline_and_its_export_is_completed_by_the_next_run(
    tmp_path: Path, key: NodeKey
) -> None:
    root = tmp_path / "recordings"
    session = await record_plain_session(root, key)
    names = ("timeline.json", "consent.jsonl", "consent.heads.jsonl", "manifest.json")
    old = {name: (session / name).read_bytes() for name in names}
    erase_person_from_recordings(root, "alice@x", set(), erasure_id="e1", now=2e9, signing_key=key)
    for name, data in old.items():  # as if it stopped right after the timeline's rename
        (session / name).write_bytes(data)
    assert grep(tmp_path, marker("p-alice", "COMMENT"))
    erase_person_from_recordings(root, "alice@x", set(), erasure_id="e2", now=3e9, signing_key=key)
    assert grep(tmp_path, marker("p-alice", "COMMENT")) == [] and grep(tmp_path, "alice@x") == []
    assert verify_session(session, TrustedKey(key.public, "test")).ok
