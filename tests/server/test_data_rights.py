"""Subject access and correction on a real node (issue 15, items 1, 3 and 5): three people recorded
in two sessions (tests/recording/three.py, sealed with the keys of the node's own key store), then

- who may export and correct: the person, a nominee, the platform; not a stranger, not a moderator of
  a stage, not the person's stage token, not without a token;
- the archive over HTTP holds exactly the person's data (every member against index.json, everybody
  else's markers absent, sealed comments opened), an ``access`` record in the people ledger names its
  index's hash, and a signed ``person.exported`` webhook its digest;
- a correction shows in an existing recording's report and playback data and in a live stage's
  participant list (the connection gets ``participant.updated``), a ``correction`` record holds
  hashes only, and a signed ``person.corrected`` webhook is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from recording.keys import FileKeyStore, default_keys_dir
from recording.ledger import read_entries
from recording.people import FILENAME
from recording.profiles import field_hash
from recording.signing import NodeKey, default_key_path
from recording.vault import KeyRing
from server.backend.redis import RedisBackend
from server.backend.redis_keys import RedisKeyStore
from server.host.webhooks import verify
from tests.conftest import ROOT, RunningNode, start_node
from tests.recording.three import MARKERS, PEOPLE, T0, TONES, record_three, tone
from tests.server.test_webhooks import Receiver, answers
from tests.support.client import MedstageClient
from tests.support.redis_server import running_redis
from tests.support.tokens import bearer, token
from tests.support.waiting import eventually

SECRET = "webhook-secret-for-the-data-rights-test"


async def _prepare(data: Path) -> None:
    root = data / "recordings"
    key = NodeKey.load_or_create(default_key_path(root))  # the node signs with this one too
    store = FileKeyStore(default_keys_dir(root))
    ring = KeyRing([await store.get_or_create(identity, T0) for identity in PEOPLE])
    await record_three(root, key, ring)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    loop = asyncio.new_event_loop()
    hooks = Receiver(answers(200))
    # The receiver runs on a loop of its own thread: the tests' loops come and go.
    import threading

    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(hooks.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield hooks
    finally:
        asyncio.run_coroutine_threadsafe(hooks.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[RunningNode]:
    data = tmp_path_factory.mktemp("rights")
    asyncio.run(_prepare(data))
    running = start_node(
        data,
        {
            "MEDSTAGE_RECORDING_MODE": "manual",
            "MEDSTAGE_RECORDINGS_DIR": str(data / "recordings"),
            "MEDSTAGE_MEDIA_WORKERS": "0",
            "MEDSTAGE_WEBHOOK_URLS": receiver.url,
            "MEDSTAGE_WEBHOOK_SECRET": SECRET,
        },
    )
    running.data = data  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"node exited with {code}:\n{running.log()[-4000:]}"


@pytest.fixture
async def http(node: RunningNode) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(node.url) as session:
        yield session


def own(identity: str) -> dict[str, str]:
    return bearer(token(None, None, identity))


def hooks_of(receiver: Receiver, event: str) -> list[dict[str, Any]]:
    out = []
    for r in list(receiver.requests):
        if r.headers.get("Medstage-Event") == event:
            assert verify(SECRET, r.headers["Medstage-Signature"], r.body, time.time())
            out.append(json.loads(r.body)["data"])
    return out


async def wait_hook(receiver: Receiver, event: str, key: str, value: str) -> dict[str, Any]:
    """The first ``event`` whose data's ``key`` is ``value`` (its signature checked)."""
    async with asyncio.timeout(15):
        while True:
            for data in hooks_of(receiver, event):
                if data.get(key) == value:
                    return data
            await asyncio.sleep(0.05)


def ledger(node: RunningNode) -> list[dict[str, Any]]:
    return [e.record for e in read_entries(node.data / "people" / FILENAME)]  # type: ignore[attr-defined]


async def test_who_may_export_and_correct(node: RunningNode, http: aiohttp.ClientSession) -> None:
    person, nominee, stranger = (f"{w}-{uuid.uuid4().hex[:8]}" for w in ("who", "nominee", "stranger"))
    stage = "rights-" + uuid.uuid4().hex[:8]
    async with http.post("/api/stages", json={"id": stage}, headers=bearer()) as r:
        assert r.status == 201
    async with http.post(
        f"/api/people/{person}/nominees", json={"nominee": nominee}, headers=own(person)
    ) as r:
        assert r.status == 201
    callers: dict[str, dict[str, str]] = {
        "the person": own(person),
        "a nominee": own(nominee),
        "the platform": bearer(),
        "a stranger": own(stranger),
        "a moderator of a stage": bearer(token(stage, "moderator")),
        "the person's stage token": bearer(token(stage, "audience", person)),
        "no token": {},
    }
    expected = {
        "the person": 200,
        "a nominee": 200,
        "the platform": 200,
        "a stranger": (403, "not_allowed"),
        "a moderator of a stage": (403, "not_allowed"),
        "the person's stage token": (403, "person_token_required"),
        "no token": (401, "token_missing"),
    }

    async def outcome(r: aiohttp.ClientResponse) -> Any:
        if r.status < 400:
            return r.status
        assert r.content_type == "application/problem+json"
        return r.status, (await r.json())["code"]

    exports, corrections = {}, {}
    for who, headers in callers.items():
        async with http.get(f"/api/people/{person}/export", headers=headers) as r:
            exports[who] = await outcome(r)
            if r.status == 200:
                assert r.content_type == "application/x-tar"
                with tarfile.open(fileobj=io.BytesIO(await r.read()), mode="r:") as tar:
                    assert tar.getnames()[-1] == "index.json"
        async with http.patch(
            f"/api/people/{person}/profile", json={"name": f"By {who}"}, headers=headers
        ) as r:
            corrections[who] = await outcome(r)
    assert exports == expected
    assert corrections == expected
    async with http.patch(f"/api/people/{person}/profile", json={"name": " "}, headers=own(person)) as r:
        assert r.status == 400 and (await r.json())["code"] == "invalid_profile"
    async with http.patch(f"/api/people/{person}/profile", json={"name": "x" * 65}, headers=own(person)) as r:
        assert r.status == 400 and (await r.json())["code"] == "invalid_body"
    async with http.patch(
        f"/api/people/{person}/profile", json={"title": "a\x01b"}, headers=own(person)
    ) as r:
        assert r.status == 400 and (await r.json())["code"] == "bad_text"
    async with http.patch(f"/api/people/{person}/profile", json={}, headers=own(person)) as r:
        assert r.status == 400 and (await r.json())["code"] == "invalid_profile"
    mine = [r for r in ledger(node) if r.get("identity") == person]
    kinds = [(r["type"], r["as"]) for r in mine]
    assert kinds.count(("access", "person")) == kinds.count(("access", "nominee")) == 1
    assert kinds.count(("access", "platform")) == 1 and kinds.count(("correction", "nominee")) == 1


async def test_the_archive_holds_exactly_the_persons_data(
    node: RunningNode, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with http.get("/api/people/alice@x/export", headers=own("alice@x")) as r:
        assert r.status == 200 and r.headers.get("Transfer-Encoding") == "chunked", "streamed"
        export_id = r.headers["X-Export-Id"]
        body = await r.read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    index_bytes = files.pop("index.json")
    index = json.loads(index_bytes)
    assert index["identity"] == "alice@x" and index["export_id"] == export_id
    assert [m["name"] for m in index["members"]] == list(files)
    for m in index["members"]:
        assert hashlib.sha256(files[m["name"]]).hexdigest() == m["sha256"]
    for name, content in files.items():
        if "/tracks/" in name:  # media: checked by its sound below
            continue
        for other, mark in MARKERS.items():
            if other != "alice@x":
                for marker in (mark, mark.title(), other, PEOPLE[other]):
                    assert marker.encode() not in content, f"{marker} in {name}"
    everything = b"".join(files.values())
    assert b"ALICE-SEALED-COMMENT" in everything, "sealed with her key in the node's store: opened"
    assert b"ALICE-COMMENT-s-1" in everything and b"ALICE-QUESTION-s-1" in everything
    assert [n for n in files if "/tracks/" in n] == ["sessions/cardio/s-1/tracks/p-alice-audio-1.webm"]
    assert tone(files["sessions/cardio/s-1/tracks/p-alice-audio-1.webm"]) == pytest.approx(
        TONES["alice@x"], abs=5
    )
    assert {"clubs.json", "live.json", "profile.json", "people/ledger.json"} <= set(files)

    record = next(r for r in reversed(ledger(node)) if r["type"] == "access" and r["identity"] == "alice@x")
    assert record["export_id"] == export_id
    assert record["index_sha256"] == hashlib.sha256(index_bytes).hexdigest()
    assert record["sha256"] == hashlib.sha256(body).hexdigest() and record["size_bytes"] == len(body)
    assert record["counts"]["track"] == 1 and "ALICE" not in json.dumps(record)
    hook = await wait_hook(receiver, "person.exported", "export_id", export_id)
    assert hook["sha256"] == record["sha256"] and hook["identity"] == "alice@x" and hook["by"] == "alice@x"


async def test_a_correction_shows_in_recordings_and_live(
    node: RunningNode, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    report = "/api/stages/cardio/recordings/s-1/report"
    playback = "/api/recordings/s-1/playback"
    async with http.post("/api/stages", json={"id": "cardio"}, headers=bearer()) as r:
        assert r.status == 201  # its report is read through the stage (recorded long ago, open again)
    async with http.get(report, headers=bearer()) as r:
        before = await r.json()
        assert r.status == 200, before
    assert "Carol" in [p["name"] for p in before["attendance"]["people"]]

    club = "club-" + uuid.uuid4().hex[:8]
    async with http.post("/api/clubs", json={"id": club, "name": "Cardio club"}, headers=bearer()) as r:
        assert r.status == 201, await r.text()
    async with http.put(
        f"/api/clubs/{club}/members/carol@x", json={"role": "member", "name": "Carol"}, headers=bearer()
    ) as r:
        assert r.status in (200, 201), await r.text()

    stage = "live-" + uuid.uuid4().hex[:8]
    async with MedstageClient(node.url) as carol, MedstageClient(node.url) as other:
        await carol.join(stage, "Carol", "host", identity="carol@x")
        await other.join(stage, "Someone", "audience")
        new = "Dr Carol Corrected"
        async with http.patch("/api/people/carol@x/profile", json={"name": new}, headers=own("carol@x")) as r:
            assert r.status == 200, await r.text()
            corrected = await r.json()
        assert corrected["profile"] == {"name": new} and corrected["fields"] == ["name"]
        event = await other.wait_for(
            "participant.updated", lambda e: e["participant"]["id"] == carol.participant_id, timeout=10
        )
        assert event["participant"]["name"] == new
        async with http.get(f"/api/stages/{stage}/participants", headers=bearer()) as r:
            listed = {p["id"]: p["name"] for p in (await r.json())["participants"]}
        assert listed[carol.participant_id] == new

    async with http.get(f"/api/clubs/{club}/members", headers=bearer()) as r:
        members = (await r.json())["members"]
    assert [m["name"] for m in members if m["identity"] == "carol@x"] == [new], "the club lists her new name"
    async with http.get(report, headers=bearer()) as r:
        after = await r.json()
    names = [p["name"] for p in after["attendance"]["people"]]
    assert new in names and "Carol" not in names
    assert [p["name"] for p in after["attendance"]["people"] if p["identity"] == "alice@x"] == ["Alice"]
    async with http.get(playback, headers=bearer()) as r:
        assert r.status == 200, await r.text()
        shown = await r.json()
    authors = {c["text"]: c["author_name"] for c in shown["comments"]}
    assert authors["CAROL-COMMENT-s-1"] == new and authors["ALICE-COMMENT-s-1"] == "Alice"

    record = next(
        r for r in reversed(ledger(node)) if r["type"] == "correction" and r["identity"] == "carol@x"
    )
    assert record["fields"] == {"name": field_hash("carol@x", "name", new)}
    assert new not in json.dumps(record), "the ledger keeps hashes, never values"
    hook = await wait_hook(receiver, "person.corrected", "identity", "carol@x")
    assert hook["fields"] == ["name"] and hook["ledger_hash"] == corrected["ledger_hash"]


def test_the_command_line_exports_and_corrects_through_the_node(node: RunningNode, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server", "people", *args, "--url", node.url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    target = tmp_path / "bob.tar"
    done = run("export", "bob@x", "-o", str(target))
    assert done.returncode == 0, done.stderr
    with tarfile.open(target) as tar:
        names = tar.getnames()
    assert names[-1] == "index.json" and "sessions/neuro/s-2/tracks/p-bob-audio-1.webm" in names
    assert hashlib.sha256(target.read_bytes()).hexdigest() in done.stdout
    assert not list(tmp_path.glob(".*.partial"))

    done = run("correct", "bob@x", "--name", "Robert")
    assert done.returncode == 0 and "corrected name of bob@x" in done.stdout, done.stderr
    record = ledger(node)[-1]
    assert (record["type"], record["identity"], record["by"], record["as"]) == (
        "correction",
        "bob@x",
        "platform-cli",
        "platform",
    )
    refused = run("correct", "bob@x", "--name", " ")
    assert refused.returncode == 1 and "invalid_profile" in refused.stderr
    assert run("correct", "bob@x").returncode == 2
    unreachable = subprocess.run(
        [sys.executable, "-m", "server", "people", "export", "bob@x", "--url", "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 3


async def test_two_nodes_on_one_redis_share_corrections(tmp_path: Path) -> None:
    """A correction made on node a renames the person live on node b's stage (the relay) and shows in
    node b's report (profiles in Redis); an archive asked of node a holds node b's part (b's recordings),
    recorded once; both nodes' people ledgers hold the same records in the same order."""
    nodes: list[RunningNode] = []
    with running_redis(tmp_path / "redis") as redis:
        try:
            for name in ("a", "b"):
                data = tmp_path / name
                data.mkdir()
                if name == "b":  # its recordings sealed with the keys the nodes share (Redis)
                    root = data / "recordings"
                    backend = RedisBackend(redis.url, name="rights-test")
                    try:
                        store = RedisKeyStore(backend)
                        ring = KeyRing([await store.get_or_create(identity, T0) for identity in PEOPLE])
                    finally:
                        await backend.close()
                    await record_three(root, NodeKey.load_or_create(default_key_path(root)), ring)
                env = {
                    "MEDSTAGE_REDIS_URL": redis.url,
                    "MEDSTAGE_RECORDINGS_DIR": str(data / "recordings"),
                    "MEDSTAGE_RECORDING_MODE": "manual",
                    "MEDSTAGE_MEDIA_WORKERS": "0",
                }
                nodes.append(start_node(data, env))
            a, b = nodes
            async with aiohttp.ClientSession() as http, MedstageClient(b.url) as on_b:
                await on_b.join("live-b", "Alice", "host", identity="alice@x")  # a stage b hosts
                url = f"{a.url}/api/people/alice@x/profile"
                async with http.patch(url, json={"name": "Alice Redis"}, headers=own("alice@x")) as r:
                    assert r.status == 200, await r.text()
                renamed = await on_b.wait_for(  # relayed from a
                    "participant.updated", lambda e: e["participant"]["name"] == "Alice Redis", timeout=10
                )
                assert renamed["participant"]["id"] == on_b.participant_id
                async with http.post(f"{b.url}/api/stages", json={"id": "cardio"}, headers=bearer()) as r:
                    assert r.status == 201
                async with asyncio.timeout(10):  # b reads the profiles at most once a second
                    while True:
                        async with http.get(
                            f"{b.url}/api/stages/cardio/recordings/s-1/report", headers=bearer()
                        ) as r:
                            report = await r.json()
                        if "Alice Redis" in [p["name"] for p in report["attendance"]["people"]]:
                            break
                        await asyncio.sleep(0.2)
                async with http.get(f"{a.url}/api/people/alice@x/export", headers=own("alice@x")) as r:
                    assert r.status == 200
                    body = await r.read()
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
                profile = json.loads(tar.extractfile("profile.json").read())  # type: ignore[union-attr]
                assert profile["profile"]["fields"] == {"name": "Alice Redis"}
                index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
                (part,) = [m for m in index["members"] if m["what"] == "node"]
                assert part["about"]["node"] != index["node"] and index["omitted"] == []
                inner = tar.extractfile(part["name"]).read()  # type: ignore[union-attr]
            assert hashlib.sha256(inner).hexdigest() == part["sha256"]
            with tarfile.open(fileobj=io.BytesIO(inner), mode="r:") as tar:
                names = tar.getnames()
            assert "sessions/cardio/s-1/participation.json" in names, "b's recordings, through a"
            assert not any(n.startswith("nodes/") for n in names), "a part does not gather again"
            assert b"BOB" not in body and b"CAROL" not in body
            assert b"ALICE-SEALED-COMMENT" in inner, "b opened it with her key from the shared store"
        finally:
            for node in nodes:
                assert node.stop() == 0, node.log()[-3000:]
    files = [tmp_path / name / "people" / FILENAME for name in ("a", "b")]
    kinds = [[e.record["type"] for e in read_entries(f)] for f in files]
    assert kinds[0] == ["correction", "access"], "one access record, by the node that handed it out"
    assert kinds[1] == ["correction"], "b gave its part and recorded nothing (b mirrors at its next call)"


async def test_the_archive_holds_the_persons_items_of_a_live_stage_only(
    node: RunningNode, http: aiohttp.ClientSession
) -> None:
    stage = "now-" + uuid.uuid4().hex[:8]
    dora, eve = "dora-" + uuid.uuid4().hex[:6], "eve-" + uuid.uuid4().hex[:6]
    async with (
        MedstageClient(node.url) as host,
        MedstageClient(node.url) as d,
        MedstageClient(node.url) as e,
    ):
        await host.join(stage, "Host", "host")
        await d.join(stage, "Dora", "audience", identity=dora)
        await e.join(stage, "Eve", "audience", identity=eve)
        await d.request({"type": "comment.post", "text": "DORA-LIVE-COMMENT"})
        await e.request({"type": "comment.post", "text": "EVE-LIVE-COMMENT"})
        await d.request({"type": "question.ask", "text": "DORA-LIVE-QUESTION"})
        poll = await host.request({"type": "poll.create", "question": "Now?", "options": ["yes", "no"]})
        await host.request({"type": "poll.open", "poll_id": poll["poll_id"]})
        await d.request({"type": "poll.vote", "poll_id": poll["poll_id"], "choices": [1]})
        await e.request({"type": "poll.vote", "poll_id": poll["poll_id"], "choices": [0]})
        async with http.get(f"/api/people/{dora}/export", headers=own(dora)) as r:
            assert r.status == 200
            body = await r.read()
    assert b"EVE" not in body and eve.encode() not in body
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        live = json.loads(tar.extractfile("live.json").read())  # type: ignore[union-attr]
    (here,) = live["stages"]
    assert here["stage_id"] == stage and [p["name"] for p in here["present"]] == ["Dora"]
    assert [c["text"] for c in here["comments"]] == ["DORA-LIVE-COMMENT"]
    assert [q["text"] for q in here["questions"]] == ["DORA-LIVE-QUESTION"]
    assert [(b["poll_id"], b["choices"]) for b in here["ballots"]] == [(poll["poll_id"], [1])]


async def test_an_erasure_deletes_the_persons_corrected_profile(
    node: RunningNode, http: aiohttp.ClientSession
) -> None:
    erin = "erin-" + uuid.uuid4().hex[:8]
    profiles = node.data / "people" / "profiles.json"  # type: ignore[attr-defined]
    async with http.patch(f"/api/people/{erin}/profile", json={"name": "ERIN-NAME"}, headers=own(erin)) as r:
        assert r.status == 200
    assert b"ERIN-NAME" in profiles.read_bytes()
    async with http.post(f"/api/people/{erin}/erase", headers=own(erin)) as r:
        assert r.status == 200, await r.text()
    await eventually(lambda: b"ERIN-NAME" not in profiles.read_bytes(), 10)
    async with http.get(f"/api/people/{erin}/export", headers=bearer()) as r:
        assert r.status == 200
        body = await r.read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        assert json.loads(tar.extractfile("profile.json").read()) == {"profile": None}  # type: ignore[union-attr]


async def test_a_join_after_a_correction_shows_the_corrected_name(
    node: RunningNode, http: aiohttp.ClientSession
) -> None:
    fay = "fay-" + uuid.uuid4().hex[:8]
    async with http.patch(f"/api/people/{fay}/profile", json={"name": "Dr Fay"}, headers=own(fay)) as r:
        assert r.status == 200
    stage = "later-" + uuid.uuid4().hex[:8]
    async with MedstageClient(node.url) as client:
        joined = await client.join(stage, "Fay Old", "host", identity=fay)  # the token still says Fay Old
        assert joined["participant"]["name"] == "Dr Fay"
