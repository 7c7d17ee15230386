"""Access tokens (issue 6) on real node processes: every refusal with its code (an error frame, then the
close code on the socket; a problem document on HTTP), key rotation, the token in the socket's URL,
revocation, bans that a brand-new token does not lift, grants that narrow a role, and the CLI.

Most tests use a node with configured API keys; development mode has its own node.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from server.auth import LEEWAY_S, Authenticator, Unauthorized
from tests.conftest import ROOT, RunningNode, start_node
from tests.support.client import use_host_addresses
from tests.support.redis_server import RedisServer
from tests.support.tokens import DEV
from tests.support.tokens import token as mint_token
from tests.support.ws import Socket

KEYS = {"k1": "k1-secret-" + "a" * 32, "k2": "k2-secret-" + "b" * 32}
K1 = {"k1": KEYS["k1"]}
K2 = {"k2": KEYS["k2"]}
API_KEYS = ",".join(f"{key}:{secret}" for key, secret in KEYS.items())


def token(
    stage: str | None, role: str | None = "audience", identity: str | None = None, **claims: Any
) -> str:
    """A token signed with k1 (the keyed node's first key), unless ``keys`` says otherwise."""
    claims.setdefault("keys", K1)
    return mint_token(stage, role, identity, **claims)


def admin(keys: dict[str, str] = K1) -> str:
    return Authenticator(keys).mint("platform", admin=True)


def auth(token_: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_}"}


def new_id(prefix: str = "a") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- nodes and clients ----------------------------------------------------------------------------


def _stopped(node: RunningNode) -> None:
    code = node.stop()
    assert code == 0, f"node exited with {code}:\n{node.log()[-4000:]}"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """A node with two API keys (k1, k2): no development key, no /api/dev/token."""
    node = start_node(tmp_path_factory.mktemp("keyed"), {"MEDSTAGE_API_KEYS": API_KEYS})
    yield node
    _stopped(node)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """A node in development mode (no keys)."""
    node = start_node(tmp_path_factory.mktemp("dev"), {"MEDSTAGE_API_KEYS": ""})
    yield node
    _stopped(node)


_open: list[Socket] = []  # every socket of the running test, kept open (and referenced) until its end


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        try:
            yield s
        finally:
            for sock in _open:
                await sock.ws.close()
            _open.clear()


async def new_stage(
    session: aiohttp.ClientSession, node: RunningNode, keys: dict[str, str] = K1, **body: Any
) -> str:
    stage = body.setdefault("id", new_id())
    if body.get("club"):  # a stage belongs to an existing club
        club = {"id": body["club"], "name": body["club"]}
        async with session.post(node.url + "/api/clubs", json=club, headers=auth(admin(keys))) as response:
            assert response.status in (201, 409), await response.text()
    async with session.post(node.url + "/api/stages", json=body, headers=auth(admin(keys))) as response:
        assert response.status == 201, await response.text()
    return str(stage)


async def connect(session: aiohttp.ClientSession, node: RunningNode, query: str = "") -> Socket:
    sock = Socket(await session.ws_connect(node.ws_url + query))
    _open.append(sock)
    return sock


async def joined(
    session: aiohttp.ClientSession, node: RunningNode, stage: str, token_: str, **fields: Any
) -> tuple[Socket, dict[str, Any]]:
    sock = await connect(session, node)
    reply = await sock.request({"type": "join", "id": "join", "stage": stage, "token": token_, **fields})
    assert reply["type"] == "joined", reply
    await sock.sync()
    return sock, reply


async def close_code(sock: Socket, timeout: float = 5.0) -> int | None:
    """Read until the server closes; the close code (frames before it are dropped)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await sock.ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return sock.ws.close_code


async def refused_join(
    session: aiohttp.ClientSession,
    node: RunningNode,
    stage: str,
    token_: str | None,
    code: str,
    close: int,
    query: str = "",
) -> dict[str, Any]:
    """A join refused with an error frame (``code``), then the socket closed with ``close``."""
    sock = await connect(session, node, query)
    message: dict[str, Any] = {"type": "join", "id": "join", "stage": stage}
    if token_ is not None:
        message["token"] = token_
    await sock.send(message)
    error = await sock.recv()
    assert error["type"] == "error" and error["code"] == code and error["id"] == "join", error
    assert error["message"]
    assert await close_code(sock) == close
    return error


async def problem(response: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json()
    assert body["code"] == code and body["status"] == status and body["detail"], body
    return body


async def real_offer() -> str:
    use_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


# --- joining: 4401, a token that proves nothing ---------------------------------------------------


async def test_a_join_without_a_token_is_refused_with_4401(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = await new_stage(session, keyed)
    await refused_join(session, keyed, stage, None, "token_missing", 4401)


async def test_an_expired_token_is_refused_with_4401_after_the_clock_skew_leeway(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = await new_stage(session, keyed)

    def expired_ago(seconds: float) -> str:
        clock = lambda: time.time() - 60 - seconds  # noqa: E731
        return Authenticator(K1, clock).mint(new_id("id"), role="audience", stage=stage, ttl_s=60)

    await refused_join(session, keyed, stage, expired_ago(LEEWAY_S + 30), "token_expired", 4401)
    await joined(session, keyed, stage, expired_ago(LEEWAY_S / 4))  # clocks may differ this much


def _tampered(stage: str) -> str:
    """A valid audience token whose payload now says host; the signature is the original one."""
    header, payload, signature = token(stage, "audience").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "host"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


FORGED: dict[str, Callable[[str], str]] = {
    "wrong-secret": lambda stage: Authenticator({"k1": "not-the-secret-" + "x" * 32}).mint("x", stage=stage),
    "tampered-claims": _tampered,
    "unknown-kid": lambda stage: Authenticator({"k9": KEYS["k1"]}).mint("x", stage=stage),
    "development-key": lambda stage: DEV.mint("x", stage=stage),
    "alg-none": lambda stage: jwt.encode(
        {"sub": "x", "stage": stage, "exp": int(time.time()) + 60},
        "",
        algorithm="none",
        headers={"kid": "k1"},
    ),
    "no-expiry": lambda stage: jwt.encode(
        {"sub": "x", "stage": stage}, KEYS["k1"], algorithm="HS256", headers={"kid": "k1"}
    ),
    "not-a-jwt": lambda stage: "not.a.jwt",
}


@pytest.mark.parametrize("kind", FORGED)
async def test_a_forged_token_is_refused_with_4401(
    keyed: RunningNode, session: aiohttp.ClientSession, kind: str
) -> None:
    stage = await new_stage(session, keyed)
    await refused_join(session, keyed, stage, FORGED[kind](stage), "token_invalid", 4401)


def _signed_claims(stage: str, **claims: Any) -> str:
    """A token signed with k1 whose claims are exactly these (over a valid base): the signature is
    good, so only the claims can make it refused."""
    base: dict[str, Any] = {"sub": new_id("id"), "stage": stage, "exp": int(time.time()) + 600}
    payload = {k: v for k, v in {**base, **claims}.items() if v is not _ABSENT}
    return jwt.encode(payload, KEYS["k1"], algorithm="HS256", headers={"kid": "k1"})


_ABSENT = object()
BAD_CLAIMS: dict[str, tuple[dict[str, Any], str]] = {
    # docs/protocol.md, Tokens: exp is a number of Unix seconds; PyJWT alone takes anything int() takes.
    "exp-numeric-string": ({"exp": str(int(time.time()) + 600)}, "exp"),
    "exp-boolean": ({"exp": True}, "exp"),
    "nbf-numeric-string": ({"nbf": "1"}, "nbf"),
    "unknown-grant": ({"grants": ["publish", "fly"]}, "fly"),
    "missing-sub": ({"sub": _ABSENT}, "sub"),
    "sub-not-a-string": ({"sub": 4711}, "Subject"),
    "empty-sub": ({"sub": ""}, "sub"),
    "unknown-role": ({"role": "king"}, "role"),
    "grants-not-a-list": ({"grants": "publish"}, "grants"),
    "grants-of-non-strings": ({"grants": ["publish", 7]}, "grants"),
    "name-not-a-string": ({"name": ["Dr", "Ada"]}, "name"),
    "name-lone-surrogate": ({"name": "Dr \ud800"}, "name"),
}


@pytest.mark.parametrize("kind", BAD_CLAIMS)
async def test_a_well_signed_token_with_a_bad_claim_is_refused_with_4401(
    keyed: RunningNode, session: aiohttp.ClientSession, kind: str
) -> None:
    stage = await new_stage(session, keyed)
    claims, named = BAD_CLAIMS[kind]
    bad = _signed_claims(stage, **claims)
    error = await refused_join(session, keyed, stage, bad, "token_invalid", 4401)
    assert named in error["message"], error
    async with session.get(keyed.url + f"/api/stages/{stage}", headers=auth(bad)) as response:
        body = await problem(response, 401, "token_invalid")
    assert named in body["detail"], body
    # The same token with the claim made right is accepted: the claim alone was the reason.
    await joined(session, keyed, stage, _signed_claims(stage))


def test_minting_refuses_text_that_is_not_valid_unicode_and_verifying_a_token_that_is_not_ascii() -> None:
    auth = Authenticator(K1)
    for claims in ({"name": "Dr \ud800"}, {"stage": "\udc00"}, {"club": "\ud800"}, {"grants": ["\ud800"]}):
        with pytest.raises(ValueError, match="not valid Unicode"):
            auth.mint("someone", **claims)
    with pytest.raises(ValueError, match="not valid Unicode"):
        auth.mint("id-\ud800", stage="s")
    # A header that was not UTF-8 reaches us with surrogates: refused as what it is, not a crash.
    good = auth.mint("someone", stage="s")
    for token_ in (good + "\udcff", "\u00e9" + good):
        with pytest.raises(Unauthorized) as info:
            auth.verify(token_)
        assert info.value.code == "token_invalid"
    assert auth.verify(good).identity == "someone"


# --- joining: 4403, a valid token that does not open this stage -----------------------------------


async def test_a_token_for_another_stage_is_refused_with_4403_and_the_stage_sees_nothing(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage, other = await new_stage(session, keyed), await new_stage(session, keyed)
    observer, _ = await joined(session, keyed, stage, token(stage, "moderator"))
    error = await refused_join(session, keyed, stage, token(other, "host"), "token_wrong_stage", 4403)
    assert other in error["message"]
    assert await observer.sync() == [], "a refused join reaches nobody on the stage"


@pytest.mark.parametrize(
    ("stage_club", "claims"),
    [
        pytest.param("club-b", {"club": "club-a"}, id="another-club"),
        pytest.param(None, {"club": "club-a"}, id="a-stage-of-no-club"),
        pytest.param(None, {}, id="a-token-for-no-stage"),
    ],
)
async def test_a_token_for_no_stage_or_another_club_is_refused_with_4403(
    keyed: RunningNode, session: aiohttp.ClientSession, stage_club: str | None, claims: dict[str, Any]
) -> None:
    body: dict[str, Any] = {"club": stage_club} if stage_club else {}
    stage = await new_stage(session, keyed, **body)
    tok = Authenticator(K1).mint(new_id("id"), role="audience", **claims)
    await refused_join(session, keyed, stage, tok, "token_wrong_stage", 4403)


async def test_a_club_token_opens_every_stage_of_its_club(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    club = new_id("club")
    first, second = await new_stage(session, keyed, club=club), await new_stage(session, keyed, club=club)
    tok = Authenticator(K1).mint(new_id("id"), role="audience", club=club)
    for stage in (first, second):
        await joined(session, keyed, stage, tok)
    async with session.get(keyed.url + f"/api/stages/{first}", headers=auth(tok)) as response:
        assert response.status == 200


async def test_a_refused_club_token_creates_no_stage(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = new_id("nowhere")
    tok = Authenticator(K1).mint(new_id("id"), role="host", club=new_id("club"))
    await refused_join(session, keyed, stage, tok, "token_wrong_stage", 4403)
    async with session.get(keyed.url + "/api/stages", headers=auth(admin())) as response:
        listed = [s["id"] for s in (await response.json())["stages"]]
    assert stage not in listed


# --- where the token comes from, and what it decides ----------------------------------------------


async def test_both_configured_keys_are_accepted_so_keys_can_be_rotated(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = await new_stage(session, keyed, keys=K2)
    for keys in (K1, K2):
        _, reply = await joined(session, keyed, stage, token(stage, keys=keys))
        assert reply["participant"]["role"] == "audience"


async def test_the_token_may_come_in_the_socket_url(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = await new_stage(session, keyed)
    sock = await connect(session, keyed, "?access_token=" + token(stage, "speaker", name="Dr Url"))
    reply = await sock.request({"type": "join", "id": "join", "stage": stage})
    assert reply["type"] == "joined", reply
    assert reply["participant"]["role"] == "speaker" and reply["participant"]["name"] == "Dr Url"
    await refused_join(session, keyed, stage, None, "token_invalid", 4401, query="?access_token=forged")
    # A token in the join itself wins over the URL's.
    sock = await connect(session, keyed, "?access_token=forged")
    reply = await sock.request({"type": "join", "id": "join", "stage": stage, "token": token(stage)})
    assert reply["type"] == "joined", reply


async def test_role_identity_and_name_come_from_the_token_not_the_join(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = await new_stage(session, keyed)
    identity = new_id("id")
    fields = {"role": "host", "identity": "someone-else", "name": "Dr Fake"}
    _, reply = await joined(
        session, keyed, stage, token(stage, "audience", identity, name="Dr Real"), **fields
    )
    me = reply["participant"]
    assert me["role"] == "audience" and me["name"] == "Dr Real", me
    # Without a name in the token, the join's is shown.
    _, other = await joined(session, keyed, stage, token(stage, "speaker"), name="Dr Chosen")
    assert other["participant"]["name"] == "Dr Chosen"
    mod = token(stage, "moderator")
    async with session.get(keyed.url + f"/api/stages/{stage}/participants", headers=auth(mod)) as response:
        people = {p["id"]: p for p in (await response.json())["participants"]}
    assert people[me["id"]]["identity"] == identity


# --- grants narrow the role -----------------------------------------------------------------------


async def test_a_host_token_without_publish_and_moderate_grants_can_do_neither(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = await new_stage(session, keyed)
    host, reply = await joined(session, keyed, stage, token(stage, "host", grants=["subscribe", "comment"]))
    assert reply["participant"]["role"] == "host"
    _, viewer = await joined(session, keyed, stage, token(stage, "audience"))
    for command in (
        {"type": "publish.offer", "sdp": await real_offer()},
        {"type": "stage.lock", "locked": True},
        {"type": "chat.slow_mode", "seconds": 5},
        {"type": "poll.create", "question": "Q?", "options": ["a", "b"]},
        {"type": "moderation.ban", "participant_id": viewer["participant"]["id"]},
        {"type": "stage.end"},
    ):
        reply = await host.request({"id": command["type"], **command})
        assert reply["type"] == "error" and reply["code"] == "not_allowed", reply
        assert "grant" in reply["message"], reply
    assert (await host.request({"type": "comment.post", "id": "c", "text": "still talking"}))["type"] == "ok"


@pytest.mark.parametrize(
    "command",
    [
        {"type": "comment.post", "text": "hello"},
        {"type": "question.ask", "text": "why?"},
        {"type": "reaction.send", "emoji": "👏"},
    ],
    ids=lambda c: c["type"],
)
async def test_an_audience_token_without_the_comment_grant_cannot_comment(
    keyed: RunningNode, session: aiohttp.ClientSession, command: dict[str, Any]
) -> None:
    stage = await new_stage(session, keyed)
    observer, _ = await joined(session, keyed, stage, token(stage, "moderator"))
    viewer, _ = await joined(session, keyed, stage, token(stage, "audience", grants=["subscribe"]))
    await observer.sync()
    reply = await viewer.request({"id": "x", **command})
    assert reply["type"] == "error" and reply["code"] == "not_allowed", reply
    assert "'comment' grant" in reply["message"]
    assert await observer.sync() == []


async def test_a_host_token_without_the_moderate_grant_cannot_delete_or_lower_for_others(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = await new_stage(session, keyed)
    host, _ = await joined(session, keyed, stage, token(stage, "host", grants=["subscribe", "comment"]))
    viewer, joined_ = await joined(session, keyed, stage, token(stage, "audience"))
    comment = await viewer.request({"type": "comment.post", "id": "c", "text": "mine"})
    await viewer.request({"type": "hand.raise", "id": "h"})
    delete = await host.request({"type": "comment.delete", "id": "d", "comment_id": comment["comment_id"]})
    lower = await host.request(
        {"type": "hand.lower", "id": "l", "participant_id": joined_["participant"]["id"]}
    )
    assert (delete.get("code"), lower.get("code")) == ("not_allowed", "not_allowed"), (delete, lower)


async def test_an_explicit_grants_list_does_not_widen_the_role_over_http(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = await new_stage(session, keyed)
    url = keyed.url + f"/api/stages/{stage}"
    async with session.get(url + "/recordings", headers=auth(token(stage, grants=["record"]))) as response:
        await problem(response, 403, "missing_grant")
    async with session.post(url + "/end", headers=auth(token(stage, grants=["moderate"]))) as response:
        await problem(response, 403, "missing_grant")


async def test_a_former_host_rejoining_with_an_audience_token_is_audience(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = await new_stage(session, keyed)
    identity = new_id("id")
    host, _ = await joined(session, keyed, stage, token(stage, "host", identity))
    assert (await host.request({"type": "leave", "id": "bye"}))["type"] == "left"
    assert await close_code(host) == 1000
    _, reply = await joined(session, keyed, stage, token(stage, "audience", identity))
    assert reply["participant"]["role"] == "audience"


# --- revocation and bans --------------------------------------------------------------------------


async def test_a_revoked_identity_is_refused_and_its_open_socket_closed(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage, elsewhere = await new_stage(session, keyed), await new_stage(session, keyed)
    identity = new_id("id")
    victim, _ = await joined(session, keyed, stage, token(stage, "audience", identity))
    bystander, _ = await joined(session, keyed, stage, token(stage, "audience"))
    url = keyed.url + f"/api/identities/{identity}/revoke"
    async with session.post(url) as response:
        await problem(response, 401, "token_missing")
    async with session.post(url, headers=auth(token(stage, "host"))) as response:
        await problem(response, 403, "admin_required")

    async with session.post(url, headers=auth(admin())) as response:
        assert response.status == 200
        assert await response.json() == {"identity": identity, "revoked": True, "disconnected": 1}
    assert await close_code(victim) == 4403
    await bystander.recv_type("participant.left")

    for where in (stage, elsewhere):  # a brand-new token does not help, on any stage
        await refused_join(session, keyed, where, token(where, "host", identity), "identity_revoked", 4403)


async def test_a_revoked_identity_is_refused_over_http_too(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage, identity = await new_stage(session, keyed), new_id("id")
    revoke = keyed.url + f"/api/identities/{identity}/revoke"
    async with session.post(revoke, headers=auth(admin())) as response:
        assert response.status == 200
    tok = token(stage, "host", identity)
    async with session.get(keyed.url + f"/api/stages/{stage}", headers=auth(tok)) as response:
        await problem(response, 403, "identity_revoked")


async def test_a_banned_identity_is_refused_with_a_brand_new_token(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage, elsewhere = await new_stage(session, keyed), await new_stage(session, keyed)
    identity = new_id("id")
    mod, _ = await joined(session, keyed, stage, token(stage, "moderator"))
    victim, reply = await joined(session, keyed, stage, token(stage, "audience", identity, name="Dr Troll"))
    ban = {"type": "moderation.ban", "id": "ban", "participant_id": reply["participant"]["id"]}
    assert (await mod.request(ban))["type"] == "ok"
    removed = await victim.recv_type("participant.removed")
    assert removed["banned"] is True
    assert await close_code(victim) == 4004
    await mod.sync()

    # A fresh token, signed with the other key, asking for more: refused with `banned`, and the socket
    # stays open (not joined) rather than being closed: the ban is the stage's, not the token's.
    fresh = token(stage, "host", identity, name="Dr Innocent", keys=K2)
    sock = await connect(session, keyed)
    reply = await sock.request({"type": "join", "id": "again", "stage": stage, "token": fresh})
    assert reply["type"] == "error" and reply["code"] == "banned", reply
    await sock.assert_usable_and_quiet()
    reply = await sock.request({"type": "comment.post", "id": "c", "text": "let me in"})
    assert reply["code"] == "not_joined", reply
    assert await mod.sync() == [], "the stage hears nothing of it"

    # The ban is this stage's: nothing leaks to another stage.
    await joined(session, keyed, elsewhere, token(elsewhere, "audience", identity))


# --- HTTP -----------------------------------------------------------------------------------------


async def test_creating_a_stage_needs_a_platform_token(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    url = keyed.url + "/api/stages"
    async with session.post(url, json={}) as response:
        await problem(response, 401, "token_missing")
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    async with session.post(url, json={}, headers={"Authorization": "Basic cGxhdGZvcm06"}) as response:
        await problem(response, 401, "token_missing")
    async with session.post(url, json={}, headers=auth(DEV.mint("platform", admin=True))) as response:
        await problem(response, 401, "token_invalid")
    expired = Authenticator(K1, lambda: time.time() - 3600).mint("platform", admin=True, ttl_s=60)
    async with session.post(url, json={}, headers=auth(expired)) as response:
        await problem(response, 401, "token_expired")
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    async with session.post(url, json={}, headers=auth(token("any", "host"))) as response:
        await problem(response, 403, "admin_required")
    async with session.post(url, json={"title": "Grand rounds"}, headers=auth(admin(K2))) as response:
        assert response.status == 201
        assert (await response.json())["title"] == "Grand rounds"


async def test_listing_stages_needs_a_platform_token(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage = await new_stage(session, keyed)
    async with session.get(keyed.url + "/api/stages", headers=auth(token(stage, "host"))) as response:
        await problem(response, 403, "admin_required")
    async with session.get(keyed.url + "/api/stages", headers=auth(admin())) as response:
        assert response.status == 200
        assert stage in [s["id"] for s in (await response.json())["stages"]]


async def test_a_stage_and_its_participants_are_read_with_a_token_for_that_stage(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage, other = await new_stage(session, keyed), await new_stage(session, keyed)
    await joined(session, keyed, stage, token(stage, "audience"))
    for path in (f"/api/stages/{stage}", f"/api/stages/{stage}/participants"):
        async with session.get(keyed.url + path) as response:
            await problem(response, 401, "token_missing")
        async with session.get(keyed.url + path, headers=auth(token(other, "host"))) as response:
            await problem(response, 403, "token_wrong_stage")
        async with session.get(keyed.url + path, headers=auth(token(stage))) as response:
            assert response.status == 200
    async with session.get(keyed.url + f"/api/stages/{stage}?access_token={token(stage)}") as response:
        assert response.status == 200
    # Identities are for moderators only.
    path = keyed.url + f"/api/stages/{stage}/participants"
    async with session.get(path, headers=auth(token(stage, "audience"))) as response:
        assert all("identity" not in p for p in (await response.json())["participants"])
    async with session.get(path, headers=auth(token(stage, "moderator"))) as response:
        people = (await response.json())["participants"]
    assert people and all(p["identity"] for p in people)


async def test_ending_a_stage_over_http_needs_the_moderate_grant_for_that_stage(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage, other = await new_stage(session, keyed), await new_stage(session, keyed)
    viewer, _ = await joined(session, keyed, stage, token(stage, "audience"))
    url = keyed.url + f"/api/stages/{stage}/end"
    async with session.post(url, headers=auth(token(stage, "audience"))) as response:
        await problem(response, 403, "missing_grant")
    async with session.post(url, headers=auth(token(other, "host"))) as response:
        await problem(response, 403, "token_wrong_stage")
    async with session.post(url, headers=auth(token(stage, "host"))) as response:
        assert response.status == 200
        assert (await response.json())["state"] == "ended"
    assert await close_code(viewer) == 1000


async def test_recordings_need_the_record_grant_for_that_stage(
    keyed: RunningNode, session: aiohttp.ClientSession
) -> None:
    stage, other = await new_stage(session, keyed), await new_stage(session, keyed)
    url = keyed.url + f"/api/stages/{stage}/recordings"
    async with session.get(url) as response:
        await problem(response, 401, "token_missing")
    for role in ("audience", "speaker"):
        async with session.get(url, headers=auth(token(stage, role))) as response:
            await problem(response, 403, "missing_grant")
    async with session.get(url, headers=auth(token(other, "host"))) as response:
        await problem(response, 403, "token_wrong_stage")
    for tok in (token(stage, "host"), token(stage, "moderator"), admin()):
        async with session.get(url, headers=auth(tok)) as response:
            assert response.status == 200
            assert await response.json() == {"stage_id": stage, "sessions": []}


async def test_development_tokens_are_handed_out_in_development_mode_only(
    keyed: RunningNode, dev: RunningNode, session: aiohttp.ClientSession
) -> None:
    async with session.post(keyed.url + "/api/dev/token", json={"admin": True}) as response:
        await problem(response, 403, "dev_mode_off")
    stage = new_id()
    body = {"stage": stage, "role": "host", "name": "Dr Dev", "identity": "dev-1"}
    async with session.post(dev.url + "/api/dev/token", json=body) as response:
        assert response.status == 200
        handed = await response.json()
    assert handed["identity"] == "dev-1"
    _, reply = await joined(session, dev, stage, handed["token"])  # a host creates the stage by joining
    assert reply["participant"]["role"] == "host" and reply["participant"]["name"] == "Dr Dev"
    # The development key means nothing to a node with keys.
    keyed_stage = await new_stage(session, keyed)
    dev_token = mint_token(keyed_stage, "host")
    await refused_join(session, keyed, keyed_stage, dev_token, "token_invalid", 4401)
    # Even in development mode, every /api call needs a token.
    async with session.post(dev.url + "/api/stages", json={}) as response:
        await problem(response, 401, "token_missing")


# --- the CLI --------------------------------------------------------------------------------------


def cli_env(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEDSTAGE_")}
    return {**base, **env}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "token", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_the_cli_mints_tokens_the_node_accepts(
    keyed: RunningNode, dev: RunningNode, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    stage = await new_stage(session, keyed)
    args = ["--identity", "cli-1", "--stage", stage, "--role", "host", "--name", "Dr CLI", "--ttl", "600"]
    done = cli(*args, env=cli_env(MEDSTAGE_API_KEYS=API_KEYS))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.endswith("\n")
    tok = done.stdout.strip()
    assert jwt.get_unverified_header(tok)["kid"] == "k1", "the first configured key signs"
    _, reply = await joined(session, keyed, stage, tok)
    assert reply["participant"]["role"] == "host" and reply["participant"]["name"] == "Dr CLI"

    # Keys from a --config file (a TOML table); grants narrow the role.
    config = tmp_path / "node.toml"
    config.write_text(f'[api_keys]\nk2 = "{KEYS["k2"]}"\n')
    stage = await new_stage(session, keyed)
    args = ["--identity", "cli-2", "--stage", stage, "--role", "host", "--grant", "subscribe"]
    done = cli(*args, "--grant", "comment", "--config", str(config), env=cli_env())
    assert done.returncode == 0, done.stderr
    tok = done.stdout.strip()
    claims = jwt.decode(tok, KEYS["k2"], algorithms=["HS256"])
    assert claims["grants"] == ["comment", "subscribe"] and claims["exp"] - claims["iat"] == 3600
    host, reply = await joined(session, keyed, stage, tok)
    assert reply["participant"]["role"] == "host"
    reply = await host.request({"type": "stage.lock", "id": "l", "locked": True})
    assert reply["code"] == "not_allowed", reply

    # A person-level token: the identity alone, for the person's own data (docs/protocol.md, People).
    done = cli("--identity", "cli-3", "--person", "--config", str(config), env=cli_env())
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), KEYS["k2"], algorithms=["HS256"])
    assert claims["sub"] == "cli-3" and not {"stage", "club", "role", "admin"} & set(claims)

    # Without keys: the development key, and a warning on stderr.
    done = cli("--identity", "platform", "--admin", env=cli_env())
    assert done.returncode == 0 and "development key" in done.stderr
    tok = done.stdout.strip()
    async with session.post(dev.url + "/api/stages", json={}, headers=auth(tok)) as response:
        assert response.status == 201
    async with session.post(keyed.url + "/api/stages", json={}, headers=auth(tok)) as response:
        await problem(response, 401, "token_invalid")


BAD_ARGUMENTS = {
    "no-identity": (["--stage", "s"], "--identity"),
    "stage-and-club": (["--identity", "a", "--stage", "s", "--club", "c"], "not allowed with"),
    "no-stage-club-or-admin": (["--identity", "a"], "--stage, --club, --person or --admin"),
    "person-and-stage": (["--identity", "a", "--person", "--stage", "s"], "not allowed with"),
    "unknown-role": (["--identity", "a", "--stage", "s", "--role", "king"], "--role"),
    "unknown-grant": (["--identity", "a", "--stage", "s", "--grant", "fly"], "--grant"),
    "zero-ttl": (["--identity", "a", "--stage", "s", "--ttl", "0"], "--ttl"),
    "ttl-not-a-number": (["--identity", "a", "--stage", "s", "--ttl", "soon"], "--ttl"),
    "bad-stage-id": (["--identity", "a", "--stage", "no spaces"], "--stage"),
    "short-secret": (["--identity", "a", "--stage", "s", "--config", "{short}"], "32+ characters"),
    "missing-config": (["--identity", "a", "--stage", "s", "--config", "/nonexistent.toml"], "config"),
    # Not UTF-8 (the byte 0xff): Python hands it over as a lone surrogate, which no node would accept.
    "name-not-utf8": (["--identity", "a", "--stage", "s", "--name", "Dr \udcff"], "--name"),
    "identity-not-utf8": (["--identity", "a\udcff", "--stage", "s"], "--identity"),
}


def test_the_cli_refuses_bad_arguments_with_exit_2(tmp_path: Path) -> None:
    short = tmp_path / "short.toml"
    short.write_text('[api_keys]\nk1 = "too-short"\n')
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "server", "token", *(a.format(short=short) for a in args)],
            cwd=ROOT,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in BAD_ARGUMENTS.items()
    }
    for name, proc in procs.items():  # started together: each pays Python's start-up, not in turn
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 2, (name, proc.returncode, err)
        assert out == "", (name, out)
        assert BAD_ARGUMENTS[name][1] in err, (name, err)


# --- several nodes: the ban and the revocation hold after the stage moves -------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RunningNode, RunningNode]]:
    redis = RedisServer(tmp_path)
    redis.start()
    env = {
        "MEDSTAGE_API_KEYS": API_KEYS,
        "MEDSTAGE_REDIS_URL": redis.url,
        "MEDSTAGE_LEASE_TTL_MS": "1000",
        "MEDSTAGE_HEARTBEAT_INTERVAL_MS": "200",
    }
    nodes: list[RunningNode] = []
    try:
        nodes += [start_node(tmp_path, env), start_node(tmp_path, env)]
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


async def join_after_takeover(session: aiohttp.ClientSession, node: RunningNode, stage: str, tok: str) -> Any:
    """Join through ``node`` until the stage is hosted again (refusals with retry_after meanwhile)."""
    async with asyncio.timeout(15):
        while True:
            sock = await connect(session, node)
            try:
                reply = await sock.request({"type": "join", "id": "join", "stage": stage, "token": tok})
            except AssertionError:  # closed 1012: the relay to the dead node went away
                reply = {"code": "stage_unavailable", "retry_after": 0.2}
            if reply.get("code") != "stage_unavailable":
                return reply
            await sock.ws.close()
            await asyncio.sleep(reply.get("retry_after", 0.2))


async def test_a_ban_and_a_revocation_hold_after_the_stage_moves_to_another_node(
    cluster: tuple[RunningNode, RunningNode], session: aiohttp.ClientSession
) -> None:
    a, b = cluster
    stage = await new_stage(session, a)
    banned, revoked = new_id("banned"), new_id("revoked")
    mod, _ = await joined(session, a, stage, token(stage, "moderator"))
    _, victim = await joined(session, b, stage, token(stage, "audience", banned))
    ban = {"type": "moderation.ban", "id": "ban", "participant_id": victim["participant"]["id"]}
    assert (await mod.request(ban))["type"] == "ok"
    async with session.post(b.url + f"/api/identities/{revoked}/revoke", headers=auth(admin(K2))) as response:
        assert response.status == 200
    await refused_join(session, a, stage, token(stage, "audience", revoked), "identity_revoked", 4403)
    await asyncio.sleep(0.6)  # the durable state (bans included) is saved at most every 250 ms

    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    reply = await join_after_takeover(session, b, stage, token(stage, "host", banned))
    assert reply["type"] == "error" and reply["code"] == "banned", reply
    await refused_join(session, b, stage, token(stage, "audience", revoked), "identity_revoked", 4403)
    _, ok = await joined(session, b, stage, token(stage, "audience"))
    assert ok["stage"]["id"] == stage, "the stage itself is hosted again"


async def test_revoking_through_any_node_closes_the_identity_s_sockets(
    cluster: tuple[RunningNode, RunningNode], session: aiohttp.ClientSession
) -> None:
    a, b = cluster
    stage = await new_stage(session, a)
    identity = new_id("revoked")
    sock, _ = await joined(session, a, stage, token(stage, "audience", identity))
    async with session.post(b.url + f"/api/identities/{identity}/revoke", headers=auth(admin())) as response:
        assert response.status == 200
    assert await close_code(sock, timeout=3) == 4403
