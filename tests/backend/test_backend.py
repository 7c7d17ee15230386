"""The backend contract, run against both implementations (memory and a real redis-server).

Each test gets a ``cluster``: ``cluster.node()`` is one more node on the same shared state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator
from typing import Union

import msgspec
import pytest

from rooms.events import EVENT_TYPES, CommentPosted, CommentView, Event, StageEnded
from server.backend import (
    Backend,
    BackendClosed,
    BackendUnavailable,
    Conflict,
    Inbox,
    LeaseLost,
    OutOfOrder,
)
from tests.backend.conftest import Cluster, background, wait_broken
from tests.support.waiting import eventually

TTL_MS = 300  # real milliseconds for Redis: long enough to be reliable, short enough to wait out
STAGE = "s1"


async def take(sub: AsyncGenerator[tuple[int, bytes], None], n: int) -> list[tuple[int, bytes]]:
    """The next ``n`` entries of a subscription (which stays open for more)."""
    out: list[tuple[int, bytes]] = []
    async with asyncio.timeout(5):
        async for entry in sub:
            out.append(entry)
            if len(out) == n:
                break
    return out


def entries(*seqs: int) -> list[tuple[int, bytes]]:
    return [(seq, f"event {seq}".encode()) for seq in seqs]


async def append_all(backend: Backend, *seqs: int, stage: str = STAGE) -> None:
    for seq, payload in entries(*seqs):
        await backend.append(stage, seq, payload)


async def receive(inbox: Inbox, n: int) -> list[bytes]:
    """The next ``n`` messages of an inbox (which stays open for more)."""
    out: list[bytes] = []
    async with asyncio.timeout(5):
        async for message in inbox:
            out.append(message)
            if len(out) == n:
                break
    return out


# --- stage registry ----------------------------------------------------------------------------


async def test_a_stage_has_one_owner_until_its_lease_expires(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    lease = await a.claim(STAGE, "node-a", "http://a", TTL_MS)
    assert lease is not None and lease.node_id == "node-a"
    assert await b.claim(STAGE, "node-b", "http://b", TTL_MS) is None
    assert await a.claim(STAGE, "node-a", "http://a", TTL_MS) is None, "a holder renews, never re-claims"
    owner = await b.owner(STAGE)
    assert owner is not None and (owner.node_id, owner.node_url) == ("node-a", "http://a")
    assert await b.owner("other") is None

    await cluster.advance(TTL_MS / 1000 + 0.1)
    assert await b.owner(STAGE) is None
    taken = await b.claim(STAGE, "node-b", "http://b", TTL_MS)
    assert taken is not None
    assert not await a.renew(lease), "a node that lost its lease learns it from renew"
    owner = await a.owner(STAGE)
    assert owner is not None and owner.node_id == "node-b", "and its renew did not take the stage back"


async def test_renewing_keeps_the_stage_past_the_first_ttl(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    lease = await a.claim(STAGE, "node-a", "http://a", TTL_MS)
    assert lease is not None
    first = await a.owner(STAGE)
    for _ in range(3):
        await cluster.advance(TTL_MS * 0.6 / 1000)
        assert await a.renew(lease)
    assert await b.claim(STAGE, "node-b", "http://b", TTL_MS) is None
    owner = await b.owner(STAGE)
    assert first is not None and owner is not None and owner.node_id == "node-a"
    assert owner.expires_at > first.expires_at + TTL_MS / 1000


async def test_only_the_holder_releases_a_stage(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    lease = await a.claim(STAGE, "node-a", "http://a", TTL_MS)
    assert lease is not None
    assert not await b.release(dataclasses.replace(lease, token="a forged token"))
    assert (await b.owner(STAGE)) is not None

    assert await a.release(lease)
    assert await a.owner(STAGE) is None
    assert not await a.release(lease), "a second release is a no-op"
    taken = await b.claim(STAGE, "node-b", "http://b", TTL_MS)
    assert taken is not None
    assert not await a.release(lease), "an old lease never deletes the new holder's"
    owner = await a.owner(STAGE)
    assert owner is not None and owner.node_id == "node-b"


async def test_a_node_without_the_lease_cannot_append(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    lease = await a.claim(STAGE, "node-a", "http://a", TTL_MS)
    assert lease is not None
    await a.append(STAGE, 1, b"one", lease=lease)
    await cluster.advance(TTL_MS / 1000 + 0.1)
    taken = await b.claim(STAGE, "node-b", "http://b", TTL_MS)
    assert taken is not None
    with pytest.raises(LeaseLost):
        await a.append(STAGE, 2, b"stale owner", lease=lease)
    await b.append(STAGE, 2, b"two", lease=taken)
    assert await b.read(STAGE) == [(1, b"one"), (2, b"two")]


# --- presence ------------------------------------------------------------------------------------


async def test_presence_lists_everyone_on_every_node(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    assert not await a.heartbeat("node-a", TTL_MS), "the first beat: nothing was alive"
    assert await a.heartbeat("node-a", TTL_MS)
    await b.heartbeat("node-b", TTL_MS)
    await a.presence_join(STAGE, "p1", "node-a", {"name": "Ana", "role": "host"})
    await b.presence_join(STAGE, "p2", "node-b", {"name": "Bo", "kinds": ("audio", "video")})
    assert await a.presence(STAGE) == {
        "p1": {"name": "Ana", "role": "host"},
        "p2": {"name": "Bo", "kinds": ["audio", "video"]},  # msgpack: tuples come back as lists
    }
    assert await a.presence("other") == {}

    assert await a.presence_leave(STAGE, "p1", "node-a")
    assert not await a.presence_leave(STAGE, "p1", "node-a")
    assert await b.presence(STAGE) == {"p2": {"name": "Bo", "kinds": ["audio", "video"]}}


async def test_a_person_who_moved_is_not_removed_by_the_old_node(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    await a.heartbeat("node-a", TTL_MS)
    await b.heartbeat("node-b", TTL_MS)
    await a.presence_join(STAGE, "p1", "node-a", {"name": "Ana"})
    await b.presence_join(STAGE, "p1", "node-b", {"name": "Ana", "moved": True})
    assert not await a.presence_leave(STAGE, "p1", "node-a")
    assert await a.presence(STAGE) == {"p1": {"name": "Ana", "moved": True}}


async def test_a_dead_nodes_people_disappear_and_return_when_it_joins_them_again(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    await a.heartbeat("node-a", TTL_MS)
    await b.heartbeat("node-b", TTL_MS)
    await a.presence_join(STAGE, "p1", "node-a", {"name": "Ana"})
    await b.presence_join(STAGE, "p2", "node-b", {"name": "Bo"})

    await cluster.advance(TTL_MS * 0.6 / 1000)
    assert await b.heartbeat("node-b", TTL_MS)
    await cluster.advance(TTL_MS * 0.6 / 1000)  # node-a's beat is 1.2 TTL old, node-b's 0.6
    assert await b.presence(STAGE) == {"p2": {"name": "Bo"}}

    assert not await a.heartbeat("node-a", TTL_MS), "node-a learns that it lapsed"
    assert await b.presence(STAGE) == {"p2": {"name": "Bo"}}, "its entries were dropped, not revived"
    await a.presence_join(STAGE, "p1", "node-a", {"name": "Ana"})
    assert await b.presence(STAGE) == {"p1": {"name": "Ana"}, "p2": {"name": "Bo"}}


async def test_alive_nodes_are_those_whose_heartbeat_has_not_lapsed(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    assert await a.alive_nodes([]) == set()
    assert await a.alive_nodes(["node-a"]) == set(), "no beat yet"
    await a.heartbeat("node-a", TTL_MS)
    await b.heartbeat("node-b", TTL_MS)
    assert await a.alive_nodes(["node-a", "node-b", "node-c"]) == {"node-a", "node-b"}

    await cluster.advance(TTL_MS / 1000 + 0.1)
    assert await b.alive_nodes({"node-a", "node-b"}) == set(), "both beats lapsed"
    await b.heartbeat("node-b", TTL_MS)
    assert await b.alive_nodes({"node-a", "node-b"}) == {"node-b"}
    await a.heartbeat("node-a", TTL_MS)
    assert await b.alive_nodes(("node-a", "node-b", "node-a")) == {"node-a", "node-b"}
    assert await a.nodes() == {"node-a", "node-b"}  # every live node, for a message to all


async def test_nodes_lists_only_the_nodes_alive_now(cluster: Cluster) -> None:
    a = cluster.node()
    assert await a.nodes() == set()
    await a.heartbeat("node-x", TTL_MS)
    assert await a.nodes() == {"node-x"}
    await cluster.advance(TTL_MS / 1000 + 0.1)
    assert await a.nodes() == set()


async def test_node_urls_are_the_live_nodes_public_urls(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    assert await a.node_urls() == {}
    await a.heartbeat("node-a", TTL_MS, "http://a.example:8080")
    await b.heartbeat("node-b", TTL_MS, "https://b.example")
    await b.heartbeat("node-c", TTL_MS)  # beats without a URL: alive, but nowhere to send anyone
    assert await b.node_urls() == {"node-a": "http://a.example:8080", "node-b": "https://b.example"}
    assert await a.nodes() == {"node-a", "node-b", "node-c"}

    await cluster.advance(TTL_MS * 0.6 / 1000)
    await b.heartbeat("node-b", TTL_MS, "https://b.example")
    await cluster.advance(TTL_MS * 0.6 / 1000)  # node-a's beat has lapsed
    assert await a.node_urls() == {"node-b": "https://b.example"}
    assert await a.node_urls() == {"node-b": "https://b.example"}, "read twice: the dead entry is gone"
    assert not await a.heartbeat("node-a", TTL_MS, "http://a.example:8080")  # it was only late
    assert await b.node_urls() == {"node-a": "http://a.example:8080", "node-b": "https://b.example"}


# --- stage state ---------------------------------------------------------------------------------


async def test_the_stage_state_saved_under_the_lease_is_what_every_node_loads(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    assert await b.load_state(STAGE) is None
    lease = await a.claim(STAGE, "node-a", "http://a", TTL_MS)
    assert lease is not None
    snapshot = bytes(range(256))  # any bytes, as the caller encoded them
    await a.save_state(STAGE, snapshot, lease=lease)
    assert await b.load_state(STAGE) == snapshot
    await a.save_state(STAGE, b"v2", lease=lease)
    assert await b.load_state(STAGE) == b"v2", "a save replaces the snapshot"
    assert await b.load_state("other") is None, "stages have separate states"


async def test_a_node_that_lost_its_lease_cannot_save_the_state(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    lease = await a.claim(STAGE, "node-a", "http://a", TTL_MS)
    assert lease is not None
    await a.save_state(STAGE, b"a's", lease=lease)
    await cluster.advance(TTL_MS / 1000 + 0.1)
    assert await b.load_state(STAGE) == b"a's", "the snapshot outlives the lease that wrote it"
    with pytest.raises(LeaseLost):
        await a.save_state(STAGE, b"stale, nobody holds it", lease=lease)

    taken = await b.claim(STAGE, "node-b", "http://b", TTL_MS)
    assert taken is not None
    with pytest.raises(LeaseLost):
        await a.save_state(STAGE, b"stale, b holds it", lease=lease)
    assert await b.load_state(STAGE) == b"a's", "a refused save writes nothing"
    with pytest.raises(LeaseLost):
        await b.save_state("other", b"not b's stage", lease=taken)
    assert await b.load_state("other") is None

    await b.save_state(STAGE, b"b's", lease=taken)
    assert await a.load_state(STAGE) == b"b's"
    assert await b.release(taken)
    with pytest.raises(LeaseLost):
        await b.save_state(STAGE, b"after release", lease=taken)
    assert await a.load_state(STAGE) == b"b's"


# --- clubs -----------------------------------------------------------------------------------------


async def test_a_club_saved_on_one_node_is_loaded_with_its_version_on_another(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    assert await b.load_club("c1") is None
    assert await b.list_clubs() == []
    payload = bytes(range(256))  # any bytes, as the caller encoded them
    assert await a.save_club("c1", payload, expected_version=None) == 1
    assert await b.load_club("c1") == (payload, 1)
    assert await b.save_club("c1", b"v2", expected_version=1) == 2
    assert await a.load_club("c1") == (b"v2", 2)
    assert await a.load_club("c2") is None, "clubs are stored apart"


async def test_a_save_from_a_stale_version_is_a_conflict_and_writes_nothing(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    await a.save_club("c1", b"first", expected_version=None)
    with pytest.raises(Conflict):
        await b.save_club("c1", b"created twice", expected_version=None)
    await a.save_club("c1", b"a's", expected_version=1)
    with pytest.raises(Conflict):
        await b.save_club("c1", b"b's, from version 1", expected_version=1)
    with pytest.raises(Conflict):
        await b.save_club("c1", b"b's, from a version never stored", expected_version=7)
    with pytest.raises(Conflict):
        await b.save_club("nobody", b"an update of no club", expected_version=1)
    assert await b.load_club("c1") == (b"a's", 2)
    assert await b.load_club("nobody") is None
    assert await b.save_club("c1", b"b's, reloaded", expected_version=2) == 3


async def test_a_repeated_save_that_landed_returns_its_version_instead_of_a_conflict(
    cluster: Cluster,
) -> None:
    """A retry after a lost reply: the stored version is the one the save made, with its payload."""
    a = cluster.node()
    assert await a.save_club("c1", b"made", expected_version=None) == 1
    assert await a.save_club("c1", b"made", expected_version=None) == 1
    assert await a.save_club("c1", b"changed", expected_version=1) == 2
    assert await a.save_club("c1", b"changed", expected_version=1) == 2
    with pytest.raises(Conflict):
        await a.save_club("c1", b"something else", expected_version=1)
    assert await a.load_club("c1") == (b"changed", 2)


async def test_concurrent_saves_from_one_version_let_exactly_one_through(cluster: Cluster) -> None:
    nodes = [cluster.node() for _ in range(4)]
    await nodes[0].save_club("c1", b"v1", expected_version=None)
    results = await asyncio.gather(
        *(n.save_club("c1", f"from node {i}".encode(), expected_version=1) for i, n in enumerate(nodes)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if r == 2) == 1
    assert sum(1 for r in results if isinstance(r, Conflict)) == 3
    winner = results.index(2)
    assert await nodes[1].load_club("c1") == (f"from node {winner}".encode(), 2)


async def test_every_saved_club_is_listed_once(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    for club_id in ("zeta", "alpha", "mid"):
        await a.save_club(club_id, b"x", expected_version=None)
    await a.save_club("alpha", b"y", expected_version=1)
    with pytest.raises(Conflict):
        await b.save_club("never", b"x", expected_version=3)
    assert await b.list_clubs() == ["alpha", "mid", "zeta"]


@pytest.mark.parametrize("version", [0, -1])
async def test_a_club_version_starts_at_one(cluster: Cluster, version: int) -> None:
    with pytest.raises(ValueError):
        await cluster.node().save_club("c1", b"x", expected_version=version)


# --- node messaging ------------------------------------------------------------------------------


async def test_an_inbox_gets_one_senders_messages_in_order(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    async with await b.open_inbox("node-b") as inbox:
        sent = [f"message {i}".encode() for i in range(1000)]
        for message in sent:  # the first one right after open_inbox returned: it is subscribed
            await a.send("node-b", message)
        assert await receive(inbox, 1000) == sent


async def test_a_message_to_a_node_without_an_inbox_is_dropped(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    await a.send("node-b", b"nobody is listening")
    async with await b.open_inbox("node-b") as inbox:
        await a.send("node-b", b"after open")
        assert await receive(inbox, 1) == [b"after open"]
    await a.send("node-b", b"closed again")  # still no error


async def test_each_node_reads_only_its_own_inbox(cluster: Cluster) -> None:
    a, b, sender = cluster.node(), cluster.node(), cluster.node()
    async with await a.open_inbox("node-a") as inbox_a, await b.open_inbox("node-b") as inbox_b:
        await sender.send("node-a", b"to a, 1")
        await sender.send("node-b", b"to b, 1")
        await sender.send("node-a", b"to a, 2")
        assert await receive(inbox_a, 2) == [b"to a, 1", b"to a, 2"]
        assert await receive(inbox_b, 1) == [b"to b, 1"]
        await sender.send("node-b", b"to b, 2")
        assert await receive(inbox_b, 1) == [b"to b, 2"], "nothing of a's came in between"


async def test_every_open_inbox_of_a_node_gets_a_copy(cluster: Cluster) -> None:
    a, b, sender = cluster.node(), cluster.node(), cluster.node()
    async with await a.open_inbox("node-x") as first, await b.open_inbox("node-x") as second:
        await sender.send("node-x", b"hello")
        assert await receive(first, 1) == await receive(second, 1) == [b"hello"]


async def test_an_inbox_left_unread_past_its_limit_fails_after_what_it_holds(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node(inbox_limit=5)
    async with await b.open_inbox("node-b") as inbox:
        sent = [f"message {i}".encode() for i in range(8)]
        for message in sent:
            await a.send("node-b", message)  # the sender is never held back by a slow reader
        await wait_broken(inbox)
        assert await receive(inbox, 5) == sent[:5], "what it received before the overflow, in order"
        with pytest.raises(BackendUnavailable):
            await anext(inbox)
        with pytest.raises(StopAsyncIteration):
            await anext(inbox)  # like a generator that raised: done; the node opens a new inbox
    async with await b.open_inbox("node-b") as again:
        await a.send("node-b", b"fresh")
        assert await receive(again, 1) == [b"fresh"]


async def test_closing_an_inbox_ends_its_reader(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    inbox = await b.open_inbox("node-b")
    received: list[bytes] = []

    async def consume() -> None:
        async for message in inbox:
            received.append(message)

    async with background(consume()) as task:
        await a.send("node-b", b"one")
        await eventually(lambda: received == [b"one"], timeout=5, interval=0.005)
        await inbox.aclose()
        async with asyncio.timeout(5):
            await task  # ends by itself, without an error
    await inbox.aclose()  # idempotent
    await a.send("node-b", b"to nobody")
    assert await b.ping(), "the backend is still open"


async def test_closing_the_backend_ends_its_inboxes(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    inbox = await b.open_inbox("node-b")

    async def consume() -> list[bytes]:
        return [message async for message in inbox]

    async with background(consume()) as task:
        await a.send("node-b", b"one")
        await b.close()
        async with asyncio.timeout(5):
            assert await task in ([], [b"one"])  # ends, without an error; unread messages dropped
    with pytest.raises(BackendClosed):
        await b.open_inbox("node-b")
    with pytest.raises(BackendClosed):
        await b.send("node-a", b"from a closed backend")
    await a.send("node-b", b"to nobody")  # the other nodes go on


# --- event log -----------------------------------------------------------------------------------


async def test_the_log_reads_in_order_after_any_seq(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    assert await b.last_seq(STAGE) == 0
    assert await b.read(STAGE) == []
    await append_all(a, 1, 2, 3, 4, 5)
    assert await b.read(STAGE) == entries(1, 2, 3, 4, 5)
    assert await b.read(STAGE, after_seq=2) == entries(3, 4, 5)
    assert await b.read(STAGE, after_seq=2, limit=2) == entries(3, 4)
    assert await b.read(STAGE, after_seq=5) == []
    assert await b.last_seq(STAGE) == 5
    assert await b.read("other") == [], "stages have separate logs"


async def test_an_append_out_of_order_is_refused_and_changes_nothing(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    await append_all(a, 1, 2, 3)
    for seq in (3, 2, 1):
        with pytest.raises(OutOfOrder):
            await b.append(STAGE, seq, b"another event")
    with pytest.raises(ValueError):
        await b.append(STAGE, 0, b"seq starts at 1")
    await b.append(STAGE, 2, b"event 2")  # a retry of an append that landed: accepted, no duplicate
    await b.append(STAGE, 3, b"event 3")
    assert await a.read(STAGE) == entries(1, 2, 3)
    await b.append(STAGE, 7, b"event 7")  # the owner numbers events; gaps are its business
    assert await a.last_seq(STAGE) == 7


async def test_a_real_event_survives_the_log_in_msgpack(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    comment = CommentView(id="c-1", author_id="p-1", author_name="Ana", text="Bonjour ✓", at=12.5)
    events: list[Event] = [
        CommentPosted(stage=STAGE, at=12.5, seq=1, comment=comment),
        StageEnded(stage=STAGE, at=13.0, seq=2),
    ]
    for event in events:
        await a.append(STAGE, event.seq, msgspec.msgpack.encode(event))
    decoder = msgspec.msgpack.Decoder(Union[EVENT_TYPES])  # noqa: UP007
    assert [decoder.decode(payload) for _, payload in await b.read(STAGE)] == events


async def test_the_log_keeps_about_max_entries(cluster: Cluster) -> None:
    a = cluster.node(max_log_entries=50)
    await append_all(a, *range(1, 301))
    kept = await a.read(STAGE, limit=1000)
    # XADD MAXLEN ~ trims whole stream nodes (100 entries each): at least 50 kept, never everything.
    assert 50 <= len(kept) <= 200
    assert kept == entries(*range(301 - len(kept), 301))
    assert await a.last_seq(STAGE) == 300


async def test_a_subscription_gets_the_past_then_live_appends_in_order(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    await append_all(a, 1, 2, 3)
    received: list[tuple[int, bytes]] = []

    async def consume() -> None:
        async for entry in b.subscribe(STAGE, after_seq=1):
            received.append(entry)

    async with background(consume()):
        await eventually(lambda: len(received) == 2, timeout=5, interval=0.005)
        for seq in range(4, 9):
            await cluster.wait_subscribed(STAGE)  # the subscription is waiting: this one is live
            await append_all(a, seq)
            await eventually(lambda: len(received) == seq - 1, timeout=5, interval=0.005)  # noqa: B023
        assert received == entries(2, 3, 4, 5, 6, 7, 8)


async def test_a_subscription_resumed_from_its_last_seq_misses_nothing(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    await append_all(a, 1, 2, 3)
    sub = b.subscribe(STAGE)
    first = await take(sub, 3)
    await sub.aclose()  # the consumer went away (a reconnecting node, a restarted recorder)
    await append_all(a, 4, 5, 6)

    last = first[-1][0]
    async with contextlib.aclosing(b.subscribe(STAGE, after_seq=last)) as again:
        assert await take(again, 3) == entries(4, 5, 6)
        async with background(take(again, 2)) as waiting:
            await cluster.wait_subscribed(STAGE)
            await append_all(a, 7, 8)
            assert await waiting == entries(7, 8)
    assert first == entries(1, 2, 3)


async def test_two_subscribers_on_two_nodes_see_the_same_order(cluster: Cluster) -> None:
    owner, x, y = cluster.node(), cluster.node(), cluster.node()
    async with (
        contextlib.aclosing(x.subscribe(STAGE)) as sub_x,
        contextlib.aclosing(y.subscribe(STAGE)) as sub_y,
    ):
        async with background(take(sub_x, 20)) as got_x, background(take(sub_y, 20)) as got_y:
            await cluster.wait_subscribed(STAGE, count=2)
            await append_all(owner, *range(1, 21))
            assert await got_x == await got_y == entries(*range(1, 21))


async def test_closing_the_backend_ends_its_subscriptions(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    received: list[tuple[int, bytes]] = []

    async def consume() -> None:
        async for entry in b.subscribe(STAGE):
            received.append(entry)

    async with background(consume()) as task:
        await cluster.wait_subscribed(STAGE)
        await b.close()
        async with asyncio.timeout(5):
            await task  # ends by itself, without an error
    assert received == []
    assert not await b.ping()
    with pytest.raises(BackendClosed):
        await b.read(STAGE)
    assert await a.ping(), "closing one node's backend leaves the others working"


# --- rate limits ---------------------------------------------------------------------------------


async def test_a_rate_limit_refuses_past_the_limit_and_says_when_to_retry(cluster: Cluster) -> None:
    a = cluster.node()
    window = 0.4
    assert await a.hit("comment:s1:ana", window, 3) == (True, 0.0)
    await cluster.advance(window / 2)
    for _ in range(2):
        assert await a.hit("comment:s1:ana", window, 3) == (True, 0.0)
    allowed, retry_after = await a.hit("comment:s1:ana", window, 3)
    assert not allowed and 0 < retry_after <= window / 2, "when the first hit leaves the window"
    assert (await a.hit("comment:s1:bo", window, 3))[0], "keys are independent"
    for _ in range(3):  # refused hits are not counted: retry_after does not move
        allowed, again = await a.hit("comment:s1:ana", window, 3)
        assert not allowed and again <= retry_after

    await cluster.advance(retry_after + 0.02)
    assert (await a.hit("comment:s1:ana", window, 3))[0], "the first hit left the window"
    allowed, retry_after = await a.hit("comment:s1:ana", window, 3)
    assert not allowed and retry_after < window / 2, "the window slid: the two later hits are still in it"


async def test_a_rate_limit_holds_across_nodes_hitting_at_once(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    results = await asyncio.gather(*(node.hit("join:s1", 10.0, 50) for node in (a, b) for _ in range(60)))
    assert sum(1 for allowed, _ in results if allowed) == 50
    assert all(retry > 0 for allowed, retry in results if not allowed)


@pytest.mark.parametrize(("window_s", "limit"), [(0.0, 1), (1.0, 0)])
async def test_a_rate_limit_needs_a_window_and_a_limit(cluster: Cluster, window_s: float, limit: int) -> None:
    with pytest.raises(ValueError):
        await cluster.node().hit("k", window_s, limit)


# --- bans and revocations ------------------------------------------------------------------------


async def test_a_ledger_head_is_kept_per_session_and_replaced_by_the_next(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    assert await b.ledger_head(STAGE, "rec-1") is None
    await a.put_ledger_head(STAGE, "rec-1", b'{"count":1}')
    await a.put_ledger_head(STAGE, "rec-2", b'{"count":5}')
    await a.put_ledger_head(STAGE, "rec-1", b'{"count":2}')
    assert await b.ledger_head(STAGE, "rec-1") == b'{"count":2}'
    assert await b.ledger_head(STAGE, "rec-2") == b'{"count":5}'
    assert await b.ledger_head("other", "rec-1") is None, "per stage"
    if cluster.redis_server is not None:
        with cluster.redis_server.admin() as admin:
            assert admin.hget(f"ms:{{stage:{STAGE}}}:ledger-heads", "rec-1") == b'{"count":2}'


async def test_bans_and_revocations_are_seen_by_every_node(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    assert not await b.is_banned(STAGE, "id-ana")
    await a.ban(STAGE, "id-ana", "spam")
    assert await b.is_banned(STAGE, "id-ana")
    assert not await b.is_banned("other", "id-ana"), "a ban is per stage"

    assert not await b.is_revoked("id-bo")
    await a.revoke("id-bo")
    assert await b.is_revoked("id-bo")
    assert not await b.is_revoked("id-ana")


async def test_a_lease_needs_a_ttl(cluster: Cluster) -> None:
    a = cluster.node()
    with pytest.raises(ValueError):
        await a.claim(STAGE, "node-a", "http://a", 0)
    with pytest.raises(ValueError):
        await a.heartbeat("node-a", 0)


# --- people ledger -----------------------------------------------------------------------------


async def test_the_people_ledger_appends_once_and_in_order_across_nodes(cluster: Cluster) -> None:
    a, b = cluster.node(), cluster.node()
    assert await a.people_count() == 0 and await a.people_read() == []
    assert await a.people_append(0, b"first")
    assert not await b.people_append(0, b"b's first"), "index 0 is taken: b must re-read and re-chain"
    assert await a.people_append(0, b"first"), "a retry of an append that landed is accepted"
    assert not await b.people_append(2, b"a gap"), "no gap"
    assert await b.people_append(1, b"second")
    assert await a.people_count() == 2
    assert await a.people_read() == [(0, b"first"), (1, b"second")]
    assert await b.people_read(1) == [(1, b"second")]
    assert await b.people_read(0, limit=1) == [(0, b"first")]
    assert await b.people_read(5) == []
    # Two nodes racing for the same index: exactly one wins.
    won = await asyncio.gather(*(n.people_append(2, f"from {i}".encode()) for i, n in enumerate([a, b] * 4)))
    assert won.count(True) == 1
    assert len(await a.people_read()) == 3
    with pytest.raises(ValueError):
        await a.people_append(-1, b"x")
