"""Clubs on the wire (issue 6): joining a club's stage by its link makes you a member; a private club
admits only holders of an invite; club admins see the members and who is in each stage. Real node."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningNode
from tests.support.tokens import bearer, token
from tests.support.ws import Socket


@pytest.fixture
def node(module_node: RunningNode) -> RunningNode:
    return module_node


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def api(session: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> tuple[int, Any]:
    async with session.request(method, url, json=body, headers=bearer()) as response:
        return response.status, await response.json(content_type=None)


async def club_with_stage(
    session: aiohttp.ClientSession, node: RunningNode, private: bool
) -> tuple[str, str]:
    club, stage = "club-" + uuid.uuid4().hex[:8], "cs-" + uuid.uuid4().hex[:8]
    status, _ = await api(
        session, "POST", node.url + "/api/clubs", {"id": club, "name": "Cardio", "private": private}
    )
    assert status == 201
    status, body = await api(session, "POST", node.url + "/api/stages", {"id": stage, "club": club})
    assert status == 201 and body["club_id"] == club, body
    return club, stage


async def join(
    session: aiohttp.ClientSession, node: RunningNode, stage: str, identity: str, invite: str | None = None
) -> tuple[Socket, dict[str, Any]]:
    sock = Socket(await session.ws_connect(node.ws_url))
    message: dict[str, Any] = {
        "type": "join",
        "id": "j",
        "stage": stage,
        "token": token(stage, "audience", identity),
    }
    if invite:
        message["invite"] = invite
    return sock, await sock.request(message)


async def members(session: aiohttp.ClientSession, node: RunningNode, club: str) -> dict[str, Any]:
    status, body = await api(session, "GET", node.url + f"/api/clubs/{club}/members")
    assert status == 200, body
    return {m["identity"]: m for m in body["members"]}


async def test_joining_a_public_clubs_stage_by_its_link_makes_you_a_member(
    node: RunningNode, session: aiohttp.ClientSession
) -> None:
    club, stage = await club_with_stage(session, node, private=False)
    _, reply = await join(session, node, stage, "dr-public")
    assert reply["type"] == "joined", reply
    member = (await members(session, node, club))["dr-public"]
    assert member["role"] == "member" and member["via"] == "link"


async def test_a_private_club_admits_only_invite_holders_and_they_become_members(
    node: RunningNode, session: aiohttp.ClientSession
) -> None:
    club, stage = await club_with_stage(session, node, private=True)
    _, reply = await join(session, node, stage, "dr-uninvited")
    assert reply["type"] == "error" and reply["code"] == "club_private", reply
    _, reply = await join(session, node, stage, "dr-forged", invite="not-a-real-code")
    assert reply["type"] == "error" and reply["code"] == "invite_invalid", reply
    status, invite = await api(session, "POST", node.url + f"/api/clubs/{club}/invites", {"max_uses": 1})
    assert status == 201, invite
    assert invite["invite_url"].endswith(invite["code"])
    _, reply = await join(session, node, stage, "dr-invited", invite=invite["code"])
    assert reply["type"] == "joined", reply
    _, reply = await join(session, node, stage, "dr-second", invite=invite["code"])  # max_uses 1
    assert reply["type"] == "error" and reply["code"] == "invite_invalid", reply
    listed = await members(session, node, club)
    assert listed["dr-invited"]["via"] == "invite" and "dr-uninvited" not in listed
    # A member comes back without the invite.
    _, reply = await join(session, node, stage, "dr-invited")
    assert reply["type"] == "joined", reply
    # Club admins see who is in each of the club's stages (here: hosted by this node).
    status, stages = await api(session, "GET", node.url + f"/api/clubs/{club}/stages")
    assert status == 200, stages
    (only,) = [s for s in stages["stages"] if s["id"] == stage]
    assert {p["identity"] for p in only["participants"]} >= {"dr-invited"}


async def test_a_stage_of_a_club_that_does_not_exist_is_refused(
    node: RunningNode, session: aiohttp.ClientSession
) -> None:
    status, body = await api(session, "POST", node.url + "/api/stages", {"club": "no-such-club"})
    assert status == 404 and body["code"] == "club_not_found", body
