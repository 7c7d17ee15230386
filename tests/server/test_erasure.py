"""Erasure on a node (issue 15): who may erase and read the proof, a session recorded before
encryption rewritten without the person (raw bytes grepped), a second erasure changing nothing, and
an erasure while a recording with the person runs (capture stops at once, the files follow the stop)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from recording.evidence import TrustedKey
from recording.keys import FileKeyStore, default_keys_dir
from recording.ledger import read_entries
from recording.people import FILENAME as PEOPLE_LEDGER
from recording.people import verify_people
from recording.signing import NodeKey, read_heads
from recording.timeline import opened
from recording.vault import load_ring
from server.backend.redis import RedisBackend
from server.backend.redis_keys import RedisKeyStore
from server.host.webhooks import verify as webhook_verify
from tests.conftest import RunningNode, start_node
from tests.recording.erasable import grep, marker, record_plain_session, sealed_file
from tests.server.test_webhooks import Receiver, answers
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.inprocess import InProcessNode, serve
from tests.support.redis_server import running_redis
from tests.support.tokens import bearer, token
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SECRET = "webhook-secret-for-the-erasure-test"


def own(identity: str) -> dict[str, str]:
    return bearer(token(None, None, identity))


def files(root: Path) -> dict[str, bytes]:
    """Every file's bytes but the composite export's (the node may be making it again meanwhile)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "exports" not in p.relative_to(root).parts
    }


def verify(session: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recording", "verify", str(session)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


class Api:
    def __init__(self, running: InProcessNode, http: aiohttp.ClientSession) -> None:
        self.url, self.http = running.url, http

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None, body: Any = None
    ) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, json=body, headers=headers or {}) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                assert r.content_type == "application/problem+json", (r.status, data)
                return r.status, data["code"]
            return r.status, data

    async def erase(self, identity: str, headers: dict[str, str] | None) -> tuple[int, Any]:
        return await self.call("POST", f"/api/people/{identity}/erase", headers)

    async def proof(self, identity: str, erasure_id: str, headers: dict[str, str] | None) -> tuple[int, Any]:
        return await self.call("GET", f"/api/people/{identity}/erasures/{erasure_id}", headers)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_who_may_erase_and_read_the_proof_and_an_old_session_is_rewritten(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    key = NodeKey.load_or_create(tmp_path / "keys" / "ledger-ed25519.key")  # the node's (default path)
    session = await record_plain_session(tmp_path / "recordings", key)
    async with serve(tmp_path) as running:
        api = Api(running, http)
        node = running.node
        alice_key = await node.keys.get_or_create("alice@x", 1.0)
        bob_key = await node.keys.get_or_create("bob@x", 1.0)
        sealed_file(session / "tracks" / "p-alice-3-audio-1.webm.sealed", alice_key.key_id, b"ALICE-SEALED")
        sealed_file(session / "tracks" / "p-bob-3-audio-1.webm.sealed", bob_key.key_id, b"BOB-SEALED")
        (session / "exports").mkdir()
        (session / "exports" / "composite.mp4").write_bytes(b"made of everyone's tracks")
        club = await node.clubs.create(None, "Cardio club", private=True)
        await node.clubs.put_member(club.id, "alice@x", "Alice Zqxwv", "member")
        await node.clubs.put_member(club.id, "bob@x", "Bob Ykjhg", "admin")
        nominee, stranger, moderator = "nominee@x", "stranger@x", "mod@x"
        assert (await api.call("POST", "/api/people/alice@x/nominees", own("alice@x"), {"nominee": nominee}))[
            0
        ] == 201
        assert (await api.call("POST", "/api/stages", bearer(), {"id": "cardio"}))[0] == 201
        refused = {
            "stranger": (own(stranger), (403, "not_allowed")),
            "moderator of a stage": (bearer(token("cardio", "moderator", moderator)), (403, "not_allowed")),
            "the person's stage token": (
                bearer(token("cardio", "audience", "alice@x")),
                (403, "person_token_required"),
            ),
            "no token": (None, (401, "token_missing")),
        }
        before = files(tmp_path / "recordings")
        for who, (headers, expected) in refused.items():
            assert await api.erase("alice@x", headers) == expected, who
        assert files(tmp_path / "recordings") == before, "no refused call changed anything"
        assert await node.keys.get("alice@x") == alice_key

        # A nominee erases.
        status, proof = await api.erase("alice@x", own(nominee))
        assert status == 200, proof
        assert (proof["identity"], proof["as"], proof["status"]) == ("alice@x", "nominee", "done")
        assert proof["keys"]["destroyed"] == [alice_key.key_id]
        assert await node.keys.get("alice@x") is None and node.ring.for_identity("alice@x") is None
        (erased,) = proof["sessions"]
        assert (erased["stage_id"], erased["session_id"]) == ("cardio", "old-1")
        assert "tracks/p-alice-3-audio-1.webm.sealed" in erased["files_deleted"]
        assert proof["clubs_left"] == [club.id]
        assert "alice@x" not in (await node.clubs.get(club.id)).members
        assert "bob@x" in (await node.clubs.get(club.id)).members
        assert proof["remains"]["counts"]["poll_ballots"] == 1
        assert proof["exports_queued"] == [{"stage_id": "cardio", "session_id": "old-1", "queued": True}]
        assert not (session / "exports" / "composite.mp4").exists(), "made again without her"

        # Every allowed caller reads the proof; nobody else.
        erasure_id = proof["erasure_id"]
        for headers in (own("alice@x"), own(nominee), bearer()):
            assert await api.proof("alice@x", erasure_id, headers) == (200, proof)
        for who, (headers, expected) in refused.items():
            assert await api.proof("alice@x", erasure_id, headers) == expected, who
        assert await api.proof("alice@x", "er-0000000000000000", bearer()) == (404, "erasure_not_found")
        assert await api.proof("bob@x", erasure_id, bearer()) == (404, "erasure_not_found")
        assert await api.proof("alice@x", "..%2F..%2Fpeople", bearer()) == (404, "erasure_not_found")

        # Nothing of hers in any file of the data directory; everyone else's is there.
        for pid in ("p-alice", "p-alice-2"):
            assert grep(tmp_path, marker(pid, "COMMENT")) == []
            assert grep(tmp_path, marker(pid, "MEDIA")) == []
        assert grep(tmp_path, marker("p-alice", "QUESTION")) == []
        assert grep(tmp_path, "Alice Zqxwv") == [] and grep(tmp_path, "ALICE-SEALED") == []
        for pid in ("p-host", "p-bob"):
            for what in ("COMMENT", "QUESTION", "MEDIA"):
                assert grep(tmp_path, marker(pid, what)), (pid, what)
        assert grep(tmp_path, "BOB-SEALED")
        result = await asyncio.to_thread(verify, session)
        assert result.returncode == 0, result.stdout + result.stderr
        # The rewritten ledger's latest signed head is the shared backend's copy too (evidence off
        # the node's disk: server/routing/ledgerheads.py), published before the answer.
        heads, _ = read_heads(session / "consent.heads.jsonl")
        published = await node.cluster.backend.ledger_head("cardio", "old-1")
        assert heads and published == heads[-1][1].line().encode()

        # The people ledger's record: ids, hashes, counts; the webhook's payload is built from it.
        records = [e.record for e in read_entries(tmp_path / "people" / PEOPLE_LEDGER)]
        assert records[-1]["type"] == "erasure" and records[-1]["erasure_id"] == erasure_id
        assert records[-1]["ledger_records"][0]["hash"] == erased["ledger_record"]["hash"]
        assert json.loads((tmp_path / "people" / "erasures" / f"{erasure_id}.json").read_text()) == proof
        verdict = verify_people(tmp_path / "people", TrustedKey(key.public, "the node's key"))
        assert verdict.ok, verdict.message

        # Again, by the person, then by the platform: nothing changes in the recordings.
        before = files(tmp_path / "recordings")
        for headers in (own("alice@x"), bearer()):
            status, again = await api.erase("alice@x", headers)
            assert status == 200 and again["sessions"] == [] and again["keys"]["destroyed"] == []
        assert files(tmp_path / "recordings") == before


async def test_an_erasure_during_a_recording_stops_the_capture_at_once_and_the_files_follow_the_stop(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    clip = load_clip()
    stage = "er-" + uuid.uuid4().hex[:6]
    async with (
        serve(tmp_path, recording_mode="manual") as running,
        MedstageClient(running.url) as host,
        MedstageClient(running.url) as alice,
    ):
        api = Api(running, http)
        await host.join(stage, "Dr Host", "host", identity="host@x")
        await alice.join(stage, "Alice Zqxwv", "speaker", identity="alice@x")
        policy = host.joined["policy"]["version"]
        for client in (host, alice):
            await client.request(
                {"type": "consent.give", "scopes": ["media", "comments", "share"], "policy_version": policy,
                 "method": "join_prompt"}
            )  # fmt: skip
        await alice.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await host.wait_media(kind="video", timeout=10)
        started = await host.request({"type": "recording.start"})
        session = tmp_path / "recordings" / stage / started["session_id"]
        recorder = running.node.stages[stage].recording.recorder
        assert recorder is not None
        await eventually(lambda: any(k[0] == alice.participant_id for k in recorder.captures), 10)
        await alice.request({"type": "comment.post", "text": marker("p-alice", "COMMENT")})
        await host.request({"type": "comment.post", "text": marker("p-host", "COMMENT")})
        await asyncio.sleep(1)

        status, proof = await api.erase("alice@x", bearer())
        assert status == 200, proof
        assert not any(k[0] == alice.participant_id for k in recorder.captures), "capture stopped at once"
        assert proof["status"] == "pending" and proof["connections_closed"] == 1
        assert await alice.wait_closed(timeout=5) == 4005
        await host.wait_for("comment.deleted", timeout=5)  # her comment left every screen
        chat = running.node.stages[stage].stage.chat.comments.values()
        assert [c.identity for c in chat] == ["host@x"]
        await host.request({"type": "recording.stop"})
        erasure_id = proof["erasure_id"]

        async def done() -> bool:
            return (await api.proof("alice@x", erasure_id, bearer()))[1]["status"] == "done"

        for _ in range(200):
            if await done():
                break
            await asyncio.sleep(0.05)
        status, final = await api.proof("alice@x", erasure_id, bearer())
        assert final["status"] == "done", final
        (erased,) = [s for s in final["sessions"] if s["session_id"] == started["session_id"]]
        assert erased["participant_ids"] == [alice.participant_id]
        assert erased["files_deleted"] and all(alice.participant_id in f for f in erased["files_deleted"])

    assert not list((session / "tracks").glob(f"{alice.participant_id}*"))
    assert grep(tmp_path, marker("p-alice", "COMMENT")) == [] and grep(tmp_path, "Alice Zqxwv") == []
    # The others' content stays: the host's comment, sealed with the host's key (recording/items.py).
    ring = await load_ring(FileKeyStore(default_keys_dir(tmp_path / "recordings")))
    stored = json.loads((session / "timeline.json").read_text())
    assert marker("p-host", "COMMENT") in json.dumps(opened(stored, ring))
    result = await asyncio.to_thread(verify, session)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_an_erasure_on_one_node_reaches_the_other_on_redis(tmp_path: Path) -> None:
    """Two nodes on one real redis-server, each with its own disk: the person is on a stage of node b
    and in a session recorded before encryption on b's disk; the platform erases them on node a."""
    receiver = Receiver(answers(200))
    await receiver.start()
    key_b = NodeKey.load_or_create(tmp_path / "b" / "keys" / "ledger-ed25519.key")
    session = await record_plain_session(tmp_path / "b" / "recordings", key_b)
    nodes: list[RunningNode] = []
    with running_redis(tmp_path / "redis") as redis:
        try:
            for name in ("a", "b"):
                data = tmp_path / name
                data.mkdir(exist_ok=True)
                env = {
                    "MEDSTAGE_REDIS_URL": redis.url,
                    "MEDSTAGE_RECORDINGS_DIR": str(data / "recordings"),
                    "MEDSTAGE_WEBHOOK_URLS": receiver.url,
                    "MEDSTAGE_WEBHOOK_SECRET": SECRET,
                    "MEDSTAGE_MEDIA_WORKERS": "0",
                }
                nodes.append(start_node(data, env))
            a, b = nodes
            stage = "er-" + uuid.uuid4().hex[:6]
            async with aiohttp.ClientSession() as http:
                async with http.post(b.url + "/api/stages", json={"id": stage}, headers=bearer()) as r:
                    assert r.status == 201
                async with MedstageClient(b.url) as alice, MedstageClient(b.url) as bob:
                    await alice.join(stage, "Alice Zqxwv", "audience", identity="alice@x", answer=False)
                    await bob.join(stage, "Bob Ykjhg", "audience", identity="bob@x", answer=False)
                    async with http.post(a.url + "/api/people/alice@x/erase", headers=bearer()) as r:
                        assert r.status == 200, await r.text()
                        proof = await r.json()
                    assert len(proof["keys"]["destroyed"]) == 1, "b made her key in the shared store"
                    assert proof["nodes_told"] == 1 and proof["sessions"] == []  # nothing on a's disk
                    assert await alice.wait_closed(timeout=10) == 4005
                    assert not bob.closed
                    erasure_id = proof["erasure_id"]
                    path = f"/api/people/alice@x/erasures/{erasure_id}"

                    async def b_proof() -> dict[str, Any] | None:
                        async with http.get(b.url + path, headers=bearer()) as r:
                            return await r.json() if r.status == 200 else None

                    for _ in range(200):
                        part = await b_proof()
                        if part is not None:
                            break
                        await asyncio.sleep(0.05)
                    assert part is not None, "b erased its own recordings"
                    assert [(s["stage_id"], s["session_id"]) for s in part["sessions"]] == [
                        ("cardio", "old-1")
                    ]
                    assert part["ledger"]["hash"] == proof["ledger"]["hash"], "one ledger entry, on both"
                    # She comes back: a new key, nothing of the old one.
                    async with MedstageClient(b.url) as again:
                        joined = await again.join(stage, "A", "audience", identity="alice@x", answer=False)
                        assert joined["type"] == "joined"
            await eventually(
                lambda: any(r.headers.get("Medstage-Event") == "person.erased" for r in receiver.requests), 15
            )
            got = [r for r in receiver.requests if r.headers.get("Medstage-Event") == "person.erased"]
        finally:
            for node in nodes:
                assert node.stop() == 0, node.log()[-3000:]
            await receiver.stop()

    assert grep(tmp_path / "b", marker("p-alice", "COMMENT")) == []
    assert grep(tmp_path / "b", "Alice Zqxwv") == []
    assert grep(tmp_path / "b", marker("p-bob", "COMMENT"))
    result = await asyncio.to_thread(verify, session)
    assert result.returncode == 0, result.stdout + result.stderr
    (received,) = got
    assert received.headers["Medstage-Event"] == "person.erased"
    assert webhook_verify(SECRET, received.headers["Medstage-Signature"], received.body, time.time())
    data = received.event["data"]
    assert (data["identity"], data["keys_destroyed"], data["ledger_hash"]) == (
        "alice@x", proof["keys"]["destroyed"], proof["ledger"]["hash"],
    )  # fmt: skip
    assert data["report"] == f"/api/people/alice@x/erasures/{proof['erasure_id']}"


async def test_a_recording_on_the_other_node_is_erased_when_it_stops(tmp_path: Path) -> None:
    """Node b records a stage the person is on; node a erases them: b stops recording them at once and
    rewrites the session once it stops; its part of the proof says pending, then done."""
    nodes: list[RunningNode] = []
    with running_redis(tmp_path / "redis") as redis:
        try:
            for name in ("a", "b"):
                data = tmp_path / name
                data.mkdir()
                env = {
                    "MEDSTAGE_REDIS_URL": redis.url,
                    "MEDSTAGE_RECORDINGS_DIR": str(data / "recordings"),
                    "MEDSTAGE_RECORDING_MODE": "manual",
                    "MEDSTAGE_MEDIA_WORKERS": "0",
                }
                nodes.append(start_node(data, env))
            a, b = nodes
            stage = "er-" + uuid.uuid4().hex[:6]
            async with (
                aiohttp.ClientSession() as http,
                MedstageClient(b.url) as host,
                MedstageClient(b.url) as alice,
            ):
                await host.join(stage, "Dr Host", "host", identity="host@x", answer=False)
                await alice.join(stage, "Alice Zqxwv", "audience", identity="alice@x", answer=False)
                policy = host.joined["policy"]["version"]
                for client in (host, alice):
                    await client.request(
                        {"type": "consent.give", "scopes": ["comments", "share"], "policy_version": policy,
                         "method": "join_prompt"}
                    )  # fmt: skip
                started = await host.request({"type": "recording.start"})
                await alice.request({"type": "comment.post", "text": marker("p-alice", "COMMENT")})
                await host.request({"type": "comment.post", "text": marker("p-host", "COMMENT")})
                async with http.post(a.url + "/api/people/alice@x/erase", headers=bearer()) as r:
                    assert r.status == 200, await r.text()
                    erasure_id = (await r.json())["erasure_id"]
                assert await alice.wait_closed(timeout=10) == 4005
                path = f"{b.url}/api/people/alice@x/erasures/{erasure_id}"

                async def b_status() -> str | None:
                    async with http.get(path, headers=bearer()) as r:
                        return (await r.json())["status"] if r.status == 200 else None

                for _ in range(200):
                    if await b_status() is not None:
                        break
                    await asyncio.sleep(0.05)
                assert await b_status() == "pending", "b waits for its recording to stop"
                await host.request({"type": "recording.stop"})
                for _ in range(200):
                    if await b_status() == "done":
                        break
                    await asyncio.sleep(0.05)
                assert await b_status() == "done"
                keys = RedisBackend(redis.url, name="erasure-test-keys")  # the nodes' key store
                try:
                    ring = await load_ring(RedisKeyStore(keys))
                finally:
                    await keys.close()
        finally:
            for node in nodes:
                assert node.stop() == 0, node.log()[-3000:]
    session = tmp_path / "b" / "recordings" / stage / started["session_id"]
    assert grep(tmp_path / "b", marker("p-alice", "COMMENT")) == []
    assert grep(tmp_path / "b", "Alice Zqxwv") == []
    # The host's comment stays, sealed with the host's key (recording/items.py).
    stored = json.loads((session / "timeline.json").read_text())
    assert marker("p-host", "COMMENT") in json.dumps(opened(stored, ring))
    result = await asyncio.to_thread(verify, session)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_an_erasure_waiting_on_a_recording_when_the_node_died_is_completed_at_the_next_start(
    tmp_path: Path,
) -> None:
    key = NodeKey.load_or_create(tmp_path / "keys" / "ledger-ed25519.key")
    session = await record_plain_session(tmp_path / "recordings", key)
    proofs = tmp_path / "people" / "erasures"
    proofs.mkdir(parents=True)
    waiting = {"stage_id": "cardio", "session_id": "old-1", "skipped": "recording"}
    proof = {"erasure_id": "er-00000000000000aa", "identity": "alice@x", "status": "pending",
             "keys": {"erased_key_ids": []}, "sessions": [waiting], "remains": {}}  # fmt: skip
    (proofs / "er-00000000000000aa.json").write_text(json.dumps(proof))
    async with serve(tmp_path):
        await eventually(
            lambda: json.loads((proofs / "er-00000000000000aa.json").read_text())["status"] == "done", 10
        )
    done = json.loads((proofs / "er-00000000000000aa.json").read_text())
    assert [s["session_id"] for s in done["sessions"]] == ["old-1"]
    assert grep(tmp_path, marker("p-alice", "COMMENT")) == []
    assert (await asyncio.to_thread(verify, session)).returncode == 0


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "people", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_command_line_erases_through_the_node_and_prints_the_proof(tmp_path: Path) -> None:
    key = NodeKey.load_or_create(tmp_path / "keys" / "ledger-ed25519.key")
    session = await record_plain_session(tmp_path / "recordings", key)
    async with serve(tmp_path) as running:
        done = await asyncio.to_thread(cli, "erase", "bob@x", "--url", running.url)
        assert done.returncode == 0, done.stderr
        proof = json.loads(done.stdout)
        assert [s["session_id"] for s in proof["sessions"]] == ["old-1"]
        shown = await asyncio.to_thread(cli, "erasure", "bob@x", proof["erasure_id"], "--url", running.url)
        assert shown.returncode == 0 and json.loads(shown.stdout) == proof
        missing = await asyncio.to_thread(
            cli, "erasure", "bob@x", "er-0000000000000000", "--url", running.url
        )
        assert missing.returncode == 1 and "erasure_not_found" in missing.stderr
    assert grep(tmp_path, marker("p-bob", "COMMENT")) == [] and grep(tmp_path, marker("p-alice", "COMMENT"))
    assert (await asyncio.to_thread(verify, session)).returncode == 0
    unreachable = await asyncio.to_thread(cli, "erase", "bob@x", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "cannot be reached" in unreachable.stderr
