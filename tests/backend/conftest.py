"""A real redis-server on a free loopback port, and "clusters" of backends that share one store.

A cluster is what several nodes see: for Redis, backends on the same server; for memory, backends on
the same ``MemoryStore``. ``advance`` lets time pass: the memory store's clock moves, Redis sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from server.backend import Backend, MemoryBackend, MemoryStore, RedisBackend
from tests.conftest import free_port
from tests.support.waiting import eventually

T = TypeVar("T")


def _die_with_parent() -> None:
    """In the child: SIGTERM when pytest dies without its teardown (killed by a timeout), so no
    redis-server outlives the run. Linux PR_SET_PDEATHSIG; elsewhere teardown alone stops it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class RedisServer:
    """``redis-server`` without persistence, started and stopped by PID."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def admin(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", str(self.directory / f"redis-{self.port}.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with self.admin() as client:
                    if client.ping():
                        return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


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

    def node(self, *, max_log_entries: int | None = None) -> Backend:
        """One more node; ``max_log_entries`` gives it (memory: and a fresh store) that log limit."""
        backend: Backend
        if self.redis_server is not None:
            extra = {} if max_log_entries is None else {"max_log_entries": max_log_entries}
            backend = RedisBackend(self.redis_server.url, name=f"medstage-test-{len(self.nodes)}", **extra)
        else:
            if self.store is None or max_log_entries is not None:
                kwargs = {} if max_log_entries is None else {"max_log_entries": max_log_entries}
                self.store = MemoryStore(clock=self.clock, **kwargs)
            backend = MemoryBackend(self.store)
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
