"""Floods (issue 11, item 5) on a real node: a question flood and hand toggles are cut off by the
per-identity rate and stop reaching the others; a late joiner's ``joined`` stays small however much was
said before; older comments and questions are paged with ``history.get``. On one node, and through the
relay (sockets on another node than the stage's)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningNode, start_node
from tests.server.conftest import Deployment
from tests.support.redis_server import RedisServer
from tests.support.tokens import bearer, token
from tests.support.ws import Socket

HISTORY = 10  # comment_history and question_history of the node under test
RATES = "question=3/60,hand=3/60"
ENV = {
    "MEDSTAGE_COMMENT_HISTORY": str(HISTORY),
    "MEDSTAGE_QUESTION_HISTORY": str(HISTORY),
    "MEDSTAGE_RATE_LIMITS": RATES,
}
QUESTION = "Is the dose weight-based? " * 19  # 494 characters, near the 500 limit


@pytest.fixture(scope="module", params=["memory", "relay"])
def flood_node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory: Path = tmp_path_factory.mktemp(request.param)
    nodes: list[RunningNode] = []
    redis = None
    try:
        if request.param == "memory":
            nodes.append(start_node(directory, ENV))
            yield nodes[0]
        else:
            redis = RedisServer(directory)
            redis.start()
            env = {**ENV, "MEDSTAGE_REDIS_URL": redis.url}
            nodes += [start_node(directory, env), start_node(directory, env)]
            yield Deployment(nodes[0], nodes[1])
        for node in nodes:
            assert node.stop() == 0, node.log()[-4000:]
    finally:
        for node in nodes:
            node.stop()
        if redis is not None:
            redis.stop()


class Room:
    """A stage on the node under test, and sockets joined to it."""

    def __init__(self, node: Any, session: aiohttp.ClientSession, stage: str) -> None:
        self.node, self.session, self.stage = node, session, stage
        self.sockets: list[Socket] = []

    async def join(
        self, identity: str | None = None, role: str = "audience"
    ) -> tuple[Socket, dict[str, Any], int]:
        """A joined socket, its ``joined`` reply and that reply's size in bytes as it came."""
        sock = Socket(await self.session.ws_connect(self.node.ws_url, max_msg_size=0))
        self.sockets.append(sock)
        identity = identity or "f-" + uuid.uuid4().hex[:8]
        await sock.send(
            {"type": "join", "id": "join", "stage": self.stage, "token": token(self.stage, role, identity)}
        )
        async with asyncio.timeout(10):
            while True:
                msg = await sock.ws.receive()
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                frame = json.loads(msg.data)
                if frame.get("id") == "join":
                    assert frame["type"] == "joined", frame
                    await sock.sync()
                    return sock, frame, len(msg.data.encode())

    async def close(self) -> None:
        for sock in self.sockets:
            await sock.ws.close()


@pytest.fixture
async def room(flood_node: Any) -> AsyncIterator[Room]:
    stage = "fl-" + uuid.uuid4().hex[:10]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            flood_node.url + "/api/stages", json={"id": stage}, headers=bearer()
        ) as response:
            assert response.status == 201
        room = Room(flood_node, session, stage)
        yield room
        await room.close()


async def flood(sock: Socket, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Send every message at once (no waiting for replies), then collect their replies in order."""
    ids = [f"x{i}" for i in range(len(messages))]
    for request_id, message in zip(ids, messages, strict=True):
        await sock.send({**message, "id": request_id})
    replies: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(30):
        while len(replies) < len(ids):
            frame = await sock.recv(timeout=30)
            if frame.get("id") in ids:
                replies[frame["id"]] = frame
    return [replies[i] for i in ids]


def of_type(frames: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == type_]


async def test_a_question_flood_is_cut_off_after_the_burst_and_stops_reaching_others(room: Room) -> None:
    attacker, _, _ = await room.join("flooder")
    watcher, _, _ = await room.join()
    replies = await flood(attacker, [{"type": "question.ask", "text": QUESTION}] * 300)
    assert [r["type"] for r in replies[:3]] == ["ok"] * 3
    refusals = replies[3:]
    assert {r["code"] for r in refusals} == {"rate_limited"}, refusals[:3]
    assert all(0 < r["retry_after"] <= 60 for r in refusals)
    assert len(of_type(await watcher.sync(), "question.asked")) == 3, "only the accepted ones are broadcast"

    # Reconnecting does not reset the limit: it is the identity's.
    await attacker.ws.close()
    again, _, _ = await room.join("flooder")
    (reply,) = await flood(again, [{"type": "question.ask", "text": "once more?"}])
    assert reply["code"] == "rate_limited", reply
    assert of_type(await watcher.sync(), "question.asked") == []


async def test_hand_toggles_are_rate_limited(room: Room) -> None:
    toggler, _, _ = await room.join()
    watcher, _, _ = await room.join()
    replies = await flood(toggler, [{"type": t} for _ in range(200) for t in ("hand.raise", "hand.lower")])
    raises = replies[0::2]
    assert [r["type"] for r in raises[:3]] == ["ok"] * 3
    assert {r.get("code") for r in raises[3:]} == {"rate_limited"}
    frames = await watcher.sync()
    # 3 raises and 3 lowers, each a hands.updated and a participant.updated: not 800 frames.
    assert len(of_type(frames, "hands.updated")) == 6 and len(frames) == 12, [f["type"] for f in frames]


async def test_a_late_joiners_joined_stays_small_after_a_flood_and_older_history_is_paged(room: Room) -> None:
    # 20 people ask 3 long questions each (all the rate lets them) and 5 of them 5 comments each.
    askers = [await room.join() for _ in range(20)]
    for sock, _, _ in askers:
        replies = await flood(sock, [{"type": "question.ask", "text": QUESTION}] * 3)
        assert [r["type"] for r in replies] == ["ok"] * 3, replies
    for sock, _, _ in askers[:4]:
        replies = await flood(sock, [{"type": "comment.post", "text": QUESTION}] * 5)
        assert [r["type"] for r in replies] == ["ok"] * 5, replies
    for sock, _, _ in askers:
        await sock.ws.close()

    late, joined, size = await room.join()
    state = joined["state"]
    assert len(state["questions"]) == HISTORY and state["more_questions"] is True
    assert len(state["comments"]) == HISTORY and state["more_comments"] is True
    # 10 questions and 10 comments of ~500 characters and the rest of the stage: not 60 questions.
    assert size < 2 * HISTORY * 700 + 4000, size

    # Paging back from the oldest question it got reaches every one of the 60, each once.
    seen = {q["id"] for q in state["questions"]}
    before: str | None = min(state["questions"], key=lambda q: q["at"])["id"]
    while before is not None:
        (page,) = await flood(
            late, [{"type": "history.get", "kind": "questions", "before": before, "limit": 25}]
        )
        assert page["type"] == "history" and page["kind"] == "questions", page
        assert page["items"] and not seen & {q["id"] for q in page["items"]}
        assert all(q["voted"] is False and q["text"] == QUESTION for q in page["items"])
        seen |= {q["id"] for q in page["items"]}
        before = page["items"][0]["id"] if page["more"] else None
    assert len(seen) == 60

    oldest = state["comments"][0]["id"]
    (page,) = await flood(late, [{"type": "history.get", "kind": "comments", "before": oldest, "limit": 100}])
    assert [c["author_id"] for c in page["items"]] and len(page["items"]) == HISTORY and page["more"] is False
    assert page["items"][-1]["at"] <= state["comments"][0]["at"]

    (bad,) = await flood(late, [{"type": "history.get", "kind": "comments", "limit": 101}])
    assert bad["type"] == "error" and bad["code"] == "invalid_message", bad
    (missing,) = await flood(late, [{"type": "history.get", "kind": "questions", "before": "q-nope"}])
    assert missing["type"] == "error" and missing["code"] == "not_found", missing
