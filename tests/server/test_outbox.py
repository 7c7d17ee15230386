"""A client that reads too slowly (server/outbox.py): the policy on its own, then on a real node with a
client that stops reading (a plain socket with a tiny receive buffer, tests/support/slow_socket.py).

Past ``outbox_limit`` queued frames the fresh-only ones (comments, reactions, live counts) are dropped
for that client while its replies and the moderation and role events still reach it; at twice the
limit it is closed with 1013, and the stage and everyone else go on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from server.signalling.outbox import DROPPABLE, Close, Outbox, Overflow
from server.wire import Outgoing
from tests.conftest import RunningNode, start_node
from tests.support.slow_socket import Closed, SlowSocket
from tests.support.tokens import signed
from tests.support.ws import Socket

LIMIT = 16  # the smallest limit the configuration allows
BIG = "€" * 9000  # a 27 kB comment frame: the kernel's buffers fill after a few


# --- the policy ---------------------------------------------------------------------------------


def test_past_the_limit_only_fresh_only_frames_are_dropped_and_twice_the_limit_overflows() -> None:
    outbox = Outbox(LIMIT)
    for i in range(LIMIT):
        assert outbox.put(Outgoing({"type": "comment.posted", "n": i}))
    for kind in sorted(DROPPABLE):
        assert not outbox.put(Outgoing({"type": kind})), kind
    assert outbox.dropped == len(DROPPABLE)
    for i in range(LIMIT):  # replies, roles, moderation: queued up to twice the limit
        assert outbox.put(Outgoing({"type": "participant.updated", "n": i}))
    assert len(outbox) == 2 * LIMIT
    with pytest.raises(Overflow):
        outbox.put(Outgoing({"type": "ok", "id": 1}))
    assert outbox.put(Close(1000, "a close is always queued"))


# --- on a node ----------------------------------------------------------------------------------


@pytest.fixture
def slow_node(tmp_path: Path) -> Iterator[RunningNode]:
    running = start_node(
        tmp_path,
        {
            "MEDSTAGE_OUTBOX_LIMIT": str(LIMIT),
            "MEDSTAGE_COMMENT_MAX_CHARS": str(len(BIG)),
            "MEDSTAGE_COMMENT_RATE": "100000",
        },
    )
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"node exited with {code}:\n{running.log()[-4000:]}"


def _dropped(node: RunningNode) -> float:
    return node.metrics().get("medstage_outbox_dropped_total", 0.0)


async def _post_until_dropped(node: RunningNode, host: Socket, posted: list[str], more_than: float) -> None:
    """Big comments until the node drops one for the slow client (its outbox is at the limit)."""
    for _ in range(2000):
        reply = await host.request({"type": "comment.post", "id": uuid.uuid4().hex[:8], "text": BIG})
        assert reply["type"] == "ok", reply
        posted.append(reply["comment_id"])
        if len(posted) % 4 == 0 and await asyncio.to_thread(_dropped, node) > more_than:
            return
    raise AssertionError("the slow client's outbox never reached its limit")


async def test_a_client_that_does_not_read_loses_fresh_only_frames_then_is_closed_1013(
    slow_node: RunningNode,
) -> None:
    stage = "ob-" + uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as session:
        host = Socket(await session.ws_connect(slow_node.ws_url, max_msg_size=0))
        join = {"type": "join", "id": "j", "stage": stage, "name": "Host", "role": "host"}
        joined = await host.request(signed(join))
        assert joined["type"] == "joined", joined

        slow = await asyncio.to_thread(SlowSocket, slow_node.port)
        try:
            await _run(slow_node, host, slow, stage)
        finally:
            slow.close()
        # The stage and the other clients were never held up.
        await host.sync()
        again = await host.request({"type": "comment.post", "id": "after", "text": "still here"})
        assert again["type"] == "ok", again


async def _run(node: RunningNode, host: Socket, slow: SlowSocket, stage: str) -> None:
    slow.send(signed({"type": "join", "id": "j", "stage": stage, "name": "Slow", "role": "audience"}))
    frames = await asyncio.to_thread(slow.recv_until, "j")
    assert frames[-1]["type"] == "joined", frames
    slow_id = frames[-1]["participant"]["id"]
    slow.send({"type": "ping", "id": "settled"})
    await asyncio.to_thread(slow.recv_until, "settled")  # the subscriber offer and the rest, read

    # 1. It stops reading: comments pile up until the node drops them for it.
    posted: list[str] = []
    before = await asyncio.to_thread(_dropped, node)
    await _post_until_dropped(node, host, posted, before)
    # 2. Past the limit: what is not fresh-only still goes to it.
    muted = await host.request({"type": "chat.mute", "id": "mute", "participant_id": slow_id, "muted": True})
    assert muted["type"] == "ok", muted
    promoted = await host.request(
        {"type": "role.set", "id": "promote", "participant_id": slow_id, "role": "moderator"}
    )
    assert promoted["type"] == "ok", promoted
    for _ in range(3):  # dropped for it
        reply = await host.request({"type": "comment.post", "id": uuid.uuid4().hex[:8], "text": BIG})
        posted.append(reply["comment_id"])
    slow.send({"type": "ping", "id": "reply"})  # its own reply, behind all of that
    await host.sync()
    dropped = await asyncio.to_thread(_dropped, node) - before
    assert dropped >= 3

    # 3. It reads again: everything but the dropped comments, in order.
    frames = await asyncio.to_thread(slow.recv_until, "reply")
    slow.send({"type": "ping", "id": "rest"})
    frames += await asyncio.to_thread(slow.recv_until, "rest")
    types = [f["type"] for f in frames]
    seen = [f["comment"]["id"] for f in frames if f["type"] == "comment.posted"]
    assert len(seen) == len(posted) - dropped, (len(seen), len(posted), dropped)
    assert seen == [c for c in posted if c in seen], "in order"
    assert posted[-3:] != seen[-3:], "the comments posted past the limit were dropped"
    updates = [f["participant"] for f in frames if f["type"] == "participant.updated"]
    assert any(p["id"] == slow_id and p["role"] == "moderator" for p in updates), updates
    assert "state" in types, "the moderator's view of the stage, refreshed: never dropped"
    assert any(p["id"] == slow_id and p["chat_muted"] for p in updates), updates
    assert types.index("pong") > types.index("state"), "its reply came after the events before it"

    # 4. It stops reading again, and falls twice the limit behind: closed with 1013.
    before = await asyncio.to_thread(_dropped, node)
    await _post_until_dropped(node, host, posted, before)
    for i in range(2 * LIMIT):  # replies are never dropped: the outbox passes twice the limit
        slow.send({"type": "ping", "id": f"flood-{i}"})
    await host.sync()

    def read_to_the_end() -> tuple[list[dict[str, Any]], Closed]:
        got = []
        while True:
            try:
                got.append(slow.recv())
            except Closed as closed:
                return got, closed

    got, closed = await asyncio.to_thread(read_to_the_end)
    assert closed.code == 1013, (closed.code, closed.reason)
    pongs = [f["id"] for f in got if f["type"] == "pong"]
    assert len(pongs) < 2 * LIMIT, "the client was closed before all its replies were sent"
    assert "outbox overflow, closing" in node.log()
