"""Issue 15's check of an erasure on what is left: after a person is erased, no byte of their media is
decodable from any file under the data directory (every remaining track decoded, listened to for
their pitch), none of their comment text is in any file, the others' tracks and comments are intact,
and every session still verifies. The person's tracks are sealed with their key as a node seals them
(recording/sealed.py); the three people each speak at their own pitch (tests/recording/three.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from recording.keys import FileKeyStore, default_keys_dir
from recording.sealed import key_id_of, open_plaintext, seal_stream
from recording.signing import NodeKey
from recording.timeline import opened, read
from recording.vault import KeyRing, load_ring
from tests.conftest import ROOT
from tests.recording.erasable import grep
from tests.recording.three import MARKERS, PEOPLE, T0, TONES, record_three, tone
from tests.support.inprocess import serve
from tests.support.tokens import bearer

OWNER = {pid: identity for identity, pid in PEOPLE.items()}


def _seal_tracks(session: Path, ring: KeyRing) -> None:
    """Every plaintext track sealed with its owner's key, the manifest saying so (as the recorder
    writes them since issue 15)."""
    manifest = json.loads((session / "manifest.json").read_text())
    for entry in manifest["tracks"]:
        plain = session / entry["file"]
        key = ring.for_identity(OWNER[entry["participant_id"]])
        assert key is not None
        with open(plain, "rb") as f:
            seal_stream(f, str(plain) + ".sealed", key)
        plain.unlink()
        entry.update(file=entry["file"] + ".sealed", sealed=True, key_id=key.key_id)
    (session / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _pitches(root: Path, ring: KeyRing) -> dict[Path, float]:
    """The pitch of every track file left under ``root``, opened with the keys still in ``ring``."""
    found = {}
    for path in root.rglob("tracks/*"):
        if key_id_of(path) is not None:
            with open_plaintext(path, ring) as stream:
                found[path] = tone(stream.read())
        else:
            found[path] = tone(path.read_bytes())
    return found


def _texts(root: Path, ring: KeyRing) -> str:
    """Every session's timeline under ``root`` with what ``ring`` opens (a person's comments are
    sealed with their key, recording/items.py)."""
    return "".join(json.dumps(opened(list(read(p)), ring)) for p in sorted(root.rglob("timeline.msgpack")))


def _near(hz: float, target: float) -> bool:
    return abs(hz - target) < 20


async def test_after_an_erasure_nothing_of_the_person_decodes_or_reads_and_the_others_are_intact(
    tmp_path: Path,
) -> None:
    recordings = tmp_path / "recordings"
    node_key = NodeKey.load_or_create(tmp_path / "keys" / "ledger-ed25519.key")  # the node's own
    store = FileKeyStore(default_keys_dir(recordings))  # the node's key store (default path)
    ring = KeyRing([await store.get_or_create(identity, T0) for identity in PEOPLE])
    three = await record_three(recordings, node_key, ring)
    for session in three.sessions:
        _seal_tracks(session, ring)
    before = _pitches(recordings, ring)
    assert sum(_near(hz, TONES["bob@x"]) for hz in before.values()) == 2, before  # Bob in both sessions
    assert MARKERS["bob@x"] + "-" in _texts(recordings, ring), "Bob's comments are there before"

    async with serve(tmp_path) as running, aiohttp.ClientSession() as http:
        async with http.post(f"{running.url}/api/people/bob@x/erase", headers=bearer()) as r:
            assert r.status == 200, await r.text()
            proof = await r.json()
    assert proof["status"] == "done", proof
    assert sorted(s["session_id"] for s in proof["sessions"]) == ["s-1", "s-2"], proof["sessions"]

    # Bob's key is gone from the store; every track left decodes with the keys that remain, and none
    # of them is Bob's voice. Alice's (one session) and Carol's (two) are all still there.
    left = await load_ring(store)
    assert left.for_identity("bob@x") is None and left.for_identity("alice@x") is not None
    bob_key = ring.for_identity("bob@x")
    assert bob_key is not None
    after = _pitches(recordings, left)  # SealedKeyMissing here would be a file of Bob's left behind
    assert not any(_near(hz, TONES["bob@x"]) for hz in after.values()), after
    assert sum(_near(hz, TONES["alice@x"]) for hz in after.values()) == 1, after
    assert sum(_near(hz, TONES["carol@x"]) for hz in after.values()) == 2, after
    assert [p for p in after if key_id_of(p) == bob_key.key_id] == []

    # None of Bob's text in any file under the data directory, in clear or sealed (not even with his
    # old key); Alice's and Carol's are there (sealed with their keys, recording/items.py).
    assert grep(tmp_path, MARKERS["bob@x"] + "-") == []
    assert MARKERS["bob@x"] + "-" not in _texts(recordings, ring)
    texts = _texts(recordings, left)
    assert MARKERS["alice@x"] + "-" in texts and MARKERS["carol@x"] + "-" in texts
    for session in three.sessions:
        verified = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "recording", "verify", str(session)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
