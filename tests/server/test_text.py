"""Text that is not valid Unicode is refused at the door (issue 11, item 1).

A lone UTF-16 surrogate (the JSON escape "\\ud800") in a token's name was accepted: after that join
nobody on the stage got replies or events and new joins hung, because every encoder after it (the
socket writer, the stage's log, its presence) failed on it. A stage created over HTTP with such a title
answered 201 and could never be joined. Now every text that enters is checked where it is decoded
(frames, HTTP bodies, tokens: ``bad_text`` or ``token_invalid``), and the stage keeps working for the
others. Real node processes (embedded, Redis, relayed), real WebSockets; development-mode tokens.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import msgpack
import pytest
import yarl

from server import wire
from server.auth import DEV_KEY, DEV_SECRET
from tests.support.tokens import admin_token, signed
from tests.support.ws import Socket

LONE = "Dr \ud800 Who"  # json.dumps sends it as the escape "\ud800", as a hostile client would


def new_id(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def raw_token(stage: str, role: str = "audience", **claims: Any) -> str:
    """A development token with any claims: ``Authenticator.mint`` refuses bad text itself, so a
    hostile one is signed here, as anyone can in development mode (the key is public)."""
    payload = {"sub": new_id("id"), "stage": stage, "role": role, "exp": int(time.time()) + 600, **claims}
    return jwt.encode(payload, DEV_SECRET, algorithm="HS256", headers={"kid": DEV_KEY})


class Client:
    def __init__(self, node: Any, session: aiohttp.ClientSession) -> None:
        self.node, self.session = node, session
        self.sockets: list[Socket] = []

    async def socket(self) -> Socket:
        sock = Socket(await self.session.ws_connect(self.node.ws_url))
        self.sockets.append(sock)
        return sock

    async def joined(self, stage: str, role: str, name: str = "Dr Test") -> tuple[Socket, dict[str, Any]]:
        sock = await self.socket()
        reply = await sock.request(
            signed({"type": "join", "id": "j", "stage": stage, "name": name, "role": role})
        )
        assert reply["type"] == "joined", reply
        await sock.recv_type("subscriber.offer")
        return sock, reply

    async def post(self, path: str, body: str, token: str | None = None) -> aiohttp.ClientResponse:
        """POST a JSON body written by hand (json.dumps escapes a lone surrogate as "\\ud800")."""
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token or admin_token()}"}
        return await self.session.post(self.node.url + path, data=body.encode(), headers=headers)


@pytest.fixture
async def client(module_node: Any) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        c = Client(module_node, session)
        yield c
        for sock in c.sockets:
            await sock.ws.close()


async def close_code(sock: Socket) -> int | None:
    while True:
        msg = await sock.ws.receive(timeout=5)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            return sock.ws.close_code


async def stage_keeps_working(client: Client, stage: str, host: Socket, bystander: Socket) -> None:
    """Replies and events still flow on the stage, and a new join is admitted."""
    reply = await bystander.request({"type": "comment.post", "id": "c", "text": "still here"})
    assert reply["type"] == "ok", reply
    posted = await host.recv_type("comment.posted")
    assert posted["comment"]["text"] == "still here"
    late, joined = await client.joined(stage, "audience", "Dr Late")
    assert [c["text"] for c in joined["state"]["comments"]] == ["still here"]
    assert (await host.recv_type("participant.joined"))["participant"]["name"] == "Dr Late"
    await late.assert_usable_and_quiet()


@pytest.mark.parametrize(
    "claims",
    [
        {"name": LONE},
        {"sub": "id-\udc00"},
        {"grants": ["comment", "\ud800"]},
        {"note": {"nested": LONE}},  # a claim the node does not use: still not valid JSON text for it
    ],
    ids=["name", "sub", "grants", "unknown-claim"],
)
async def test_a_token_with_a_lone_surrogate_is_refused_and_the_stage_keeps_working(
    client: Client, claims: dict[str, Any]
) -> None:
    stage = new_id()
    host, _ = await client.joined(stage, "host", "Dr Host")
    bystander, _ = await client.joined(stage, "audience", "Dr Bystander")
    await host.recv_type("participant.joined")

    bad = await client.socket()
    reply = await bad.request(
        {"type": "join", "id": "j", "stage": stage, "token": raw_token(stage, **claims)}
    )
    assert reply["type"] == "error" and reply["code"] == "token_invalid", reply
    assert "not valid Unicode" in reply["message"], reply
    assert await close_code(bad) == 4401
    assert await host.sync() == [], "a refused join reaches nobody"

    await stage_keeps_working(client, stage, host, bystander)


async def test_a_development_token_with_a_lone_surrogate_is_not_handed_out(client: Client) -> None:
    for field in ("name", "identity", "stage", "club", "role"):
        body = json.dumps({"stage": new_id(), "role": "host", field: LONE})
        async with await client.post("/api/dev/token", body) as response:
            assert response.status == 400, (field, await response.text())
            problem = await response.json()
            assert problem["code"] == "bad_text" and field in problem["detail"], problem


async def test_a_stage_title_with_a_lone_surrogate_is_refused_over_http(client: Client) -> None:
    stage = new_id()
    async with await client.post("/api/stages", json.dumps({"id": stage, "title": LONE})) as response:
        assert response.status == 400, await response.text()
        assert response.content_type == "application/problem+json"
        problem = await response.json()
        assert problem["code"] == "bad_text" and "title" in problem["detail"], problem
    headers = {"Authorization": f"Bearer {admin_token()}"}
    async with client.session.get(client.node.url + "/api/stages", headers=headers) as response:
        assert stage not in [s["id"] for s in (await response.json())["stages"]], "no stage was created"

    # Any valid text is a title: the stage is created and joined, its title intact.
    title = "心臓内科 grand rounds 👩‍⚕️"
    async with await client.post("/api/stages", json.dumps({"id": stage, "title": title})) as response:
        assert response.status == 201, await response.text()
    _, reply = await client.joined(stage, "audience")
    assert reply["stage"]["title"] == title


async def test_a_club_name_with_a_lone_surrogate_is_refused_over_http(client: Client) -> None:
    body = json.dumps({"id": new_id("club"), "name": LONE})
    async with await client.post("/api/clubs", body) as response:
        assert response.status == 400, await response.text()
        problem = await response.json()
        assert problem["code"] == "bad_text" and "name" in problem["detail"], problem


async def test_an_authorization_header_that_is_not_utf8_is_a_401_not_a_500(client: Client) -> None:
    """aiohttp hands header bytes that are not UTF-8 over as surrogates; PyJWT failed to encode them."""
    url = yarl.URL(client.node.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        b"GET /api/stages HTTP/1.1\r\nHost: medstage\r\nAuthorization: Bearer \xff\xfe.e30.x\r\n"
        b"Connection: close\r\n\r\n"
    )
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), response[:200]
    assert json.loads(body)["code"] == "token_invalid", body


@pytest.mark.parametrize(
    "command",
    [
        {"type": "comment.post", "text": LONE},
        {"type": "question.ask", "text": LONE},
        {"type": "poll.create", "question": "Which?", "options": ["a", LONE]},
        {"type": "poll.create", "question": LONE, "options": ["a", "b"]},
        {"type": "moderation.remove", "participant_id": "p-x", "reason": LONE},
        {"type": "moderation.ban", "participant_id": "p-x", "reason": LONE},
        {"type": "ping", "extra": {LONE: 1}},  # a key, in a field nobody reads
    ],
    ids=["comment", "question", "poll-option", "poll-question", "remove-reason", "ban-reason", "key"],
)
async def test_a_command_with_a_lone_surrogate_gets_bad_text_and_nobody_notices(
    client: Client, command: dict[str, Any]
) -> None:
    stage = new_id()
    host, _ = await client.joined(stage, "host", "Dr Host")
    bystander, _ = await client.joined(stage, "audience", "Dr Bystander")
    await host.recv_type("participant.joined")

    reply = await host.request({"id": "bad", **command})
    assert reply["type"] == "error" and reply["code"] == "bad_text", reply
    assert "not valid Unicode" in reply["message"], reply
    await host.assert_usable_and_quiet()
    assert await bystander.sync() == []

    await stage_keeps_working(client, stage, host, bystander)


async def test_a_join_whose_name_or_invite_has_a_lone_surrogate_gets_bad_text(client: Client) -> None:
    stage = new_id()
    host, _ = await client.joined(stage, "host", "Dr Host")
    sock = await client.socket()
    for field in ("name", "invite"):
        join = signed({"type": "join", "id": "j", "stage": stage, "role": "audience"})
        reply = await sock.request({**join, field: LONE})
        assert reply["type"] == "error" and reply["code"] == "bad_text", (field, reply)
        assert field in reply["message"], reply
    # An id that is not valid text cannot be echoed: the error comes without it.
    await sock.send({"type": "ping", "id": LONE})
    reply = await sock.recv()
    assert reply["code"] == "bad_text" and "id" not in reply, reply
    await sock.assert_usable_and_quiet()
    assert await host.sync() == []


async def test_a_msgpack_frame_with_a_string_that_is_not_utf8_gets_bad_text(client: Client) -> None:
    stage = new_id()
    host, _ = await client.joined(stage, "host", "Dr Host")
    # A msgpack str whose bytes are the UTF-8-like encoding of U+D800 (CESU-8): not UTF-8.
    frame = msgpack.packb({"type": "comment.post", "id": 1, "text": "x"})
    frame = frame.replace(b"\xa1x", b"\xa3\xed\xa0\x80")
    await host.ws.send_bytes(frame)
    msg = await host.ws.receive(timeout=5)
    assert msg.type == aiohttp.WSMsgType.BINARY
    reply = msgpack.unpackb(msg.data)
    assert reply["type"] == "error" and reply["code"] == "bad_text", reply
    await host.assert_usable_and_quiet()


# --- the wire itself, without a node ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "where"),
    [
        (json.dumps({"type": "comment.post", "id": 3, "text": LONE}), "text"),
        (json.dumps({"type": "poll.create", "options": ["a", "\udc00"]}), "options[1]"),
        ('{"type": "ping", "note": "\\ud800\\ud800"}', "note"),  # two highs are no pair
        (json.dumps({"type": "ping", "id": 4}).encode()[:-1] + b', "x": "\xed\xa0\x80"}', None),  # not UTF-8
    ],
    ids=["comment", "option", "two-highs", "cesu-bytes"],
)
def test_the_wire_reader_says_bad_text_and_where(data: str | bytes, where: str | None) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.loads(data)
    assert info.value.code == "bad_text", info.value.message
    if where is not None:
        assert info.value.message.startswith(f"{where}: not valid Unicode"), info.value.message
    info.value.message.encode("utf-8")  # the error frame itself can be sent


def test_the_wire_reader_takes_all_of_unicode_and_escaped_pairs() -> None:
    text = "心臓 👩‍⚕️ \u00e9"
    assert wire.loads(json.dumps({"t": text}))["t"] == text  # escaped: "\ud83d\udc69..." pairs
    assert wire.loads(json.dumps({"t": text}, ensure_ascii=False).encode())["t"] == text
    assert wire.loads(msgpack.packb({"t": text}), binary=True)["t"] == text


def test_the_wire_encoder_never_raises_on_text() -> None:
    """Defence in depth: were bad text ever to reach a message, its frame still goes (with U+FFFD),
    where it stopped the connection's writer before."""
    message = {"type": "participant.joined", "participant": {"name": LONE, "tags": ["\udc00"]}}
    sent = wire.encode(message, False)
    assert isinstance(sent, str)
    assert json.loads(sent)["participant"] == {"name": "Dr \ufffd Who", "tags": ["\ufffd"]}
    packed = wire.encode(message, True)
    assert isinstance(packed, bytes)
    assert msgpack.unpackb(packed)["participant"]["name"] == "Dr \ufffd Who"
