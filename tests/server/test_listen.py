"""Where a node listens (issue 11, item 8): in development mode (no API keys) anyone who reaches the node
may mint a token for any role, so unless a host is set it listens on loopback only, and says so.

The process tests start ``python -m server`` without ``--host`` and read the kernel's table of listening
sockets (``/proc/net/tcp``): what the node actually bound, not what it printed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from server.config import load
from tests.conftest import ROOT, free_port

API_KEYS = "k1:" + "s" * 32


def test_development_mode_listens_on_loopback_unless_told() -> None:
    assert load(env={}).listen_host == "127.0.0.1"
    assert load(env={"MEDSTAGE_HOST": "0.0.0.0"}).listen_host == "0.0.0.0"
    assert load(env={}, overrides={"host": "0.0.0.0"}).listen_host == "0.0.0.0"


def test_a_node_with_api_keys_keeps_listening_on_every_address() -> None:
    assert load(env={"MEDSTAGE_API_KEYS": API_KEYS}).listen_host == "0.0.0.0"
    assert load(env={"MEDSTAGE_API_KEYS": API_KEYS, "MEDSTAGE_HOST": "127.0.0.2"}).listen_host == "127.0.0.2"


def test_a_host_in_the_config_file_counts_as_set(tmp_path: Path) -> None:
    path = tmp_path / "medstage.toml"
    path.write_text('host = "0.0.0.0"\n')
    assert load(str(path), env={}).listen_host == "0.0.0.0"


def listening_on(port: int) -> set[str]:
    """The IPv4 addresses with a socket listening on ``port`` (``/proc/net/tcp``, state 0A = LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))  # little-endian in the table
    return found


@contextmanager
def node_process(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[tuple[int, str]]:
    """``python -m server --port P *args``; yields (P, its start-up line) once it printed it."""
    port = free_port()
    full_env = {
        **os.environ,
        "MEDSTAGE_RECORDING_MODE": "off",
        "MEDSTAGE_ICE_ADDRESSES": "127.0.0.1",
        "MEDSTAGE_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    for name in ("MEDSTAGE_HOST", "MEDSTAGE_API_KEYS", "MEDSTAGE_CONFIG"):
        if env is None or name not in env:
            full_env.pop(name, None)
    out = tmp_path / f"node-{port}.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--port", str(port), *args],
            cwd=ROOT,
            env=full_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            text = out.read_text(errors="replace")
            line = next((x for x in text.splitlines() if x.startswith("medstage is running")), None)
            if line is not None:
                break
            assert proc.poll() is None, f"node exited with {proc.returncode}:\n{text}"
            assert time.monotonic() < deadline, f"no start-up line in 30 s:\n{text}"
            time.sleep(0.05)
        yield port, line
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_development_node_started_without_a_host_binds_loopback_only(tmp_path: Path) -> None:
    with node_process(tmp_path) as (port, line):
        assert listening_on(port) == {"127.0.0.1"}
        assert "development mode: listening on 127.0.0.1 only" in line, line
        assert "--host 0.0.0.0" in line, "the line says how to open it to the network"


def test_a_development_node_given_a_host_binds_it_and_warns(tmp_path: Path) -> None:
    with node_process(tmp_path, "--host", "0.0.0.0") as (port, line):
        assert listening_on(port) == {"0.0.0.0"}
        assert "development mode on 0.0.0.0: anyone who reaches it can mint tokens" in line, line
    with node_process(tmp_path, env={"MEDSTAGE_HOST": "0.0.0.0"}) as (port, line):
        assert listening_on(port) == {"0.0.0.0"}


@pytest.mark.parametrize("how", ["env", "file"])
def test_a_node_with_api_keys_binds_every_address_by_default(tmp_path: Path, how: str) -> None:
    if how == "env":
        started = node_process(tmp_path, env={"MEDSTAGE_API_KEYS": API_KEYS})
    else:
        config = tmp_path / "medstage.toml"
        config.write_text(f'api_keys = "{API_KEYS}"\n')
        started = node_process(tmp_path, "--config", str(config))
    with started as (port, line):
        assert listening_on(port) == {"0.0.0.0"}
        assert "listening on 0.0.0.0" in line and "development" not in line, line
