"""Shared fixtures: a real node process on a free loopback port, started and stopped per test.

The whole suite runs on uvloop, the loop ``python -m server`` runs on: some bugs only show there
(``loop.call_later`` returns a plain ``Handle`` for sub-millisecond delays, for one). Setting the
policy here, before any loop exists, covers pytest-asyncio's loops and every ``asyncio.run``."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvloop

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningNode:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def metrics(self) -> dict[str, float]:
        """The node's Prometheus samples without labels, e.g. ``medstage_rtp_packets_sent_total``."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_node(tmp_path: Path, env: dict[str, str] | None = None) -> RunningNode:
    port = free_port()
    log_path = tmp_path / f"node-{port}.log"
    full_env = {
        # Stages that may record ask everyone for consent first; tests about recording say so.
        "MEDSTAGE_RECORDING_MODE": "off",
        # Viewers' connections in two media worker processes (media/workers.py), as on a 2-core
        # machine by default: every media test crosses the forwarding link unless it says otherwise.
        "MEDSTAGE_MEDIA_WORKERS": "2",
        **os.environ,
        "MEDSTAGE_ICE_ADDRESSES": "127.0.0.1",
        "MEDSTAGE_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    node = RunningNode(proc, port, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"node exited with {proc.returncode}:\n{node.log()}")
        try:
            with urllib.request.urlopen(node.url + "/healthz", timeout=1) as response:
                if response.status == 200:
                    return node
        except OSError:
            time.sleep(0.05)
    node.stop()
    raise RuntimeError(f"node did not become healthy:\n{node.log()}")


def _run(tmp_path: Path) -> Iterator[RunningNode]:
    running = start_node(tmp_path)
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"node exited with {code}:\n{running.log()[-4000:]}"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[RunningNode]:
    """A fresh node for one test."""
    yield from _run(tmp_path)


@pytest.fixture(scope="module")
def module_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    """One node shared by a module's tests (each test uses its own stage ids)."""
    yield from _run(tmp_path_factory.mktemp("node"))


@pytest.fixture
def rec_root(tmp_path: Path) -> Path:
    """Where ``recording_node`` writes its recordings."""
    return tmp_path / "recordings"


@pytest.fixture
def recording_node(tmp_path: Path, rec_root: Path) -> Iterator[RunningNode]:
    """A fresh node that records on request (manual mode) into ``rec_root``."""
    running = start_node(
        tmp_path, {"MEDSTAGE_RECORDING_MODE": "manual", "MEDSTAGE_RECORDINGS_DIR": str(rec_root)}
    )
    try:
        yield running
    finally:
        code = running.stop()
        # -SIGKILL: a test that killed the node on purpose (crash safety)
        assert code in (0, -signal.SIGKILL), f"node exited with {code}:\n{running.log()[-4000:]}"
