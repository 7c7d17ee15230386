"""The subject access archive (recording/access.py) of three people recorded together: each archive
holds exactly its person's data (every member read back and checked against index.json, everybody
else's markers absent), their consent records check against the ledger's chain and signed heads,
sealed comments are opened with the ring, and a person with no key left gets nothing sealed."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from recording import sealed
from recording.access import FORMAT, Archive, plan
from recording.ledger import canonical
from recording.signing import NodeKey, SignedHead
from recording.vault import KeyRing
from tests.recording.three import MARKERS, PEOPLE, TONES, Three, record_three, tone


@pytest.fixture
async def three(tmp_path: Path) -> Three:
    key = NodeKey.load_or_create(tmp_path / "node.key")
    return await record_three(tmp_path / "recordings", key)


def archive(identity: str, three: Three, ring: KeyRing | None = None) -> tuple[Archive, bytes]:
    ring = three.ring if ring is None else ring
    members, omitted = plan(identity, three.root, ring)
    built = Archive(identity, members, omitted, ring, export_id="x-1", now=1.0)
    data = b"".join(built)
    assert len(data) == built.size and hashlib.sha256(data).hexdigest() == built.sha256
    assert len(data) % tarfile.RECORDSIZE == 0
    return built, data


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def others(identity: str) -> list[str]:
    out = []
    for other, mark in MARKERS.items():
        if other != identity:
            out += [mark, mark.lower(), other, PEOPLE[other], mark.title()]
    return out


@pytest.mark.parametrize("identity", sorted(PEOPLE))
async def test_each_archive_holds_exactly_its_persons_data(three: Three, identity: str) -> None:
    built, data = archive(identity, three)
    files = members(data)
    index = json.loads(files.pop("index.json"))
    assert index["format"] == FORMAT and index["identity"] == identity
    assert list(files) == [m["name"] for m in index["members"]], "index.json lists every member, in order"
    for m in index["members"]:
        assert (
            hashlib.sha256(files[m["name"]]).hexdigest() == m["sha256"] and len(files[m["name"]]) == m["size"]
        )
    for name, body in files.items():
        if "/tracks/" in name:  # media: whose it is is in the sound (below), not in the bytes
            continue
        for marker in others(identity):
            assert marker.encode() not in body, f"{marker} in {name}"
    mark = MARKERS[identity]
    everything = b"".join(files.values())
    sessions = sorted({n.split("/")[1] + "/" + n.split("/")[2] for n in files if n.startswith("sessions/")})
    tracks = [n for n in files if "/tracks/" in n]
    if identity == "alice@x":
        assert sessions == ["cardio/s-1"], "Alice was not in neuro"
        assert tracks == ["sessions/cardio/s-1/tracks/p-alice-audio-1.webm"]
        assert f"{mark}-SEALED-COMMENT".encode() in everything, "a sealed comment of hers, opened"
    else:
        assert len(sessions) == 2 and len(tracks) == 2
    assert f"{mark}-COMMENT-s-1".encode() in everything
    for t in tracks:  # their own microphone, as recorded: their pitch, byte for byte the session's file
        assert tone(files[t]) == pytest.approx(TONES[identity], abs=5), t
        assert files[t] == (three.root / t.removeprefix("sessions/")).read_bytes()
    assert built.counts["session"] == len(sessions) and built.index_sha256


async def test_alices_participation_answers_scores_and_attendance(three: Three) -> None:
    _, data = archive("alice@x", three)
    part = json.loads(members(data)["sessions/cardio/s-1/participation.json"])
    assert part["participations"] == [{"participant_id": "p-alice", "name": "Alice", "role": "audience"}]
    assert sorted(c["text"] for c in part["comments"]) == ["ALICE-COMMENT-s-1", "ALICE-SEALED-COMMENT"]
    assert [q["text"] for q in part["questions"]] == ["ALICE-QUESTION-s-1"]
    assert part["questions"][0]["status"] == "answered"
    by_poll = {a["poll_id"]: a for a in part["answers"]}
    assert by_poll["poll-s-1"]["choices"] == [0] and by_poll["quiz-s-1"]["correct"] is True
    assert part["quiz_score"] == {"answered": 1, "correct": 1}
    assert part["attendance"]["total_s"] == 30.0


async def test_bobs_answers_are_his_though_he_never_granted_share(three: Three) -> None:
    _, data = archive("bob@x", three)
    part = json.loads(members(data)["sessions/cardio/s-1/participation.json"])
    assert [q["text"] for q in part["questions"]] == ["BOB-QUESTION-s-1"]
    assert part["quiz_score"] == {"answered": 1, "correct": 0}
    assert part["attendance"]["total_s"] == 20.0, "he left at +20"
    assert [m["action"] for m in part["moderation"]["about_them"]] == ["chat.mute"]
    assert part["moderation"]["by_them"] == []
    carol = json.loads(members(archive("carol@x", three)[1])["sessions/cardio/s-1/participation.json"])
    assert "chat.mute" in [m["action"] for m in carol["moderation"]["by_them"]], "her actions, not whom"


async def test_consent_records_check_against_the_chain_and_the_signed_heads(three: Three) -> None:
    _, data = archive("alice@x", three)
    consent = json.loads(members(data)["sessions/cardio/s-1/consent.json"])
    assert [r["opened"]["identity"] for r in consent["records"]] == ["alice@x"]
    chain = consent["chain"]
    for n, link in enumerate(chain):
        assert link["index"] == n and (n == 0 or link["prev"] == chain[n - 1]["hash"])
    for r in consent["records"]:
        digest = hashlib.sha256((r["prev"] + canonical(r["record"]) + str(r["index"])).encode()).hexdigest()
        assert digest == r["hash"] == chain[r["index"]]["hash"]
    head = SignedHead.from_dict(consent["signed_heads"][-1])
    assert head.final and head.count == len(chain) and head.head == chain[-1]["hash"]
    key = NodeKey.load_or_create(three.root.parent / "node.key")
    assert head.valid(key.public)
    assert "record" not in chain[0], "the chain says nothing of anyone else's records"


async def test_without_the_persons_key_nothing_sealed_is_opened(three: Three) -> None:
    ring = KeyRing(k for k in (three.ring.for_identity(i) for i in ("bob@x", "carol@x")) if k is not None)
    _, data = archive("alice@x", three, ring)
    assert b"ALICE-SEALED-COMMENT" not in data
    assert members(data)["index.json"], "an archive all the same (what is sealed of hers is unreadable)"


async def test_a_stranger_gets_an_archive_with_no_session(three: Three) -> None:
    _, data = archive("nobody@x", three)
    files = members(data)
    assert sorted(files) == ["index.json", "people/ledger.json"]
    index: dict[str, Any] = json.loads(files["index.json"])
    assert index["omitted"] == []


async def test_a_sealed_track_is_given_decrypted_with_the_persons_key(three: Three) -> None:
    plain = three.sessions[0] / "tracks" / "p-alice-audio-1.webm"
    content = plain.read_bytes()
    with open(plain, "rb") as f:  # noqa: ASYNC230 - a test's fixture file
        sealed.seal_stream(f, str(plain) + ".sealed", three.ring.for_identity("alice@x"))
    plain.unlink()
    _, data = archive("alice@x", three)
    files = members(data)
    assert files["sessions/cardio/s-1/tracks/p-alice-audio-1.webm"] == content
    index = json.loads(files["index.json"])
    assert [m["what"] for m in index["members"] if "/tracks/" in m["name"]] == ["track"]

    keyless = KeyRing(k for k in (three.ring.for_identity(i) for i in ("bob@x", "carol@x")) if k is not None)
    built, data = archive("alice@x", three, keyless)
    assert not [n for n in members(data) if "/tracks/" in n]
    # Without her key the session's records do not even say whose they are (her identity is sealed
    # with it, recording/items.py): nothing of hers is found, so nothing is listed as omitted either.
    assert built.omitted == []


async def test_a_file_that_only_looks_sealed_is_never_read_as_plaintext(three: Three) -> None:
    """With no reader for sealed files (before sealtracks) the file goes as stored; with one, a file
    whose key is in no ring is left out as an erased person's (``damaged``: a structure it refuses).
    Never a crash, never the wrong bytes."""
    track = three.sessions[0] / "tracks" / "p-alice-audio-1.webm"
    track.write_bytes(b"MEDSTAGE-SEALED/1\n" + bytes(40))
    built, data = archive("alice@x", three)
    files = members(data)
    if "sessions/cardio/s-1/tracks/p-alice-audio-1.webm.sealed" in files:
        assert files["sessions/cardio/s-1/tracks/p-alice-audio-1.webm.sealed"] == track.read_bytes()
    else:  # its key (zeros) is no one's: as an erased key's file
        assert [(o.what, o.reason) for o in built.omitted] == [("track", "erased")]
    assert "sessions/cardio/s-1/tracks/p-alice-audio-1.webm" not in files


async def test_a_deleted_track_is_listed_as_omitted(three: Three) -> None:
    (three.sessions[0] / "tracks" / "p-alice-audio-1.webm").unlink()
    _, data = archive("alice@x", three)
    index = json.loads(members(data)["index.json"])
    assert [(o["what"], o["reason"]) for o in index["omitted"]] == [("track", "deleted")]
    assert index["omitted"][0]["about"]["participant_id"] == "p-alice"
