"""People's nominees on real nodes (issue 15, item 4): the authorization matrix of the nominee
endpoints on each deployment of the server suite (embedded, Redis, relay), and, on two nodes of one
Redis with their own disks, one ledger order for both, mirrored and signed by each, and a signed
``person.nominee_changed`` webhook received by a real local receiver."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from recording.evidence import TrustedKey
from recording.ledger import read_entries
from recording.people import FILENAME, verify_people
from recording.signing import NodeKey
from server.host.webhooks import verify
from tests.conftest import RunningNode, start_node
from tests.server.test_webhooks import Receiver, answers
from tests.support.redis_server import running_redis
from tests.support.tokens import bearer, token

SECRET = "webhook-secret-for-the-people-test"


@pytest.fixture(scope="module")
def node_env(recording_env: dict[str, str]) -> dict[str, str]:
    """The recording nodes (shared with other modules): their data directory is a temporary one, so the
    people ledger is written there, never in the user's."""
    return recording_env


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def person() -> str:
    return "p-" + uuid.uuid4().hex[:10]


def own(identity: str) -> dict[str, str]:
    """The person-level token of ``identity``: it names no stage and no club."""
    return bearer(token(None, None, identity))


class Api:
    def __init__(self, node: Any, http: aiohttp.ClientSession) -> None:
        self.url = node.url
        self.http = http

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None, body: Any = None
    ) -> tuple[int, Any]:
        async with self.http.request(method, self.url + path, json=body, headers=headers or {}) as r:
            data = await r.json(content_type=None)
            if r.status >= 400:
                assert r.content_type == "application/problem+json", (r.status, data)
                return r.status, data["code"]
            return r.status, data

    async def nominate(self, identity: str, nominee: str, headers: dict[str, str] | None) -> tuple[int, Any]:
        return await self.call("POST", f"/api/people/{identity}/nominees", headers, {"nominee": nominee})

    async def listed(self, identity: str, headers: dict[str, str] | None) -> tuple[int, Any]:
        status, data = await self.call("GET", f"/api/people/{identity}/nominees", headers)
        if status == 200:
            return status, [n["nominee"] for n in data["nominees"]]
        return status, data

    async def withdraw(self, identity: str, nominee: str, headers: dict[str, str] | None) -> tuple[int, Any]:
        return await self.call("DELETE", f"/api/people/{identity}/nominees/{nominee}", headers)


async def test_who_may_nominate_list_and_withdraw(
    module_node: RunningNode, http: aiohttp.ClientSession
) -> None:
    api = Api(module_node, http)
    alice, nominee, former, stranger, moderator = person(), person(), person(), person(), person()
    stage = "people-" + uuid.uuid4().hex[:8]
    async with http.post(module_node.url + "/api/stages", json={"id": stage}, headers=bearer()) as r:
        assert r.status == 201

    # The person, with their own person-level token; the platform.
    status, granted = await api.nominate(alice, nominee, own(alice))
    assert status == 201 and (granted["change"], granted["nominee"]) == ("granted", nominee), granted
    assert (await api.nominate(alice, former, bearer()))[0] == 201
    assert await api.listed(alice, own(alice)) == (200, [nominee, former])
    status, withdrawn = await api.withdraw(alice, former, own(alice))
    assert status == 200 and (withdrawn["change"], withdrawn["nominee"]) == ("withdrawn", former)
    assert withdrawn["ledger_index"] > granted["ledger_index"]

    # Each caller, on each endpoint: (status, code or the nominees listed).
    callers: dict[str, dict[str, str] | None] = {
        "nominee": own(nominee),
        "withdrawn nominee": own(former),
        "stranger": own(stranger),
        "moderator of a stage": bearer(token(stage, "moderator", moderator)),
        "the person's stage token": bearer(token(stage, "audience", alice)),
        "no token": None,
    }
    expected_list = {
        "nominee": (200, [nominee]),
        "withdrawn nominee": (403, "not_allowed"),
        "stranger": (403, "not_allowed"),
        "moderator of a stage": (403, "not_allowed"),
        "the person's stage token": (403, "person_token_required"),
        "no token": (401, "token_missing"),
    }
    expected_change = {
        "nominee": (403, "not_allowed"),  # a nominee acts for the person, but does not pick nominees
        "withdrawn nominee": (403, "not_allowed"),
        "stranger": (403, "not_allowed"),
        "moderator of a stage": (403, "not_allowed"),
        "the person's stage token": (403, "person_token_required"),
        "no token": (401, "token_missing"),
    }
    got_list = {who: await api.listed(alice, headers) for who, headers in callers.items()}
    got_nominate = {who: await api.nominate(alice, stranger, headers) for who, headers in callers.items()}
    got_withdraw = {who: await api.withdraw(alice, nominee, headers) for who, headers in callers.items()
                    if who != "nominee"}  # fmt: skip
    assert got_list == expected_list
    assert got_nominate == expected_change
    assert got_withdraw == {k: v for k, v in expected_change.items() if k != "nominee"}
    assert await api.listed(alice, bearer()) == (200, [nominee]), "no refused call changed anything"

    # Refusals of the request itself.
    assert await api.nominate(alice, alice, own(alice)) == (400, "self_nomination")
    assert await api.nominate(alice, nominee, own(alice)) == (409, "already_nominated")
    assert await api.withdraw(alice, stranger, bearer()) == (404, "not_nominated")
    assert await api.nominate(alice, "x" * 129, bearer()) == (400, "invalid_body")
    assert await api.listed("bad%01id", bearer()) == (400, "bad_identity")
    assert await api.call("POST", f"/api/people/{alice}/nominees", bearer(), {"nominee": 3}) == (
        400,
        "invalid_body",
    )

    # A nominee may step down; then they are a stranger.
    status, change = await api.withdraw(alice, nominee, own(nominee))
    assert status == 200 and change["change"] == "withdrawn"
    assert await api.listed(alice, own(nominee)) == (403, "not_allowed")
    assert await api.listed(alice, own(alice)) == (200, [])


async def test_two_nodes_share_one_ledger_order_and_send_a_signed_webhook(tmp_path: Path) -> None:
    receiver = Receiver(answers(500, 200))  # the first delivery fails: retried
    await receiver.start()
    nodes: list[RunningNode] = []
    with running_redis(tmp_path / "redis") as redis:
        try:
            for name in ("a", "b"):
                data = tmp_path / name
                data.mkdir()
                env = {
                    "MEDSTAGE_REDIS_URL": redis.url,
                    "MEDSTAGE_RECORDINGS_DIR": str(data / "recordings"),
                    "MEDSTAGE_WEBHOOK_URLS": receiver.url,
                    "MEDSTAGE_WEBHOOK_SECRET": SECRET,
                    "MEDSTAGE_MEDIA_WORKERS": "0",
                }
                nodes.append(start_node(data, env))
            a, b = nodes
            alice, bob, carol = person(), person(), person()
            async with aiohttp.ClientSession() as http:
                api_a, api_b = Api(a, http), Api(b, http)
                status, first = await api_a.nominate(alice, bob, own(alice))
                assert status == 201
                assert await api_b.listed(alice, own(bob)) == (200, [bob]), "b sees a's append at once"
                assert (await api_b.nominate(alice, carol, own(alice)))[0] == 201
                assert (await api_a.withdraw(alice, bob, own(alice)))[0] == 200
                assert await api_b.listed(alice, own(alice)) == (200, [carol])
                assert await api_a.listed(alice, own(carol)) == (200, [carol])
            got = await receiver.wait_for(4, timeout=15)  # 3 changes, the first one twice
        finally:
            for node in nodes:
                assert node.stop() == 0, node.log()[-3000:]
            await receiver.stop()

    # One order on both disks, each file signed by its own node's key.
    files = [tmp_path / name / "people" / FILENAME for name in ("a", "b")]
    assert files[0].read_bytes() == files[1].read_bytes()
    records = [e.record for e in read_entries(files[0])]
    assert [(r["type"], r["nominee"]) for r in records] == [
        ("nomination.granted", bob),
        ("nomination.granted", carol),
        ("nomination.withdrawn", bob),
    ]
    for name in ("a", "b"):
        key = NodeKey.load_or_create(tmp_path / name / "keys" / "ledger-ed25519.key")
        verdict = verify_people(tmp_path / name / "people", TrustedKey(key.public, name))
        assert verdict.ok, verdict.message

    events = [r.event for r in got]
    ids = [e["id"] for e in events]
    assert ids.count(ids[0]) == 2 and len(set(ids)) == 3, "the 500 was retried with the same event"
    for received in got:
        assert verify(SECRET, received.headers["Medstage-Signature"], received.body, time.time())
        assert received.headers["Medstage-Event"] == "person.nominee_changed"
    unique = list({e["id"]: e for e in events}.values())
    changes = sorted((e["data"]["ledger_index"], e["data"]["nominee"], e["data"]["change"]) for e in unique)
    assert changes == [(0, bob, "granted"), (1, carol, "granted"), (2, bob, "withdrawn")]
    by_node = {e["data"]["ledger_index"]: e["node"] for e in unique}
    assert by_node[0] == by_node[2] != by_node[1], "each change is sent by the node that made it"
    data = next(e["data"] for e in unique if e["data"]["ledger_index"] == 0)
    assert data == {
        "identity": alice,
        "nominee": bob,
        "change": "granted",
        "by": alice,
        "as": "person",
        "at": data["at"],
        "ledger_index": 0,
        "ledger_hash": first["ledger_hash"],
    }
