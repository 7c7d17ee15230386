"""Several nodes on one real redis-server (issue 5): every event reaches every client in the same order
whichever node it is on; media through a relayed join; the hosting node killed; Redis killed.

Node processes are real (``python -m server``), so is redis-server; clients are WebSockets and aiortc.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from recording.timeline import opened
from recording.vault import load_ring
from server.backend.redis import RedisBackend
from server.backend.redis_keys import RedisKeyStore
from tests.conftest import ROOT, RunningNode, start_node
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.redis_server import RedisServer
from tests.support.tokens import bearer, signed
from tests.support.waiting import eventually
from tests.support.ws import Socket

LEASE_MS = 2000
FAST = {"MEDSTAGE_LEASE_TTL_MS": str(LEASE_MS), "MEDSTAGE_HEARTBEAT_INTERVAL_MS": "300"}

StartNode = Callable[..., RunningNode]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", persistent=True)
    server.directory.mkdir(exist_ok=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nodes(tmp_path: Path, redis: RedisServer) -> Iterator[StartNode]:
    """``nodes()`` starts one more node on the test's Redis; all are stopped at the end."""
    started: list[RunningNode] = []

    def start(**env: str) -> RunningNode:
        node = start_node(tmp_path, {"MEDSTAGE_REDIS_URL": redis.url, **FAST, **env})
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **bearer()}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


async def join(
    session: aiohttp.ClientSession,
    node: RunningNode,
    stage: str,
    role: str,
    name: str,
    identity: str | None = None,
) -> Socket:
    sock = Socket(await session.ws_connect(node.ws_url))
    message: dict[str, Any] = signed(
        {"type": "join", "id": "join", "stage": stage, "name": name, "role": role}
    )
    if identity:
        message["identity"] = identity
    reply = await sock.request(signed(message))
    assert reply["type"] == "joined", reply
    sock.joined = reply  # type: ignore[attr-defined]
    sock.pid = reply["participant"]["id"]  # type: ignore[attr-defined]
    return sock


async def ok(sock: Socket, message: dict[str, Any]) -> dict[str, Any]:
    reply = await sock.request({"id": uuid.uuid4().hex[:8], **message})
    assert reply["type"] == "ok", reply
    return reply


async def rejoin(
    session: aiohttp.ClientSession, node: RunningNode, stage: str, name: str, role: str, identity: str
) -> Socket:
    """Join as a reconnecting client does: again after ``retry_after`` while the stage is unavailable."""
    while True:
        sock = Socket(await session.ws_connect(node.ws_url))
        reply = await sock.request(
            signed(
                {"type": "join", "id": "j", "stage": stage, "name": name, "role": role, "identity": identity}
            )
        )
        if reply["type"] == "joined":
            sock.joined = reply  # type: ignore[attr-defined]
            return sock
        assert reply["code"] == "stage_unavailable", reply
        assert reply["retry_after"] > 0
        await sock.ws.close()
        await asyncio.sleep(min(reply["retry_after"], 0.5))


async def closed_with(sock: Socket, timeout: float = 10) -> int | None:
    """Read (and drop) what comes until the socket closes; its close code."""
    async with asyncio.timeout(timeout):
        while not (await sock.ws.receive()).type.name.startswith("CLOS"):
            pass
    return sock.ws.close_code


def stage_id() -> str:
    return "c-" + uuid.uuid4().hex[:10]


def events(frames: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """The stage events among ``frames``: (seq, type), in the order received."""
    return [(f["seq"], f["type"]) for f in frames if "seq" in f]


# --- two nodes, one Redis --------------------------------------------------------------------


async def test_every_event_reaches_clients_on_both_nodes_in_the_same_order(
    nodes: StartNode, redis: RedisServer, session: aiohttp.ClientSession
) -> None:
    a, b = nodes(), nodes()
    stage = stage_id()
    assert http("POST", a.url + "/api/stages", {"id": stage})[0] == 201
    status, info = http("GET", b.url + f"/api/stages/{stage}")
    assert status == 200 and info["node_url"] == a.url, info

    host = await join(session, a, stage, "host", "Host")
    moderator = await join(session, b, stage, "moderator", "Mod")  # served through node a
    watcher_a = await join(session, a, stage, "audience", "Watcher A")
    watcher_b = await join(session, b, stage, "audience", "Watcher B")
    talker = await join(session, b, stage, "audience", "Talker B")
    # Listeners send nothing but pings, so they keep every frame (request() skips frames).
    listeners = {
        "audience a": await join(session, a, stage, "audience", "Listener A"),
        "audience b": await join(session, b, stage, "audience", "Listener B"),
        "moderator a": await join(session, a, stage, "moderator", "Mod listener A"),
        "moderator b": await join(session, b, stage, "moderator", "Mod listener B"),
    }
    for sock in (host, moderator, watcher_a, watcher_b, talker, *listeners.values()):
        await sock.sync()
    # Presence: node b sees who is on the stage hosted by node a.
    await eventually(
        lambda: http("GET", b.url + f"/api/stages/{stage}")[1].get("participants") == 9, timeout=5
    )

    # Every kind of stage event, issued from both nodes.
    posted = await ok(talker, {"type": "comment.post", "text": "from node b"})
    await ok(watcher_a, {"type": "comment.post", "text": "from node a"})
    await ok(moderator, {"type": "comment.pin", "comment_id": posted["comment_id"]})
    await ok(moderator, {"type": "chat.slow_mode", "seconds": 5})
    await ok(moderator, {"type": "chat.slow_mode", "seconds": 0})
    asked = await ok(talker, {"type": "question.ask", "text": "Dose in renal failure?"})
    await ok(watcher_a, {"type": "question.upvote", "question_id": asked["question_id"]})
    await ok(moderator, {"type": "question.answer", "question_id": asked["question_id"]})
    poll = await ok(
        moderator,
        {"type": "poll.create", "question": "Agree?", "options": ["yes", "no"], "public_results": True},
    )
    await ok(moderator, {"type": "poll.open", "poll_id": poll["poll_id"]})
    await ok(watcher_b, {"type": "poll.vote", "poll_id": poll["poll_id"], "choices": [0]})
    await ok(watcher_a, {"type": "poll.vote", "poll_id": poll["poll_id"], "choices": [1]})
    await ok(moderator, {"type": "poll.close", "poll_id": poll["poll_id"]})
    await ok(talker, {"type": "hand.raise"})
    await ok(host, {"type": "speaker.invite", "participant_id": talker.pid})  # type: ignore[attr-defined]
    await ok(talker, {"type": "invitation.accept"})
    await ok(moderator, {"type": "speaker.demote", "participant_id": talker.pid})  # type: ignore[attr-defined]
    await ok(host, {"type": "role.set", "participant_id": watcher_a.pid, "role": "moderator"})  # type: ignore[attr-defined]
    await ok(moderator, {"type": "chat.mute", "participant_id": talker.pid, "muted": True})  # type: ignore[attr-defined]
    await ok(host, {"type": "moderation.remove", "participant_id": talker.pid, "reason": "test"})  # type: ignore[attr-defined]
    await ok(watcher_b, {"type": "reaction.send", "emoji": "👏"})
    await asyncio.sleep(1.2)  # reactions are aggregated per second
    await ok(host, {"type": "stage.lock", "locked": True})

    await host.sync()  # everything above has been handled by the hosting node
    seen = {name: events(await sock.sync()) for name, sock in listeners.items()}
    for name, got in seen.items():
        seqs = [seq for seq, _ in got]
        assert seqs == sorted(set(seqs)), f"{name}: out of order or repeated: {seqs}"
    types = {t for _, t in seen["audience b"]}
    for expected in (
        "comment.posted", "comment.pinned", "chat.updated", "question.asked", "question.updated",
        "poll.opened", "poll.closed", "hands.updated", "participant.updated", "participant.removed",
        "reactions", "stage.updated",
    ):  # fmt: skip
        assert expected in types, (expected, sorted(types))
    assert "invitation.answered" in {t for _, t in seen["moderator b"]}
    # The same events in the same order whichever node the client is on.
    assert seen["audience a"] == seen["audience b"]
    assert seen["moderator a"] == seen["moderator b"]
    assert len(seen["moderator b"]) > len(seen["audience b"])  # moderator-only events relayed too
    # The shared log in Redis has exactly the stage's events, each once, in order.
    log_seqs = _log_seqs(redis, stage)
    assert log_seqs == list(range(1, len(log_seqs) + 1))
    assert max(seq for seq, _ in seen["moderator b"]) <= log_seqs[-1]


def _log_seqs(redis: RedisServer, stage: str) -> list[int]:
    entries = redis.admin().xrange(f"ms:{{stage:{stage}}}:log")
    return [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]


async def test_media_flows_to_a_client_served_through_another_node(nodes: StartNode) -> None:
    a, b = nodes(), nodes()
    stage = stage_id()
    clip = load_clip()
    assert http("POST", a.url + "/api/stages", {"id": stage})[0] == 201
    async with MedstageClient(a.url) as speaker, MedstageClient(b.url) as viewer:
        await speaker.join(stage, "Speaker", "host")
        await viewer.join(stage, "Viewer", "audience")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        first = await viewer.wait_media(kind="video", keyframe=True, timeout=15)
        assert first is not None
        await viewer.wait_media(kind="audio", timeout=10)


# --- node death ------------------------------------------------------------------------------


async def test_the_stage_is_hosted_again_when_its_node_dies(
    nodes: StartNode, session: aiohttp.ClientSession
) -> None:
    a, b = nodes(), nodes()
    stage = stage_id()
    assert http("POST", a.url + "/api/stages", {"id": stage})[0] == 201
    host = await join(session, a, stage, "host", "Host", identity="dr-host")
    mod = await join(session, b, stage, "moderator", "Mod", identity="dr-mod")
    viewer = await join(session, b, stage, "audience", "Viewer", identity="dr-viewer")
    await ok(
        viewer,
        {
            "type": "consent.give",
            "scopes": ["media", "comments"],
            "policy_version": viewer.joined["policy"]["version"],
        },
    )  # type: ignore[attr-defined]
    await ok(viewer, {"type": "hand.raise"})
    await ok(host, {"type": "speaker.invite", "participant_id": viewer.pid})  # type: ignore[attr-defined]
    await ok(viewer, {"type": "invitation.accept"})
    await ok(mod, {"type": "comment.post", "text": "before the crash"})
    await ok(mod, {"type": "comment.post", "text": "and another"})
    await mod.sync()
    last_seq = max(seq for seq, _ in events(await host.sync()))
    await asyncio.sleep(0.6)  # the durable state is saved at most every 250 ms

    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    killed = time.monotonic()

    # Node b notices (heartbeat) and tells its relayed clients to reconnect.
    assert await closed_with(viewer) == 1012

    # Rejoining through node b: refused with retry_after until the dead node's lease runs out,
    # then node b hosts the stage, restored.
    back = await asyncio.wait_for(rejoin(session, b, stage, "Viewer", "audience", "dr-viewer"), 20)
    hosted_again = time.monotonic() - killed
    assert hosted_again < LEASE_MS / 1000 + 3, hosted_again
    me = back.joined["participant"]  # type: ignore[attr-defined]
    assert me["role"] == "speaker", me  # the role it had, not the one it asked for
    consent = back.joined["state"]["consent"]  # type: ignore[attr-defined]
    assert consent["mine"]["scopes"] == ["comments", "media"] or sorted(consent["mine"]["scopes"]) == [
        "comments",
        "media",
    ], consent
    comments = [c["text"] for c in back.joined["state"]["comments"]]  # type: ignore[attr-defined]
    assert "before the crash" in comments
    # The log continues after the last event the dead node wrote: no seq is reused, and no comment id
    # either (the new host's id counter starts afresh, beside the ids restored from the old one).
    old_ids = {c["id"] for c in back.joined["state"]["comments"]}  # type: ignore[attr-defined]
    posted = [await ok(back, {"type": "comment.post", "text": f"after the crash {i}"}) for i in range(3)]
    assert not {p["comment_id"] for p in posted} & old_ids, (posted, old_ids)
    frames = await back.sync()
    new_seqs = [seq for seq, _ in events(frames)]
    assert new_seqs and min(new_seqs) > last_seq
    status, info = http("GET", b.url + f"/api/stages/{stage}")
    assert status == 200 and info["participants"] >= 1


# --- Redis outage ----------------------------------------------------------------------------


def _ready(node: RunningNode) -> int:
    try:
        with urllib.request.urlopen(node.url + "/readyz", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _healthy(node: RunningNode) -> int:
    with urllib.request.urlopen(node.url + "/healthz", timeout=2) as response:
        return response.status


async def test_a_redis_outage_loses_and_repeats_nothing(
    nodes: StartNode, redis: RedisServer, session: aiohttp.ClientSession
) -> None:
    a, b = nodes(), nodes()
    stage = stage_id()
    clip = load_clip()
    assert http("POST", a.url + "/api/stages", {"id": stage})[0] == 201
    host = await join(session, a, stage, "moderator", "Mod")
    watcher = await join(session, a, stage, "moderator", "Watcher")  # no comment rate limit
    relayed = await join(session, b, stage, "audience", "Relayed", identity="dr-relayed")
    async with MedstageClient(a.url) as speaker, MedstageClient(a.url) as viewer:
        await speaker.join(stage, "Speaker", "host")
        await viewer.join(stage, "Viewer", "audience")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await viewer.wait_media(kind="video", keyframe=True, timeout=15)
        await ok(watcher, {"type": "comment.post", "text": "before"})
        assert _ready(a) == 200

        redis.kill()
        await eventually(lambda: _ready(a) == 503, timeout=10)
        assert _healthy(a) == 200
        assert await closed_with(relayed) == 1012  # its relay went with Redis: it must reconnect
        # The stage goes on: comments, media.
        for i in range(3):  # the comment rate limit is 5 per 10 s
            await ok(watcher, {"type": "comment.post", "text": f"during {i}"})
        frames_before = viewer.received("video").frames_complete
        await asyncio.sleep(1.0)
        assert viewer.received("video").frames_complete > frames_before + 10

        redis.start()
        await eventually(lambda: _ready(a) == 200 and _ready(b) == 200, timeout=15)
        relayed = await asyncio.wait_for(rejoin(session, b, stage, "Relayed", "audience", "dr-relayed"), 10)
        await ok(watcher, {"type": "comment.post", "text": "after"})
        assert "after" in [
            f["comment"]["text"] for f in await relayed.sync() if f["type"] == "comment.posted"
        ]
        seen = events(await host.sync())

    await asyncio.sleep(0.5)
    entries = redis.admin().xrange(f"ms:{{stage:{stage}}}:log")
    log_seqs = [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]
    assert log_seqs == list(range(1, len(log_seqs) + 1)), log_seqs  # no gap, no repeat
    assert log_seqs[-1] >= max(seq for seq, _ in seen)
    logged = [msgpack.unpackb(fields[b"e"]) for _, fields in entries]
    posted = [e["comment"]["text"] for e in logged if e["type"] == "comment.posted"]
    assert posted == ["before", *(f"during {i}" for i in range(3)), "after"], posted


# --- the recorder and the log ----------------------------------------------------------------


async def test_the_recording_timeline_is_the_shared_log(
    nodes: StartNode, redis: RedisServer, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    recordings = tmp_path / "recordings"
    env = {"MEDSTAGE_RECORDING_MODE": "manual", "MEDSTAGE_RECORDINGS_DIR": str(recordings)}
    a, b = nodes(**env), nodes(**env)
    stage = stage_id()
    assert http("POST", a.url + "/api/stages", {"id": stage})[0] == 201
    host = await join(session, a, stage, "host", "Host")
    viewer = await join(session, b, stage, "audience", "Viewer")  # served through node a
    policy = host.joined["policy"]["version"]  # type: ignore[attr-defined]
    await ok(host, {"type": "consent.give", "scopes": ["comments"], "policy_version": policy})
    await ok(viewer, {"type": "consent.give", "scopes": ["comments"], "policy_version": policy})
    started = await ok(host, {"type": "recording.start"})
    await ok(viewer, {"type": "comment.post", "text": "recorded, from node b"})
    await ok(host, {"type": "comment.post", "text": "recorded, from node a"})
    await ok(viewer, {"type": "reaction.send", "emoji": "👍"})
    await asyncio.sleep(1.2)
    await ok(host, {"type": "recording.stop"})
    directory = recordings / stage / started["session_id"]

    def complete() -> bool:
        manifest = directory / "manifest.json"
        return manifest.is_file() and json.loads(manifest.read_text())["status"] == "complete"

    await eventually(complete, timeout=10)
    timeline = json.loads((directory / "timeline.json").read_text())
    await eventually(lambda: len(_log_seqs(redis, stage)) >= max(e["seq"] for e in timeline), timeout=5)
    entries = redis.admin().xrange(f"ms:{{stage:{stage}}}:log")
    shared = {int(i.split(b"-")[0]): msgpack.unpackb(f[b"e"]) for i, f in entries}
    seqs = [e["seq"] for e in timeline]
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), "the timeline has every event of its span"
    # The span opens with the audit record of the start (same batch, just before its effects).
    assert (timeline[0]["type"], timeline[0]["action"]) == ("moderation.audit", "recording.start")
    assert timeline[1]["type"] == "recording.started" and timeline[-1]["type"] == "recording.stopped"
    for event in timeline:
        assert shared[event["seq"]]["type"] == event["type"], event
    # Each comment is sealed with its author's key (recording/items.py), kept in Redis for every node.
    assert "recorded, from node" not in json.dumps(timeline)
    backend = RedisBackend(redis.url, name="cluster-test-keys")
    try:
        ring = await load_ring(RedisKeyStore(backend))
    finally:
        await backend.close()
    texts = [e["comment"]["text"] for e in opened(timeline, ring) if e["type"] == "comment.posted"]
    assert texts == ["recorded, from node b", "recorded, from node a"]
    # The host published the ledger's final signed head in Redis, beside the stage's log: the same
    # as the manifest's, and verify accepts it as a witness (docs/recording.md, threat model).
    manifest = json.loads((directory / "manifest.json").read_text())
    signed = manifest["ledger_signature"]
    assert signed["final"] and signed["count"] == manifest["ledger_count"] == 2
    key = f"ms:{{stage:{stage}}}:ledger-heads"
    await eventually(lambda: redis.admin().hget(key, started["session_id"]) is not None, timeout=5)
    published = redis.admin().hget(key, started["session_id"])
    assert json.loads(published) == signed
    verified = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "recording", "verify", str(directory), "--head", published.decode()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"signed by key {manifest['ledger_key']['key_id']}" in verified.stdout


# --- where clients go: the node list -----------------------------------------------------------


async def test_clients_learn_the_live_nodes_and_hear_when_one_comes_or_goes(
    nodes: StartNode, session: aiohttp.ClientSession
) -> None:
    a, b = nodes(), nodes()
    stage = stage_id()
    assert http("POST", a.url + "/api/stages", {"id": stage})[0] == 201
    here = await join(session, a, stage, "audience", "Here")
    relayed = await join(session, b, stage, "audience", "Relayed")  # served through node a

    async def listed(sock: Socket, expected: list[str]) -> None:
        """The list the client has now: its ``joined``'s, then each ``nodes`` frame's."""
        latest = sock.joined["nodes"]  # type: ignore[attr-defined]
        assert latest[0] == a.url, "the hosting node first: a client tries it again first"
        async with asyncio.timeout(5):
            while sorted(latest) != sorted(expected):
                latest = (await sock.recv_type("nodes"))["nodes"]
                assert latest[0] == a.url, latest
        sock.joined["nodes"] = latest  # type: ignore[attr-defined]

    for sock in (here, relayed):  # node a learns of node b at its next beat (300 ms), if not already
        await listed(sock, [a.url, b.url])
    c = nodes()
    for sock in (here, relayed):
        await listed(sock, [a.url, b.url, c.url])
    c.proc.send_signal(signal.SIGKILL)
    c.proc.wait()
    for sock in (here, relayed):  # its heartbeat lapses (3 x 300 ms), the next beat tells
        await listed(sock, [a.url, b.url])


def _preflight(node: RunningNode, origin: str) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        node.url + "/api/dev/token",
        method="OPTIONS",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


async def test_a_page_of_another_node_may_ask_this_one_for_a_token_and_no_other_origin(
    nodes: StartNode,
) -> None:
    a, b = nodes(), nodes()
    await eventually(lambda: _preflight(b, a.url)[0] == 204, timeout=5)  # b has seen a beat
    status, headers = _preflight(b, a.url)
    assert headers["Access-Control-Allow-Origin"] == a.url
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "content-type" in headers["Access-Control-Allow-Headers"].lower()
    body = {"stage": "any-stage", "name": "Ann", "role": "audience", "identity": "ann"}
    request = urllib.request.Request(
        b.url + "/api/dev/token",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Origin": a.url},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: ASYNC210 - a short call
        assert response.status == 200 and json.loads(response.read())["token"]
        assert response.headers["Access-Control-Allow-Origin"] == a.url

    a.proc.send_signal(signal.SIGKILL)  # a page loaded from a dead node is still one of ours
    a.proc.wait()
    await asyncio.sleep(1.2)  # a's heartbeat has lapsed
    assert _preflight(b, a.url)[0] == 204
    status, headers = _preflight(b, "http://evil.example")
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, headers = _preflight(b, "http://127.0.0.1:1")
    assert status == 403 and "Access-Control-Allow-Origin" not in headers


# --- a clean stop hands the stages over at once --------------------------------------------------

RECONNECT_CODES = {1001, 1012, 1013, 4010}  # server/static/reconnect.js: the client comes back


async def test_sigterm_on_a_node_hands_its_stages_over_at_once(
    nodes: StartNode, redis: RedisServer, session: aiohttp.ClientSession
) -> None:
    """With a 30 s lease, a node that stops without releasing its leases would keep its stages
    unreachable for 30 s: at SIGTERM it writes what is pending, releases them, and tells its clients
    to come back; the other node takes the stage over at the first join, restored."""
    slow_lease = {"MEDSTAGE_LEASE_TTL_MS": "30000"}
    a, b = nodes(**slow_lease), nodes(**slow_lease)
    stage = stage_id()
    assert http("POST", a.url + "/api/stages", {"id": stage})[0] == 201
    host = await join(session, a, stage, "host", "Host", identity="dr-host")
    watcher = await join(session, a, stage, "audience", "Watcher", identity="dr-watcher")
    viewer = await join(session, b, stage, "audience", "Viewer", identity="dr-viewer")  # relayed
    policy = viewer.joined["policy"]["version"]  # type: ignore[attr-defined]
    await ok(viewer, {"type": "consent.give", "scopes": ["media", "comments"], "policy_version": policy})
    await ok(viewer, {"type": "hand.raise"})
    await ok(host, {"type": "speaker.invite", "participant_id": viewer.pid})  # type: ignore[attr-defined]
    await ok(viewer, {"type": "invitation.accept"})
    await ok(watcher, {"type": "comment.post", "text": "before the stop"})
    await ok(host, {"type": "role.set", "participant_id": watcher.pid, "role": "moderator"})  # type: ignore[attr-defined]
    last_seq = max(seq for seq, _ in events(await host.sync()))
    assert redis.admin().get(f"ms:{{stage:{stage}}}:owner") is not None

    stopped_at = time.monotonic()
    a.proc.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(closed_with(host), closed_with(watcher), closed_with(viewer))
    assert set(codes) <= RECONNECT_CODES, codes  # every client is told to come back
    assert a.proc.wait(10) == 0, a.log()[-3000:]
    stop_s = time.monotonic() - stopped_at
    assert redis.admin().get(f"ms:{{stage:{stage}}}:owner") is None, "the lease was released"

    # The first join through node b is served at once: no stage_unavailable, no waiting for the lease.
    viewer = await join(session, b, stage, "audience", "Viewer", identity="dr-viewer")
    taken_over_s = time.monotonic() - stopped_at
    print(f"node a stopped in {stop_s:.2f} s (closes {codes}); node b hosts {taken_over_s:.2f} s after")
    assert taken_over_s < 10, taken_over_s  # the lease is 30 s
    assert b.metrics()["medstage_stages"] == 1, "node b hosts it"
    me = viewer.joined["participant"]  # type: ignore[attr-defined]
    assert me["role"] == "speaker", me
    assert sorted(viewer.joined["state"]["consent"]["mine"]["scopes"]) == ["comments", "media"]  # type: ignore[attr-defined]
    assert "before the stop" in [c["text"] for c in viewer.joined["state"]["comments"]]  # type: ignore[attr-defined]
    watcher = await join(session, b, stage, "audience", "Watcher", identity="dr-watcher")
    assert watcher.joined["participant"]["role"] == "moderator"  # type: ignore[attr-defined]
    await ok(viewer, {"type": "comment.post", "text": "after the stop"})
    new_seqs = [seq for seq, _ in events(await viewer.sync())]
    assert new_seqs and min(new_seqs) > last_seq, (new_seqs, last_seq)
    log_seqs = _log_seqs(redis, stage)
    assert log_seqs == list(range(1, len(log_seqs) + 1)), "no gap, no repeat across the hand-over"
