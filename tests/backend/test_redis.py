"""Redis only: the key layout, and what a network gives that memory does not (lost connections,
a restarted server, retried commands, cancellation racing a reply)."""

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
from tests.backend.conftest import RedisServer, background
from tests.backend.test_backend import append_all, entries, take
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
    stage_keys = [keys.owner(STAGE), keys.presence(STAGE), keys.log(STAGE), keys.bans(STAGE)]
    assert stage_keys == [
        "ms:{stage:s1}:owner",
        "ms:{stage:s1}:presence",
        "ms:{stage:s1}:log",
        "ms:{stage:s1}:bans",
    ]
    assert len({key_slot(k.encode()) for k in stage_keys}) == 1
    assert key_slot(keys.log("s2").encode()) != key_slot(keys.log(STAGE).encode())


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
