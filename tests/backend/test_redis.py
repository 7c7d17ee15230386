"""Redis only: the key layout, and what a network gives that memory does not (lost connections,
a restarted, killed or silent server, retried commands, cancellation racing a reply)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from redis.crc import key_slot

from server.backend import BackendError, BackendUnavailable, OutOfOrder, RedisBackend, keys
from tests.backend.conftest import background
from tests.backend.test_backend import append_all, entries, receive, take
from tests.support.redis_server import RedisServer, running_redis
from tests.support.waiting import eventually

STAGE = "s1"


Make = Callable[..., RedisBackend]


@pytest.fixture
async def make(redis_server: RedisServer) -> AsyncIterator[Make]:
    """``make(name=..., **options)``: a backend on the shared server, closed after the test."""
    made: list[RedisBackend] = []
    with redis_server.admin() as admin:
        admin.flushall()

    def factory(**kwargs: Any) -> RedisBackend:
        backend = RedisBackend(redis_server.url, **kwargs)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.close()


def blocked_readers(server: RedisServer, name: str) -> list[int]:
    """Ids of ``name``'s connections blocked in XREAD."""
    with server.admin() as admin:
        return [
            int(c["id"])
            for c in admin.client_list()
            if c["name"] == name and c["cmd"] == "xread" and "b" in c["flags"]
        ]


def test_a_stages_keys_share_one_cluster_slot() -> None:
    stage_keys = [
        keys.owner(STAGE),
        keys.presence(STAGE),
        keys.log(STAGE),
        keys.state(STAGE),
        keys.bans(STAGE),
    ]
    assert stage_keys == [
        "ms:{stage:s1}:owner",
        "ms:{stage:s1}:presence",
        "ms:{stage:s1}:log",
        "ms:{stage:s1}:state",
        "ms:{stage:s1}:bans",
    ]
    assert len({key_slot(k.encode()) for k in stage_keys}) == 1
    assert key_slot(keys.log("s2").encode()) != key_slot(keys.log(STAGE).encode())
    assert [keys.node("n1"), keys.inbox("n1")] == ["ms:{node:n1}:alive", "ms:{node:n1}:inbox"]
    assert [keys.club("c1"), keys.clubs()] == ["ms:{club:c1}", "ms:clubs"]


async def test_a_club_is_a_hash_of_its_version_and_payload_and_listed_in_a_set(
    redis_server: RedisServer, make: Make
) -> None:
    backend = make()
    await backend.save_club("c1", b"\x00payload", expected_version=None)
    await backend.save_club("c1", b"\x00payload 2", expected_version=1)
    with redis_server.admin() as admin:
        assert admin.hgetall("ms:{club:c1}") == {b"v": b"2", b"data": b"\x00payload 2"}
        assert admin.smembers("ms:clubs") == {b"c1"}
        admin.srem("ms:clubs", "c1")  # as if the SADD after the script had been lost
    assert await backend.list_clubs() == []
    await backend.save_club("c1", b"payload 3", expected_version=2)
    assert await backend.list_clubs() == ["c1"], "the next save lists it again"


async def test_log_entries_are_stream_entries_with_the_seq_as_id(
    redis_server: RedisServer, make: Make
) -> None:
    backend = make()
    await backend.append(STAGE, 1, msgpack.packb({"type": "stage.ended"}))
    with redis_server.admin() as admin:
        [(entry_id, fields)] = admin.xrange(keys.log(STAGE))
    assert entry_id == b"1-0" and msgpack.unpackb(fields[b"e"]) == {"type": "stage.ended"}


async def test_a_subscription_resumes_after_its_connection_is_killed(
    redis_server: RedisServer, make: Make
) -> None:
    writer = make(name="medstage-writer")
    reader = make(name="medstage-reader")
    await append_all(writer, 1, 2, 3)
    async with contextlib.aclosing(reader.subscribe(STAGE)) as sub:
        assert await take(sub, 3) == entries(1, 2, 3)
        async with background(take(sub, 3)) as rest:
            await eventually(lambda: bool(blocked_readers(redis_server, "medstage-reader")), timeout=5)
            [before] = blocked_readers(redis_server, "medstage-reader")
            with redis_server.admin() as admin:
                killed = admin.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 2, "the reader's connection and the writer's"

            await eventually(lambda: bool(blocked_readers(redis_server, "medstage-reader")), timeout=5)
            assert blocked_readers(redis_server, "medstage-reader") != [before], "it reconnected"
            await append_all(writer, 4, 5, 6)  # the writer's pooled connection was killed too
            assert await rest == entries(4, 5, 6), "from where it was: nothing skipped, nothing twice"
    assert await writer.read(STAGE) == entries(1, 2, 3, 4, 5, 6)


async def test_a_redis_restart_is_an_outage_then_everything_resumes(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    writer = RedisBackend(server.url, name="medstage-writer", command_timeout=1.0)
    reader = RedisBackend(server.url, name="medstage-reader")
    try:
        await append_all(writer, 1, 2, 3)
        async with contextlib.aclosing(reader.subscribe(STAGE)) as sub:
            assert await take(sub, 3) == entries(1, 2, 3)
            async with background(take(sub, 2)) as rest:
                await eventually(lambda: bool(blocked_readers(server, "medstage-reader")), timeout=5)

                server.stop()
                assert not await writer.ping()
                with pytest.raises(BackendUnavailable):
                    await writer.append(STAGE, 4, b"event 4")  # the caller keeps it and writes it later
                with pytest.raises(BackendUnavailable):
                    await writer.claim(STAGE, "node-a", "http://a", 1000)

                server.start()  # same port, empty: no persistence in these tests
                await eventually(lambda: bool(blocked_readers(server, "medstage-reader")), timeout=5)
                assert await writer.ping()
                await append_all(writer, 4, 5)
                assert await rest == entries(4, 5)
        assert await writer.claim(STAGE, "node-a", "http://a", 1000) is not None
    finally:
        await writer.close()
        await reader.close()
        server.stop()


async def test_cancelling_a_subscription_always_ends_it(redis_server: RedisServer, make: Make) -> None:
    """Whenever the cancellation lands (connecting, sending, blocked), the consumer stops: redis-py's
    wait_for path swallowed some on Python 3.11 and the subscription read on for ever."""
    reader = make(block_ms=500)

    async def consume() -> None:
        async for _ in reader.subscribe(STAGE):
            pass

    for i in range(200):
        task = asyncio.create_task(consume())
        for _ in range(i % 10):
            await asyncio.sleep(0)
        task.cancel()
        async with asyncio.timeout(2):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert task.cancelled(), f"iteration {i}: the subscription ended without being cancelled"


async def test_a_retried_claim_or_hit_recognises_its_first_attempt(
    redis_server: RedisServer, make: Make
) -> None:
    """The scripts are what redis-py re-runs when a reply is lost: the second run must say what the
    first did (we hold the stage; the hit was allowed), not the opposite."""
    backend = make()
    value = msgpack.packb(["node-a", "http://a", "token-1"])
    owner = [keys.owner(STAGE)]
    assert await backend._claim(keys=owner, args=[value, 1000]) == 1
    assert await backend._claim(keys=owner, args=[value, 1000]) == 1, "a retry of the claim that landed"
    other = msgpack.packb(["node-b", "http://b", "token-2"])
    assert await backend._claim(keys=owner, args=[other, 1000]) == 0

    rate = [keys.rate("join:s1")]
    assert (await backend._hit(keys=rate, args=[10_000_000, 1, b"hit-1"]))[0] == 1
    assert (await backend._hit(keys=rate, args=[10_000_000, 1, b"hit-1"]))[0] == 1, "a retry"
    assert (await backend._hit(keys=rate, args=[10_000_000, 1, b"hit-2"]))[0] == 0, "a new hit"


async def test_other_refusals_are_backend_errors_not_out_of_order(
    redis_server: RedisServer, make: Make
) -> None:
    backend = make()
    with redis_server.admin() as admin:
        admin.set(keys.log(STAGE), b"not a stream")
    with pytest.raises(BackendError) as refused:
        await backend.append(STAGE, 1, b"event 1")
    assert not isinstance(refused.value, OutOfOrder) and "WRONGTYPE" in str(refused.value)


# --- inboxes: a lost connection is an error, never a silent gap -----------------------------------


def inbox_subscribers(server: RedisServer, node_id: str) -> int:
    with server.admin() as admin:
        [(_channel, count)] = admin.pubsub_numsub(keys.inbox(node_id))
    return int(count)


async def test_an_inbox_fails_at_once_when_redis_is_killed_and_a_new_one_works_after_restart(
    tmp_path: Path,
) -> None:
    clock = asyncio.get_running_loop().time
    with running_redis(tmp_path) as server:
        sender = RedisBackend(server.url, name="medstage-sender", command_timeout=1.0)
        node = RedisBackend(server.url, name="medstage-node", command_timeout=1.0)
        try:
            inbox = await node.open_inbox("node-b")
            await sender.send("node-b", b"before")
            assert await receive(inbox, 1) == [b"before"]

            server.kill()
            killed_at = clock()
            with pytest.raises(BackendUnavailable):
                async with asyncio.timeout(5):
                    await anext(inbox)
            assert clock() - killed_at < 1.0, "the closed socket is seen at once, not at the next ping"
            with pytest.raises(BackendUnavailable):
                await sender.send("node-b", b"lost")
            with pytest.raises(BackendUnavailable):
                await node.open_inbox("node-b")

            server.start()  # same port, empty
            async with await node.open_inbox("node-b") as again:
                await sender.send("node-b", b"after")
                assert await receive(again, 1) == [b"after"]
            await inbox.aclose()
        finally:
            await sender.close()
            await node.close()


async def test_an_inbox_whose_connection_is_killed_fails_instead_of_resubscribing(
    redis_server: RedisServer, make: Make
) -> None:
    """redis-py would reconnect and re-subscribe by itself, hiding the messages lost meanwhile."""
    node, sender = make(name="medstage-node"), make(name="medstage-sender")
    inbox = await node.open_inbox("node-b")
    assert inbox_subscribers(redis_server, "node-b") == 1
    with redis_server.admin() as admin:
        assert admin.client_kill_filter(_type="pubsub") == 1
    with pytest.raises(BackendUnavailable):
        async with asyncio.timeout(5):
            await anext(inbox)
    assert inbox_subscribers(redis_server, "node-b") == 0
    await sender.send("node-b", b"nobody is listening now")  # Redis is fine: only the inbox was lost
    await inbox.aclose()


async def test_a_silent_redis_fails_an_inbox_within_two_ping_intervals(tmp_path: Path) -> None:
    """A host that vanishes sends no FIN: only the inbox's own PING notices."""
    clock = asyncio.get_running_loop().time
    with running_redis(tmp_path) as server:
        node = RedisBackend(server.url, name="medstage-node", inbox_ping_s=0.2)
        try:
            inbox = await node.open_inbox("node-b")
            server.pause()
            paused_at = clock()
            try:
                with pytest.raises(BackendUnavailable, match="PING"):
                    async with asyncio.timeout(5):
                        await anext(inbox)
                assert clock() - paused_at < 0.2 * 2 + 0.6, "two ping intervals, not TCP's minutes"
            finally:
                server.resume()
            await inbox.aclose()
        finally:
            await node.close()


async def test_an_idle_inbox_on_a_healthy_redis_stays_open(redis_server: RedisServer, make: Make) -> None:
    node, sender = make(inbox_ping_s=0.2), make()
    async with await node.open_inbox("node-b") as inbox:
        await asyncio.sleep(1.0)  # five ping intervals of silence: each PING is answered
        await sender.send("node-b", b"still here")
        assert await receive(inbox, 1) == [b"still here"]


async def test_cancelling_open_inbox_leaves_no_subscription(redis_server: RedisServer, make: Make) -> None:
    node = make(name="medstage-opener")
    for i in range(100):
        task = asyncio.create_task(node.open_inbox("node-b"))
        for _ in range(i % 10):
            await asyncio.sleep(0)
        task.cancel()
        async with asyncio.timeout(2):
            await asyncio.wait([task])
        if not task.cancelled():  # it was done before the cancellation landed
            await task.result().aclose()

    def pubsub_clients() -> list[dict[str, Any]]:
        with redis_server.admin() as admin:
            return [c for c in admin.client_list() if c["name"] == "medstage-opener" and "P" in c["flags"]]

    await eventually(lambda: not pubsub_clients(), timeout=5)
    assert inbox_subscribers(redis_server, "node-b") == 0


# --- a persistent server (tests/support/redis_server.py) ------------------------------------------


async def test_a_persistent_redis_keeps_acknowledged_writes_across_sigkill(tmp_path: Path) -> None:
    with running_redis(tmp_path, persistent=True) as server:
        backend = RedisBackend(server.url, command_timeout=2.0)
        try:
            lease = await backend.claim(STAGE, "node-a", "http://a", 60_000)
            assert lease is not None
            await append_all(backend, *range(1, 201))
            await backend.save_state(STAGE, b"snapshot at 200", lease=lease)

            server.kill()  # no shutdown, no final save: only what was fsynced survives
            server.start()
            assert await backend.read(STAGE, limit=1000) == entries(*range(1, 201))
            assert await backend.load_state(STAGE) == b"snapshot at 200"
            owner = await backend.owner(STAGE)
            assert owner is not None and owner.node_id == "node-a"
        finally:
            await backend.close()
