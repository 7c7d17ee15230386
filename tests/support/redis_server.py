"""A real ``redis-server`` on a free loopback port, for any test package that needs one.

``running_redis(directory)`` starts one for a block; ``RedisServer`` can also be killed (SIGKILL),
paused (SIGSTOP: a host that vanished without closing its sockets) and restarted on the same port.
With ``persistent=True`` it writes an append-only file with ``appendfsync always`` in its directory,
so a SIGKILL and a restart on the same directory keep every write Redis acknowledged.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.conftest import free_port


def _die_with_parent() -> None:
    """In the child: SIGTERM when pytest dies without its teardown (killed by a timeout), so no
    redis-server outlives the run. Linux PR_SET_PDEATHSIG; elsewhere teardown alone stops it."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class RedisServer:
    """``redis-server`` in ``directory``, started and stopped by PID; keeps its port across restarts."""

    def __init__(self, directory: Path, port: int | None = None, *, persistent: bool = False) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def admin(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> None:
        """Start (or restart after ``stop``/``kill``) on the same port; returns once it answers PING,
        which with ``persistent`` is after it has loaded its append-only file."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        )
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                *persistence,
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
            except redis.ConnectionError:  # refused, or BusyLoadingError while it reads its AOF
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 5 s); a no-op when it is not running."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server would not act on SIGTERM
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; the kernel closes its sockets (clients see EOF)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()

    def pause(self) -> None:
        """SIGSTOP: its sockets stay open and silent, like a host that vanished from the network."""
        assert self.proc is not None, "not running"
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None, "not running"
        self.proc.send_signal(signal.SIGCONT)


@contextlib.contextmanager
def running_redis(directory: Path, *, persistent: bool = False) -> Iterator[RedisServer]:
    """A started ``RedisServer`` in ``directory`` (e.g. pytest's ``tmp_path``), stopped after the block."""
    server = RedisServer(directory, persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()
