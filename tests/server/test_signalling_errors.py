"""Bad input on the signalling socket: a typed error to the sender, the connection stays usable,
and nobody else in the stage notices. Real node process, real WebSockets."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgpack
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from tests.conftest import RunningNode
from tests.support.client import use_host_addresses
from tests.support.tokens import signed
from tests.support.ws import Socket


@pytest.fixture
def node(module_node: RunningNode) -> RunningNode:
    return module_node


@pytest.fixture
def stage_id(request: pytest.FixtureRequest) -> str:
    """A stage id of this test's own, so tests sharing a node never meet."""
    return "t-" + uuid.uuid4().hex[:12]


@pytest.fixture
async def connect(node: RunningNode) -> AsyncIterator[Any]:
    session = aiohttp.ClientSession()
    sockets: list[aiohttp.ClientWebSocketResponse] = []

    async def open_socket() -> Socket:
        ws = await session.ws_connect(node.ws_url)
        sockets.append(ws)
        return Socket(ws)

    yield open_socket
    for ws in sockets:
        await ws.close()
    await session.close()


async def joined(connect: Any, stage: str, role: str, name: str = "Dr Test") -> Socket:
    sock = await connect()
    reply = await sock.request(
        signed({"type": "join", "id": "j", "stage": stage, "name": name, "role": role})
    )
    assert reply["type"] == "joined", reply
    await sock.recv_type("subscriber.offer")
    return sock


@pytest.fixture
async def stage_with_bystander(connect: Any, stage_id: str) -> tuple[Socket, Socket]:
    """A host, and a bystander audience member who must never notice the host's bad input."""
    host = await joined(connect, stage_id, "host", "Dr Host")
    bystander = await joined(connect, stage_id, "audience", "Dr Bystander")
    await host.recv_type("participant.joined")
    return host, bystander


async def real_offer(video: bool = True, audio: bool = True) -> str:
    use_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        if audio:
            pc.addTrack(AudioStreamTrack())
        if video:
            pc.addTrack(VideoStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def expect_error(sock: Socket, message: dict[str, Any], code: str) -> dict[str, Any]:
    reply = await sock.request(message)
    assert reply["type"] == "error", reply
    assert reply["code"] == code, reply
    assert reply["message"], "every error carries a message for people"
    return reply


async def test_invalid_json_frame_gets_bad_frame_and_the_socket_stays_usable(
    stage_with_bystander: tuple[Socket, Socket],
) -> None:
    host, bystander = stage_with_bystander
    await host.ws.send_str('{"type": "ping", ')
    frame = await host.recv()
    assert frame["type"] == "error" and frame["code"] == "bad_frame"
    await host.assert_usable_and_quiet()
    await bystander.assert_usable_and_quiet()


async def test_invalid_msgpack_frame_gets_bad_frame_in_msgpack(
    stage_with_bystander: tuple[Socket, Socket],
) -> None:
    host, bystander = stage_with_bystander
    await host.ws.send_bytes(b"\xc1\xff\x00")  # 0xc1 is never valid msgpack
    msg = await host.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.BINARY, "replies use the client's framing"
    frame = msgpack.unpackb(msg.data)
    assert frame["code"] == "bad_frame"
    await bystander.assert_usable_and_quiet()


async def test_msgpack_requests_get_msgpack_replies(connect: Any) -> None:
    sock = await connect()
    await sock.ws.send_bytes(msgpack.packb({"type": "ping", "id": 7}))
    msg = await sock.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.BINARY
    assert msgpack.unpackb(msg.data) == {"type": "pong", "id": 7}


@pytest.mark.parametrize("frame", ["[1, 2]", '"hello"', "42"])
async def test_a_frame_that_is_not_an_object_is_refused(connect: Any, frame: str) -> None:
    sock = await connect()
    await sock.ws.send_str(frame)
    reply = await sock.recv()
    assert reply["code"] == "bad_frame"
    await sock.assert_usable_and_quiet()


async def test_unknown_message_type_is_refused_with_its_id(
    stage_with_bystander: tuple[Socket, Socket],
) -> None:
    host, bystander = stage_with_bystander
    await expect_error(host, {"type": "teleport", "id": 41}, "unknown_type")
    await expect_error(host, {"id": 42}, "unknown_type")
    await host.assert_usable_and_quiet()
    await bystander.assert_usable_and_quiet()


async def test_missing_or_mistyped_fields_are_invalid_messages(connect: Any) -> None:
    sock = await connect()
    await expect_error(
        sock, signed({"type": "join", "id": 1, "stage": "x", "name": "", "role": "host"}), "invalid_message"
    )
    await expect_error(
        sock, signed({"type": "join", "id": 2, "stage": "x", "name": "A", "role": "king"}), "invalid_message"
    )
    await expect_error(
        sock,
        signed({"type": "join", "id": 3, "stage": "../etc", "name": "A", "role": "host"}),
        "invalid_message",
    )
    await sock.assert_usable_and_quiet()


async def test_stage_messages_before_join_are_refused(connect: Any) -> None:
    sock = await connect()
    await expect_error(sock, {"type": "publish.stop", "id": 1}, "not_joined")
    await expect_error(sock, {"type": "publish.offer", "id": 2, "sdp": "v=0"}, "not_joined")


async def test_joining_a_missing_stage_as_audience_is_refused(connect: Any) -> None:
    sock = await connect()
    await expect_error(
        sock,
        signed({"type": "join", "id": 1, "stage": "nowhere", "name": "A", "role": "audience"}),
        "stage_not_found",
    )
    await sock.assert_usable_and_quiet()


async def test_a_second_join_on_one_connection_is_refused(connect: Any, stage_id: str) -> None:
    sock = await joined(connect, stage_id, "host")
    await expect_error(
        sock,
        signed({"type": "join", "id": 9, "stage": stage_id, "name": "A", "role": "audience"}),
        "already_joined",
    )


async def test_a_second_host_is_refused(connect: Any, stage_id: str) -> None:
    await joined(connect, stage_id, "host")
    other = await connect()
    await expect_error(
        other,
        signed({"type": "join", "id": 1, "stage": stage_id, "name": "B", "role": "host"}),
        "not_allowed",
    )


async def test_the_host_rejoining_with_its_identity_replaces_its_old_connection(
    connect: Any, stage_id: str
) -> None:
    """A host whose network changed comes back before the node noticed the old socket died."""
    base = {"type": "join", "id": "j", "stage": stage_id, "name": "H", "role": "host", "identity": "dr-h"}
    join = signed(base)
    old = await connect()
    assert (await old.request(join))["type"] == "joined"
    viewer = await joined(connect, stage_id, "audience")
    new = await connect()
    reply = await new.request(join)
    assert reply["type"] == "joined" and reply["participant"]["role"] == "host", reply
    async with asyncio.timeout(5):
        while not (msg := await old.ws.receive()).type.name.startswith("CLOS"):
            pass
    assert old.ws.close_code == 4011, (msg, old.ws.close_code)
    # Someone else claiming the host's place with another identity is still refused.
    intruder = await connect()
    await expect_error(intruder, signed({**base, "identity": "someone-else"}), "not_allowed")
    frames = await viewer.sync()
    assert [f["type"] for f in frames if f["type"].startswith("participant.")] == [
        "participant.left",
        "participant.joined",
    ]


async def test_an_audience_offer_that_sends_media_is_refused(
    stage_with_bystander: tuple[Socket, Socket], node: RunningNode
) -> None:
    host, bystander = stage_with_bystander
    offer = await real_offer()
    await expect_error(bystander, {"type": "publish.offer", "id": "p", "sdp": offer}, "not_allowed")
    await bystander.assert_usable_and_quiet()
    await host.assert_usable_and_quiet()
    assert node.metrics()["medstage_published_tracks"] == 0


async def test_malformed_sdp_is_refused(stage_with_bystander: tuple[Socket, Socket]) -> None:
    host, bystander = stage_with_bystander
    await expect_error(host, {"type": "publish.offer", "id": 1, "sdp": "hello"}, "bad_sdp")
    await expect_error(
        host, {"type": "publish.offer", "id": 2, "sdp": "v=0\r\nthis is not sdp\r\n"}, "bad_sdp"
    )
    await host.assert_usable_and_quiet()
    await bystander.assert_usable_and_quiet()


async def test_an_offer_with_no_media_is_refused(stage_with_bystander: tuple[Socket, Socket]) -> None:
    host, bystander = stage_with_bystander
    sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    await expect_error(host, {"type": "publish.offer", "id": 1, "sdp": sdp}, "no_media")
    await host.assert_usable_and_quiet()
    await bystander.assert_usable_and_quiet()


async def test_an_offer_with_only_unsupported_codecs_is_refused(
    stage_with_bystander: tuple[Socket, Socket],
) -> None:
    host, bystander = stage_with_bystander
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 98\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n"
        "a=rtpmap:98 VP9/90000\r\n"
    )
    reply = await expect_error(host, {"type": "publish.offer", "id": 1, "sdp": sdp}, "unsupported_codec")
    assert "vp9" in reply["message"].lower()
    await host.assert_usable_and_quiet()
    await bystander.assert_usable_and_quiet()


async def test_a_second_offer_while_one_is_pending_is_refused(
    stage_with_bystander: tuple[Socket, Socket], request: pytest.FixtureRequest
) -> None:
    host, bystander = stage_with_bystander
    offer = await real_offer()
    await host.send({"type": "publish.offer", "id": "first", "sdp": offer})
    await host.send({"type": "publish.offer", "id": "second", "sdp": offer})
    replies = {}
    async with asyncio.timeout(10):
        while len(replies) < 2:
            frame = await host.recv()
            if frame.get("id") in ("first", "second"):
                replies[frame["id"]] = frame
    assert replies["first"]["type"] == "publish.answer"
    updated = await bystander.recv_type("participant.updated")
    assert updated["participant"]["publishing"] == {"audio": True, "video": True}
    if replies["second"]["type"] == "publish.answer":
        # Through the relay on a loaded machine the second frame can reach the host after the first
        # offer was answered: then it is a renegotiation of a settled publication, answered in turn.
        assert "relay" in request.node.callspec.id, replies["second"]
        assert list(replies) == ["first", "second"], "a renegotiation is answered after the first"
        return
    assert replies["second"] == {
        "type": "error",
        "id": "second",
        "code": "offer_pending",
        "message": replies["second"]["message"],
    }, replies["second"]


async def test_a_bad_answer_is_refused_and_a_later_good_one_still_works(connect: Any, stage_id: str) -> None:
    sock = await connect()
    await sock.request(signed({"type": "join", "id": "j", "stage": stage_id, "name": "A", "role": "host"}))
    offer = await sock.recv_type("subscriber.offer")
    await expect_error(sock, {"type": "subscriber.answer", "id": 1, "sdp": "nonsense"}, "bad_sdp")
    use_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = {"type": "subscriber.answer", "id": 2, "sdp": pc.localDescription.sdp}
        assert (await sock.request(answer))["type"] == "subscriber.ready"
        await expect_error(sock, {**answer, "id": 3}, "no_offer")
    finally:
        await pc.close()


async def test_mute_without_publishing_is_refused(connect: Any, stage_id: str) -> None:
    sock = await joined(connect, stage_id, "host")
    await expect_error(
        sock, {"type": "publish.mute", "id": 1, "kind": "audio", "muted": True}, "not_publishing"
    )
    await expect_error(sock, {"type": "publish.stop", "id": 2}, "not_publishing")


async def test_an_oversize_frame_is_refused_and_the_socket_stays_usable(
    stage_with_bystander: tuple[Socket, Socket],
) -> None:
    host, bystander = stage_with_bystander
    await host.ws.send_str(json.dumps({"type": "comment.post", "text": "x" * 70000}))
    reply = await host.recv()
    assert reply["type"] == "error" and reply["code"] == "frame_too_large"
    await host.assert_usable_and_quiet()
    await bystander.assert_usable_and_quiet()


async def test_a_huge_frame_closes_with_1009(connect: Any, node: RunningNode) -> None:
    sock = await connect()
    await sock.ws.send_str(json.dumps({"type": "ping", "pad": "x" * 300_000}))
    msg = await sock.ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert sock.ws.close_code == 1009
    # The node is unaffected.
    other = await connect()
    await other.assert_usable_and_quiet()


async def test_leave_replies_left_and_closes_normally(stage_with_bystander: tuple[Socket, Socket]) -> None:
    host, bystander = stage_with_bystander
    reply = await host.request({"type": "leave", "id": "bye"})
    assert reply["type"] == "left"
    msg = await host.ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert host.ws.close_code == 1000
    left = await bystander.recv_type("participant.left")
    assert left["participant_id"]
