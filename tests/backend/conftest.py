"""A real redis-server for the package (tests/support/redis_server.py), and "clusters" of backends
that share one store.

A cluster is what several nodes see: for Redis, backends on the same server; for memory, backends on
the same ``MemoryStore``. ``advance`` lets time pass: the memory store's clock moves, Redis sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from server.backend import Backend, Inbox, MemoryBackend, MemoryStore, RedisBackend
from server.backend.inbox import QueuedInbox
from tests.support.redis_server import RedisServer, running_redis
from tests.support.waiting import eventually

T = TypeVar("T")


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """Run ``coro`` as a task owned by the block: cancelled and awaited when the block ends."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.wait([task])  # its outcome, if the test did not look at it, is not this block's


@pytest.fixture(scope="package")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0  # small: float steps stay exact enough to compare with a window

    def __call__(self) -> float:
        return self.now


@dataclass
class Cluster:
    """Backends that share one store, as nodes do."""

    kind: str
    redis_server: RedisServer | None = None
    clock: FakeClock = field(default_factory=FakeClock)
    nodes: list[Backend] = field(default_factory=list)
    store: MemoryStore | None = None

    def node(self, *, max_log_entries: int | None = None, inbox_limit: int | None = None) -> Backend:
        """One more node; ``max_log_entries`` gives it (memory: and a fresh store) that log limit,
        ``inbox_limit`` that bound on its inboxes."""
        backend: Backend
        inbox = {} if inbox_limit is None else {"inbox_limit": inbox_limit}
        if self.redis_server is not None:
            extra = {} if max_log_entries is None else {"max_log_entries": max_log_entries}
            backend = RedisBackend(
                self.redis_server.url, name=f"medstage-test-{len(self.nodes)}", **extra, **inbox
            )
        else:
            if self.store is None or max_log_entries is not None:
                kwargs = {} if max_log_entries is None else {"max_log_entries": max_log_entries}
                self.store = MemoryStore(clock=self.clock, **kwargs)
            backend = MemoryBackend(self.store, **inbox)
        self.nodes.append(backend)
        return backend

    async def advance(self, seconds: float) -> None:
        """Let time pass: for Redis there is no other way than to wait for it."""
        if self.redis_server is not None:
            await asyncio.sleep(seconds)
        else:
            self.clock.now += seconds

    async def wait_subscribed(self, stage_id: str, count: int = 1) -> None:
        """Until ``count`` subscriptions of the stage are waiting for new entries."""
        if self.redis_server is None:
            store = self.store
            assert store is not None
            await eventually(lambda: len(store.log(stage_id).waiters) >= count, timeout=5, interval=0.005)
            return
        with self.redis_server.admin() as admin:

            def blocked() -> bool:
                clients = admin.client_list()
                return sum(1 for c in clients if c["cmd"] == "xread" and "b" in c["flags"]) >= count

            await eventually(blocked, timeout=5, interval=0.01)


async def wait_broken(inbox: Inbox) -> None:
    """Until the inbox receives nothing more (lost or overflowed): Redis delivers on its own time."""
    assert isinstance(inbox, QueuedInbox)
    await eventually(lambda: inbox.broken, timeout=5, interval=0.005)


@pytest.fixture(params=["memory", "redis"])
async def cluster(request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        with server.admin() as admin:
            admin.flushall()
        made = Cluster("redis", redis_server=server)
    else:
        made = Cluster("memory")
    try:
        yield made
    finally:
        for backend in made.nodes:
            await backend.close()
