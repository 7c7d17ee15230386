"""Hostile structure (issue 11, item 3): frames and bodies nested far deeper than any message of the
protocol get a typed refusal (``bad_frame``, or a 400 problem document), and the socket stays usable.

Real nodes, on the three deployments of the server suite: the stage is created through the HTTP API
on one node and the sockets connect to the other one in the relay deployment, so a relayed client's
bad frame is covered too (it used to kill the host's reader for that client and get no answer)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from tests.conftest import RunningNode, start_node
from tests.server.conftest import Deployment
from tests.support.redis_server import RedisServer
from tests.support.tokens import bearer, signed, token
from tests.support.ws import Socket

# Far beyond the default limit (32), and beyond what a recursive decoder survives (2,000 was enough
# to raise RecursionError), within the frame limit (65,536 bytes).
JSON_DEPTH = 5_000
MSGPACK_DEPTH = {"array": 50_000, "object": 20_000, "bare": 50_000}


def deep_json(depth: int, shape: str) -> str:
    if shape == "array":  # inside a field of an otherwise valid request
        return '{"type": "ping", "id": "deep", "x": ' + "[" * depth + "]" * depth + "}"
    if shape == "object":  # objects all the way down, the request's own fields at the top
        return '{"type": "ping", "id": "deep", "x": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    return "[" * depth + "]" * depth  # not even an object


def deep_msgpack(depth: int, shape: str) -> bytes:
    head = b"\x83" + b"".join(msgpack.packb(v) for v in ("type", "ping", "id", "deep", "x"))
    if shape == "array":
        return head + b"\x91" * depth + b"\xc0"
    if shape == "object":  # {"a": {"a": ... nil}}
        return head + (b"\x81" + msgpack.packb("a")) * depth + b"\xc0"
    return b"\x91" * depth + b"\xc0"


@pytest.fixture
def node(module_node: RunningNode) -> RunningNode:
    return module_node


def front_ws(node: Any, path: str) -> str:
    """Where clients connect: through the relay, the node that does not host the stage."""
    return str(getattr(node, "front", node).url).replace("http", "ws") + path


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
async def stage(node: RunningNode, session: aiohttp.ClientSession) -> str:
    stage_id = "deep-" + uuid.uuid4().hex[:8]
    async with session.post(node.url + "/api/stages", json={"id": stage_id}, headers=bearer()) as r:
        assert r.status == 201, await r.text()
    return stage_id


async def open_socket(
    session: aiohttp.ClientSession, node: Any, stage: str, path: str, joined: bool
) -> Socket:
    sock = Socket(await session.ws_connect(front_ws(node, path)))
    if joined:
        if path == "/console":
            join = {"type": "join", "id": "j", "stage": stage, "token": token(stage, "moderator")}
        else:
            join = signed({"type": "join", "id": "j", "stage": stage, "name": "Eve", "role": "audience"})
        reply = await sock.request(join)
        assert reply["type"] == "joined", reply
        await sock.sync()  # what joining sent (the subscriber offer, ...)
    return sock


async def assert_refused_then_usable(sock: Socket, frame: str | bytes, why: str = "deep") -> None:
    if isinstance(frame, bytes):
        await sock.ws.send_bytes(frame)
    else:
        await sock.ws.send_str(frame)
    reply = await sock.recv()
    assert reply["type"] == "error" and reply["code"] == "bad_frame", reply
    assert why in reply["message"], reply
    await sock.assert_usable_and_quiet()  # a ping gets its pong: the reader (and the relay) lives
    assert sock.ws.close_code is None


@pytest.mark.parametrize("shape", ["array", "object", "bare"])
@pytest.mark.parametrize("framing", ["json", "msgpack"])
@pytest.mark.parametrize("path", ["/ws", "/console"])
@pytest.mark.parametrize("joined", [False, True], ids=["before-join", "joined"])
async def test_a_deeply_nested_frame_gets_bad_frame_and_the_socket_stays_usable(
    node: RunningNode,
    stage: str,
    session: aiohttp.ClientSession,
    path: str,
    framing: str,
    shape: str,
    joined: bool,
) -> None:
    sock = await open_socket(session, node, stage, path, joined)
    frame = deep_json(JSON_DEPTH, shape) if framing == "json" else deep_msgpack(MSGPACK_DEPTH[shape], shape)
    await assert_refused_then_usable(sock, frame)
    await assert_refused_then_usable(sock, frame)  # and again: nothing was left half-done


async def test_a_client_keeps_its_stage_relayed_or_not_after_a_deep_frame(
    node: RunningNode, stage: str, session: aiohttp.ClientSession
) -> None:
    """Another member of the stage sees the attacker's later comment: its connection to the stage
    (through the relay, in that deployment) survived."""
    attacker = await open_socket(session, node, stage, "/ws", joined=True)
    witness = await open_socket(session, node, stage, "/ws", joined=True)
    await attacker.sync()  # the witness's arrival
    await assert_refused_then_usable(attacker, deep_msgpack(MSGPACK_DEPTH["array"], "array"))
    await assert_refused_then_usable(attacker, deep_json(JSON_DEPTH, "object"))
    reply = await attacker.request({"type": "comment.post", "id": "c", "text": "still here"})
    assert reply["type"] == "ok", reply
    posted = await witness.recv_type("comment.posted")
    assert posted["comment"]["text"] == "still here", posted


@pytest.mark.parametrize("framing", ["json", "msgpack"])
async def test_a_frame_too_complex_to_check_cheaply_gets_bad_frame(
    node: RunningNode, stage: str, session: aiohttp.ClientSession, framing: str
) -> None:
    """60 KiB of empty arrays: shallow, but walking them all would cost the node more than decoding."""
    sock = await open_socket(session, node, stage, "/ws", joined=True)
    many = {"type": "ping", "id": "wide", "x": [[]] * 20_000}
    frame = json.dumps(many, separators=(",", ":")) if framing == "json" else msgpack.packb(many)
    await assert_refused_then_usable(sock, frame, why="too complex")


async def test_nesting_within_the_limit_is_not_refused_for_depth(
    node: RunningNode, stage: str, session: aiohttp.ClientSession
) -> None:
    """The bound counts containers, not brackets: brackets inside strings are text."""
    sock = await open_socket(session, node, stage, "/ws", joined=True)
    frame = {"type": "ping", "id": "p", "x": json.loads("[" * 30 + "]" * 30), "t": "[" * 5000}
    await sock.ws.send_str(json.dumps(frame))
    assert await sock.recv() == {"type": "pong", "id": "p"}
    await sock.ws.send_bytes(msgpack.packb({**frame, "id": "m", "b": b"\x91" * 5000}))
    assert await sock.recv() == {"type": "pong", "id": "m"}


@pytest.fixture(scope="module")
def lenient_front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two nodes of one Redis whose limits differ: the front lets through what the host refuses, so
    the host's own check of relayed frames is what answers."""
    directory: Path = tmp_path_factory.mktemp("lenient")
    redis = RedisServer(directory)
    redis.start()
    nodes: list[RunningNode] = []
    try:
        env = {"MEDSTAGE_REDIS_URL": redis.url}
        nodes.append(start_node(directory, env))
        nodes.append(start_node(directory, {**env, "MEDSTAGE_MAX_DEPTH": "512"}))
        yield Deployment(nodes[0], nodes[1])
        for running in nodes:
            assert running.stop() == 0, running.log()[-4000:]
    finally:
        for running in nodes:
            running.stop()
        redis.stop()


@pytest.mark.parametrize("framing", ["json", "msgpack"])
async def test_the_host_refuses_a_relayed_deep_frame_and_the_client_keeps_its_stage(
    lenient_front: Deployment, session: aiohttp.ClientSession, framing: str
) -> None:
    deployment = lenient_front
    stage_id = "deep-" + uuid.uuid4().hex[:8]
    async with session.post(deployment.url + "/api/stages", json={"id": stage_id}, headers=bearer()) as r:
        assert r.status == 201, await r.text()
    sock = await open_socket(session, deployment, stage_id, "/ws", joined=True)
    frame = deep_json(400, "array") if framing == "json" else deep_msgpack(400, "object")
    await assert_refused_then_usable(sock, frame)
    reply = await sock.request({"type": "comment.post", "id": "c", "text": "still on stage"})
    assert reply["type"] == "ok", reply


# --- HTTP bodies ------------------------------------------------------------------------------------


def deep_body(depth: int = 10_000) -> bytes:
    return ('{"id": ' + "[" * depth + "]" * depth + "}").encode()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/stages"),
        ("POST", "/api/dev/token"),
        ("POST", "/api/clubs"),
        ("PUT", "/api/clubs/{club}/members/someone"),
        ("POST", "/api/clubs/{club}/invites"),
    ],
)
async def test_a_body_nested_10000_deep_is_a_400_problem(
    node: RunningNode, session: aiohttp.ClientSession, method: str, path: str
) -> None:
    club = "deep-" + uuid.uuid4().hex[:8]
    async with session.post(node.url + "/api/clubs", json={"id": club, "name": "C"}, headers=bearer()) as r:
        assert r.status == 201, await r.text()
    headers = {**bearer(), "Content-Type": "application/json"}
    url = node.url + path.format(club=club)
    async with session.request(method, url, data=deep_body(), headers=headers) as r:
        assert r.status == 400, await r.text()
        assert r.content_type == "application/problem+json"
        problem = await r.json(content_type=None)
        assert problem["status"] == 400 and problem["code"] == "invalid_body", problem
        assert "deep" in problem["detail"], problem
