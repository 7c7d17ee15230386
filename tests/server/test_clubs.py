"""Clubs through real HTTP on 127.0.0.1 (aiohttp's test server): the platform creates clubs, club
admins run them, everyone else is refused with a problem document; ``ClubStore`` read-modify-writes
under concurrency on memory and on a real redis-server; the join hook; ``OPENAPI_PATHS``.

The app is the node's own (``server.app.create_app``: its middleware, its Node, its authentication
and revocations); people enter a club by joining one of its stages through the node's WebSocket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from rooms.clubs import Club, ClubNotFound, InviteInvalid, Member
from server.api import openapi
from server.api.clubs import (
    OPENAPI_PATHS,
    ClubList,
    ClubStages,
    ClubView,
    InviteList,
    InviteView,
    MemberList,
    routes,
)
from server.app import create_app
from server.auth import Authenticator, Forbidden
from server.backend import Backend, Conflict, MemoryBackend, RedisBackend
from server.config import Config
from server.host.clubs import ClubStore
from server.host.node import Node
from tests.support.redis_server import RedisServer, running_redis
from tests.support.tokens import DEV, admin_token, bearer, signed, token
from tests.support.ws import Socket

CLUB = "cardio"
OTHER = "neuro"
ADMIN_ID = "id-club-admin"


# --- the app ------------------------------------------------------------------------------------


@dataclass
class Api:
    """The node's own app (``server.app.create_app``: its middleware, its Node, its auth), served on
    127.0.0.1; people join the clubs' stages through its WebSocket, as a link does."""

    client: TestClient[web.Request, web.Application]
    node: Node

    @property
    def backend(self) -> Backend:
        return self.node.cluster.backend

    async def call(
        self, method: str, path: str, tok: str | None = None, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, Any]:
        """(status, JSON body or None); checked against OPENAPI_PATHS (status and body schema)."""
        headers = bearer(tok) if tok is not None else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.client.request(method, path, **kwargs) as response:
            data = await response.json(content_type=None) if response.status != 204 else None
            check_documented(method, path, response.status, response.content_type, data)
            if response.status >= 400:
                assert response.content_type == "application/problem+json"
            return response.status, data

    async def refused(
        self, method: str, path: str, tok: str | None, status: int, code: str, body: Any = None
    ) -> Any:
        got, data = await self.call(method, path, tok, body)
        assert (got, data["code"]) == (status, code), data
        return data

    async def club_stage(self, club_id: str) -> str:
        """A live stage of the club (created once, over the HTTP API): where its people join."""
        stage = f"{club_id}-rounds"
        if stage not in self.node.stages:
            body = {"id": stage, "title": f"{club_id.title()} rounds", "club": club_id}
            async with self.client.post("/api/stages", json=body, headers=bearer(PLATFORM)) as response:
                assert response.status == 201, await response.text()
        return stage

    async def join(
        self, club_id: str, identity: str, name: str, invite: str | None = None, role: str = "audience"
    ) -> dict[str, Any]:
        """The reply to a ``join`` of the club's stage with a token for that stage (and the link's invite)."""
        stage = await self.club_stage(club_id)
        message: dict[str, Any] = {
            "type": "join", "id": "j", "stage": stage, "name": name, "role": role, "identity": identity
        }  # fmt: skip
        if invite is not None:
            message["invite"] = invite
        async with self.client.ws_connect("/ws") as ws:
            return await Socket(ws).request(signed(message))

    async def admitted(
        self, club_id: str, identity: str, name: str, invite: str | None = None
    ) -> dict[str, Any]:
        """Join the club's stage; the member the club now lists for ``identity``."""
        reply = await self.join(club_id, identity, name, invite)
        assert reply["type"] == "joined", reply
        _, listed = await self.call("GET", f"/api/clubs/{club_id}/members", PLATFORM)
        member: dict[str, Any] = next(m for m in listed["members"] if m["identity"] == identity)
        return member

    async def refused_join(
        self, club_id: str, identity: str, name: str, code: str, invite: str | None = None
    ) -> None:
        reply = await self.join(club_id, identity, name, invite)
        assert (reply["type"], reply.get("code")) == ("error", code), reply


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    config = Config(
        ice_addresses=["127.0.0.1"], recordings_dir=str(tmp_path / "recordings"), recording_mode="off"
    )
    app = create_app(config)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Api(client, app["node"])


PLATFORM = admin_token()


def club_admin(club: str = CLUB, identity: str = ADMIN_ID) -> str:
    return token(None, None, identity, "Dr Admin", club=club)


async def make_club(api: Api, club_id: str = CLUB, private: bool = True, admin: str = ADMIN_ID) -> None:
    status, _ = await api.call(
        "POST", "/api/clubs", PLATFORM, {"id": club_id, "name": club_id.title(), "private": private}
    )
    assert status == 201
    status, _ = await api.call("PUT", f"/api/clubs/{club_id}/members/{admin}", PLATFORM, {"role": "admin"})
    assert status == 201


# --- the document -------------------------------------------------------------------------------

DOC = openapi.document(OPENAPI_PATHS)


def _template(path: str) -> tuple[str, dict[str, Any]]:
    """The documented path template that ``path`` matches, and its operations."""
    parts = path.split("?")[0].split("/")
    for template, item in OPENAPI_PATHS.items():
        tparts = template.split("/")
        if len(tparts) == len(parts) and all(
            t == p or t.startswith("{") for t, p in zip(tparts, parts, strict=True)
        ):
            return template, item
    raise AssertionError(f"{path} is not documented")


def check_documented(method: str, path: str, status: int, content_type: str, body: Any) -> None:
    """The answer is one the document lists, and its body matches the listed schema."""
    _, item = _template(path)
    responses = item[method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path}: {status} is not documented"
    response = responses[str(status)]
    if "$ref" in response:
        response = DOC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    if body is None:
        assert "content" not in response
        return
    schema = response["content"][content_type]["schema"]
    jsonschema.validate(body, {**schema, "components": DOC["components"]})


def test_the_club_paths_make_a_valid_openapi_document_with_the_nodes() -> None:
    validate(DOC)
    documented = {(path, method.upper()) for path, item in OPENAPI_PATHS.items() for method in item}
    served = {(r.path, r.method) for r in routes()}
    assert documented == served


# --- creating clubs -----------------------------------------------------------------------------


async def test_the_platform_creates_public_and_private_clubs_and_lists_them(api: Api) -> None:
    status, made = await api.call(
        "POST", "/api/clubs", PLATFORM, {"id": CLUB, "name": "Cardiology", "private": True}
    )
    assert status == 201
    view = msgspec.convert(made, ClubView)
    assert (view.id, view.name, view.private, view.members, view.invites) == (CLUB, "Cardiology", True, 0, 0)
    status, made = await api.call("POST", "/api/clubs", PLATFORM, {"name": "Open rounds"})
    assert status == 201 and made["private"] is False and made["id"].startswith("club-")
    status, listed = await api.call("GET", "/api/clubs", PLATFORM)
    assert status == 200
    assert sorted(c.id for c in msgspec.convert(listed, ClubList).clubs) == sorted([CLUB, made["id"]])


async def test_a_club_id_in_use_is_refused(api: Api) -> None:
    await make_club(api)
    await api.refused("POST", "/api/clubs", PLATFORM, 409, "club_exists", {"id": CLUB, "name": "Again"})


@pytest.mark.parametrize(
    "body",
    [
        {"id": CLUB},  # no name
        {"name": ""},
        {"name": "x" * 201},
        {"id": "a b", "name": "Spaces"},
        {"name": "Typo", "privat": True},  # an unknown field is refused: a typo must not make it public
        {"name": "Private?", "private": "yes"},
        [1, 2],
    ],
)
async def test_an_invalid_club_is_refused_400(api: Api, body: Any) -> None:
    await api.refused("POST", "/api/clubs", PLATFORM, 400, "invalid_body", body)


async def test_a_body_that_is_not_json_is_refused_400(api: Api) -> None:
    status, data = await api.call("POST", "/api/clubs", PLATFORM, raw=b"{not json")
    assert (status, data["code"]) == (400, "invalid_body")


async def test_only_the_platform_creates_and_lists_clubs(api: Api) -> None:
    await make_club(api)
    await api.refused("POST", "/api/clubs", club_admin(), 403, "admin_required", {"name": "Mine"})
    await api.refused("GET", "/api/clubs", club_admin(), 403, "admin_required")


# --- who may call what --------------------------------------------------------------------------

ADMIN_CALLS: list[tuple[str, str, Any]] = [
    ("GET", "/api/clubs/{club}", None),
    ("GET", "/api/clubs/{club}/members", None),
    ("PUT", "/api/clubs/{club}/members/id-x", {"role": "member"}),
    ("DELETE", "/api/clubs/{club}/members/id-x", None),
    ("GET", "/api/clubs/{club}/invites", None),
    ("POST", "/api/clubs/{club}/invites", {}),
    ("DELETE", "/api/clubs/{club}/invites/some-code", None),
    ("GET", "/api/clubs/{club}/stages", None),
]
EVERY_CALL = [*ADMIN_CALLS, ("POST", "/api/clubs", {"name": "X"}), ("GET", "/api/clubs", None)]


async def test_every_club_call_without_a_valid_token_is_401(api: Api) -> None:
    await make_club(api)
    expired = Authenticator({}, clock=lambda: time.time() - 3600).mint(ADMIN_ID, club=CLUB, ttl_s=60)
    for method, path, body in EVERY_CALL:
        path = path.format(club=CLUB)
        await api.refused(method, path, None, 401, "token_missing", body)
        await api.refused(method, path, "not-a-jwt", 401, "token_invalid", body)
        forged = Authenticator({"other": "s" * 32}).mint("platform", admin=True)
        await api.refused(method, path, forged, 401, "token_invalid", body)
    await api.refused("GET", f"/api/clubs/{CLUB}", expired, 401, "token_expired")


async def test_a_members_token_is_refused_403_on_every_admin_call(api: Api) -> None:
    await make_club(api)
    await api.call("PUT", f"/api/clubs/{CLUB}/members/id-alice", PLATFORM, {"name": "Alice"})
    stage = await api.club_stage(CLUB)
    member = token(None, None, "id-alice", "Alice", club=CLUB)
    for method, path, body in ADMIN_CALLS:
        refused = await api.refused(method, path.format(club=CLUB), member, 403, "club_admin_required", body)
        assert stage not in str(refused), "nothing about the club's stages is told"


async def test_another_clubs_admin_is_refused_403_and_learns_nothing(api: Api) -> None:
    await make_club(api)
    await make_club(api, OTHER, admin="id-neuro-admin")
    theirs = club_admin(OTHER, "id-neuro-admin")
    for method, path, body in ADMIN_CALLS:
        await api.refused(method, path.format(club=CLUB), theirs, 403, "club_admin_required", body)
        # the same answer for a club that does not exist: no probing other clubs' ids
        await api.refused(method, path.format(club="no-such-club"), theirs, 403, "club_admin_required", body)


async def test_an_admin_of_a_club_with_another_clubs_token_is_refused(api: Api) -> None:
    """Admin of both clubs, but this token names the other club: a token opens one club."""
    await make_club(api)
    await make_club(api, OTHER)
    await api.refused("GET", f"/api/clubs/{CLUB}/members", club_admin(OTHER), 403, "club_admin_required")


async def test_stage_tokens_and_hosts_are_not_club_admins(api: Api) -> None:
    await make_club(api)
    host = token("some-stage", "host", ADMIN_ID)  # the club admin's identity, but a stage token
    await api.refused("GET", f"/api/clubs/{CLUB}", host, 403, "club_admin_required")


async def test_a_revoked_club_admin_is_refused(api: Api) -> None:
    await make_club(api)
    async with api.client.post(f"/api/identities/{ADMIN_ID}/revoke", headers=bearer(PLATFORM)) as response:
        assert response.status == 200, await response.text()
    await api.refused("GET", f"/api/clubs/{CLUB}", club_admin(), 403, "identity_revoked")
    await api.refused_join(CLUB, ADMIN_ID, "Dr Admin", "identity_revoked")


async def test_an_unknown_club_is_404(api: Api) -> None:
    for method, path, body in ADMIN_CALLS:
        await api.refused(method, path.format(club="no-such-club"), PLATFORM, 404, "club_not_found", body)
        await api.refused(
            method, path.format(club="no-such-club"), club_admin("no-such-club"), 404, "club_not_found", body
        )


# --- members ------------------------------------------------------------------------------------


async def test_a_club_admin_adds_promotes_lists_and_removes_members(api: Api) -> None:
    await make_club(api)
    admin = club_admin()
    status, added = await api.call("PUT", f"/api/clubs/{CLUB}/members/id-alice", admin, {"name": "Alice"})
    assert status == 201
    assert (added["identity"], added["name"], added["role"], added["via"]) == (
        "id-alice",
        "Alice",
        "member",
        "added",
    )
    status, changed = await api.call("PUT", f"/api/clubs/{CLUB}/members/id-alice", admin, {"role": "admin"})
    assert status == 200 and changed["role"] == "admin" and changed["name"] == "Alice"
    status, _ = await api.call("PUT", f"/api/clubs/{CLUB}/members/id-bob", admin)
    assert status == 201

    status, listed = await api.call("GET", f"/api/clubs/{CLUB}/members", admin)
    members = {m.identity: m for m in msgspec.convert(listed, MemberList).members}
    assert set(members) == {ADMIN_ID, "id-alice", "id-bob"}
    assert members["id-bob"].name == "id-bob", "without a name, a member is shown by identity"

    status, _ = await api.call("DELETE", f"/api/clubs/{CLUB}/members/id-bob", admin)
    assert status == 204
    await api.refused("DELETE", f"/api/clubs/{CLUB}/members/id-bob", admin, 404, "member_not_found")
    status, view = await api.call("GET", f"/api/clubs/{CLUB}", admin)
    assert (view["members"], view["admins"]) == (2, 2)


async def test_the_last_admin_cannot_be_removed_or_demoted(api: Api) -> None:
    await make_club(api)
    await api.refused("DELETE", f"/api/clubs/{CLUB}/members/{ADMIN_ID}", club_admin(), 409, "last_admin")
    await api.refused(
        "PUT", f"/api/clubs/{CLUB}/members/{ADMIN_ID}", PLATFORM, 409, "last_admin", {"role": "member"}
    )


@pytest.mark.parametrize("body", [{"role": "owner"}, {"name": ""}, {"role": "admin", "extra": 1}])
async def test_an_invalid_member_is_refused_400(api: Api, body: Any) -> None:
    await make_club(api)
    await api.refused("PUT", f"/api/clubs/{CLUB}/members/id-alice", club_admin(), 400, "invalid_body", body)


async def test_an_identity_longer_than_a_tokens_is_refused_400(api: Api) -> None:
    await make_club(api)
    await api.refused("PUT", f"/api/clubs/{CLUB}/members/{'x' * 129}", club_admin(), 400, "invalid_message")


async def test_people_who_join_by_the_link_are_members_visible_to_club_admins(api: Api) -> None:
    await make_club(api, private=False)
    await api.admitted(CLUB, "id-walk-in", "Walk-in")
    status, listed = await api.call("GET", f"/api/clubs/{CLUB}/members", club_admin())
    assert status == 200
    walk_in = next(m for m in listed["members"] if m["identity"] == "id-walk-in")
    assert (walk_in["name"], walk_in["via"], walk_in["role"]) == ("Walk-in", "link", "member")


# --- invites ------------------------------------------------------------------------------------


async def test_an_invite_from_the_api_admits_a_stranger_to_a_private_club(api: Api) -> None:
    await make_club(api)
    admin = club_admin()
    await api.refused_join(CLUB, "id-guest", "Guest", "club_private")
    status, made = await api.call("POST", f"/api/clubs/{CLUB}/invites", admin, {"ttl_s": 3600, "max_uses": 1})
    assert status == 201
    invite = msgspec.convert(made, InviteView)
    assert invite.created_by == ADMIN_ID and invite.max_uses == 1 and invite.uses == 0
    assert invite.expires_at is not None and abs(invite.expires_at - (invite.created_at + 3600)) < 1e-6
    assert invite.invite_url == f"/s/{{stage}}?invite={invite.code}"
    assert len(invite.code) >= 16, "a random code that cannot be guessed"

    member = await api.admitted(CLUB, "id-guest", "Guest", invite.code)
    assert member["via"] == "invite"
    await api.refused_join(CLUB, "id-second", "Second", "invite_invalid", invite.code)
    status, listed = await api.call("GET", f"/api/clubs/{CLUB}/invites", admin)
    assert [i.uses for i in msgspec.convert(listed, InviteList).invites] == [1]


async def test_a_revoked_invite_admits_nobody(api: Api) -> None:
    await make_club(api)
    admin = club_admin()
    _, made = await api.call("POST", f"/api/clubs/{CLUB}/invites", admin)
    assert made["expires_at"] is None and made["max_uses"] is None
    status, _ = await api.call("DELETE", f"/api/clubs/{CLUB}/invites/{made['code']}", admin)
    assert status == 204
    await api.refused_join(CLUB, "id-guest", "Guest", "invite_invalid", made["code"])
    await api.refused("DELETE", f"/api/clubs/{CLUB}/invites/{made['code']}", admin, 404, "invite_not_found")
    _, listed = await api.call("GET", f"/api/clubs/{CLUB}/invites", admin)
    assert listed["invites"] == []


async def test_an_invite_of_one_club_admits_nobody_to_another(api: Api) -> None:
    await make_club(api)
    await make_club(api, OTHER)
    _, made = await api.call("POST", f"/api/clubs/{CLUB}/invites", club_admin())
    await api.refused_join(OTHER, "id-guest", "Guest", "invite_invalid", made["code"])
    await api.refused(
        "DELETE", f"/api/clubs/{OTHER}/invites/{made['code']}", PLATFORM, 404, "invite_not_found"
    )


@pytest.mark.parametrize("body", [{"ttl_s": 0}, {"max_uses": 0}, {"ttl_s": "soon"}, {"uses": 3}])
async def test_an_invalid_invite_is_refused_400(api: Api, body: Any) -> None:
    await make_club(api)
    await api.refused("POST", f"/api/clubs/{CLUB}/invites", club_admin(), 400, "invalid_body", body)


async def test_a_removed_member_needs_a_new_invite_to_come_back(api: Api) -> None:
    await make_club(api)
    admin = club_admin()
    _, old = await api.call("POST", f"/api/clubs/{CLUB}/invites", admin)
    await api.admitted(CLUB, "id-alice", "Alice", old["code"])
    await api.call("DELETE", f"/api/clubs/{CLUB}/members/id-alice", admin)
    await api.refused_join(CLUB, "id-alice", "Alice", "invite_invalid", old["code"])
    _, new = await api.call("POST", f"/api/clubs/{CLUB}/invites", admin)
    assert (await api.admitted(CLUB, "id-alice", "Alice", new["code"]))["via"] == "invite"


# --- stages -------------------------------------------------------------------------------------


async def test_club_admins_see_who_is_in_each_of_the_clubs_stages(api: Api) -> None:
    await make_club(api, private=False)
    await make_club(api, OTHER, private=False)
    async with api.client.post("/api/stages", json={"id": "no-club"}, headers=bearer(PLATFORM)) as response:
        assert response.status == 201
    stage = await api.club_stage(CLUB)
    await api.club_stage(OTHER)
    async with (
        api.client.ws_connect("/ws") as host_ws,
        api.client.ws_connect("/ws") as alice_ws,
        api.client.ws_connect("/ws") as other_ws,
    ):
        join = {"type": "join", "id": "j", "stage": stage}
        host = await Socket(host_ws).request(
            signed({**join, "name": "Dr Host", "role": "host", "identity": ADMIN_ID})
        )
        alice = await Socket(alice_ws).request(
            signed({**join, "name": "Alice", "role": "audience", "identity": "id-alice"})
        )
        elsewhere = await Socket(other_ws).request(
            signed(
                {**join, "stage": f"{OTHER}-rounds", "name": "Bo", "role": "audience", "identity": "id-bo"}
            )
        )
        assert [r["type"] for r in (host, alice, elsewhere)] == ["joined"] * 3

        status, data = await api.call("GET", f"/api/clubs/{CLUB}/stages", club_admin())
    assert status == 200
    listed = msgspec.convert(data, ClubStages)
    assert [s.id for s in listed.stages] == [stage], "this club's stages only"
    assert data["stages"][0] == {
        "id": stage,
        "title": "Cardio rounds",
        "participants": [
            {"id": host["participant"]["id"], "name": "Dr Host", "role": "host", "identity": ADMIN_ID},
            {"id": alice["participant"]["id"], "name": "Alice", "role": "audience", "identity": "id-alice"},
        ],
    }, "only the documented fields are passed on"


# --- the store: concurrency, failures, the join hook ---------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
async def backends(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[], Backend]]:
    """``make()``: one more node's backend on one shared store."""
    made: list[Backend] = []
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        with server.admin() as admin:
            admin.flushall()

        def make() -> Backend:
            made.append(RedisBackend(server.url, name=f"clubs-test-{len(made)}"))
            return made[-1]

    else:
        shared = MemoryBackend()

        def make() -> Backend:
            made.append(MemoryBackend(shared.store))
            return made[-1]

    yield make
    for backend in made:
        await backend.close()


async def test_nodes_admitting_at_once_never_overuse_an_invite(backends: Callable[[], Backend]) -> None:
    stores = [ClubStore(backends(), attempts=20) for _ in range(4)]
    await stores[0].create(CLUB, "Cardiology", private=True)
    await stores[0].put_member(CLUB, ADMIN_ID, "Dr Admin", "admin")
    invite = await stores[0].create_invite(CLUB, ADMIN_ID, max_uses=5)
    results = await asyncio.gather(
        *(stores[i % 4].admit(CLUB, f"id-{i}", f"Person {i}", invite.code) for i in range(12)),
        return_exceptions=True,
    )
    admitted = [r for r in results if isinstance(r, Member)]
    assert len(admitted) == 5
    assert all(isinstance(r, InviteInvalid) for r in results if not isinstance(r, Member)), results
    club = await stores[3].get(CLUB)
    assert club.invites[invite.code].uses == 5
    assert {m.identity for m in admitted} | {ADMIN_ID} == set(club.members), "every admission was kept"


async def test_concurrent_changes_on_several_nodes_are_all_kept(backends: Callable[[], Backend]) -> None:
    stores = [ClubStore(backends(), attempts=20) for _ in range(3)]
    await stores[0].create(CLUB, "Cardiology", private=False)
    await asyncio.gather(*(stores[i % 3].admit(CLUB, f"id-{i}", f"P{i}") for i in range(15)))
    assert len((await stores[1].get(CLUB)).members) == 15


async def test_an_update_retries_after_a_conflict_and_gives_up_after_its_attempts(
    backends: Callable[[], Backend],
) -> None:
    backend = backends()
    store, rival = ClubStore(backend, attempts=2), ClubStore(backends())
    await store.create(CLUB, "Cardiology", private=False)
    calls = 0

    async def interfere() -> None:
        await rival.admit(CLUB, f"id-rival-{calls}", "Rival")

    def change(club: Club) -> str:
        nonlocal calls
        calls += 1
        club.name = f"Renamed {calls}"
        return club.name

    # a writer slips in between the first load and its save: the second attempt wins
    original = backend.load_club

    async def load_then_interfere(club_id: str) -> Any:
        loaded = await original(club_id)
        if calls < 1:
            await interfere()
        return loaded

    backend.load_club = load_then_interfere  # type: ignore[method-assign]
    assert await store.update(CLUB, change) == "Renamed 2"
    assert calls == 2
    club = await rival.get(CLUB)
    assert club.name == "Renamed 2" and "id-rival-0" in club.members, "both changes are kept"

    async def always_interfere(club_id: str) -> Any:
        loaded = await original(club_id)
        await interfere()
        return loaded

    backend.load_club = always_interfere  # type: ignore[method-assign]
    with pytest.raises(Conflict):
        await store.update(CLUB, change)


async def test_a_change_that_changes_nothing_saves_nothing(backends: Callable[[], Backend]) -> None:
    backend = backends()
    store = ClubStore(backend)
    await store.create(CLUB, "Cardiology", private=False)
    await store.admit(CLUB, "id-alice", "Alice")
    stored = await backend.load_club(CLUB)
    assert stored is not None and stored[1] == 2
    await store.admit(CLUB, "id-alice", "Alice")
    assert (await backend.load_club(CLUB)) == stored, "a member joining again costs a read, no write"
    with pytest.raises(ClubNotFound):
        await store.admit("no-such-club", "id-alice", "Alice")


async def test_a_club_stored_in_a_format_this_node_cannot_read_is_refused(api: Api) -> None:
    await api.backend.save_club(CLUB, b"\xc1 not msgpack", expected_version=None)
    await api.refused("GET", f"/api/clubs/{CLUB}", PLATFORM, 500, "invalid_club_state")


async def test_an_unreachable_store_is_503_with_retry_after(api: Api) -> None:
    await make_club(api)
    await api.backend.close()
    for method, path, body in EVERY_CALL:
        path = path.format(club=CLUB)
        async with api.client.request(method, path, headers=bearer(PLATFORM), json=body) as response:
            data = await response.json(content_type=None)
            assert (response.status, data["code"]) == (503, "unavailable"), (method, path, data)
            assert response.headers["Retry-After"] == "1"
            check_documented(method, path, 503, response.content_type, data)


async def test_the_join_hook_admits_refuses_with_403_codes_and_lets_the_platform_through() -> None:
    store = ClubStore(MemoryBackend())
    await store.create(CLUB, "Cardiology", private=True)
    await store.put_member(CLUB, ADMIN_ID, "Dr Admin", "admin")
    stranger = DEV.verify(token("grand-rounds", "audience", "id-stranger"))
    with pytest.raises(Forbidden) as refused:
        await store.check_join(CLUB, stranger, "Stranger", None)
    assert (refused.value.code, refused.value.status, refused.value.close_code) == ("club_private", 403, 4403)
    with pytest.raises(Forbidden) as refused:
        await store.check_join(CLUB, stranger, "Stranger", "bad-code")
    assert refused.value.code == "invite_invalid"
    with pytest.raises(Forbidden) as refused:
        await store.check_join("no-such-club", stranger, "Stranger", None)
    assert refused.value.code == "club_not_found"

    invite = await store.create_invite(CLUB, ADMIN_ID)
    member = await store.check_join(CLUB, stranger, "Stranger", invite.code)
    assert member is not None and member.via == "invite"
    platform = DEV.verify(admin_token())
    assert await store.check_join(CLUB, platform, "Platform", None) is None
    assert "platform" not in (await store.get(CLUB)).members, "platform tokens do not become members"
    assert await store.check_join(None, stranger, "Stranger", None) is None, "a stage without a club"


def test_the_store_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError):
        ClubStore(MemoryBackend(), attempts=0)
