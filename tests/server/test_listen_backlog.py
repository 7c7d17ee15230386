"""A join wave's connections are all queued for accept: 1,000 at once lose no SYN (listen_backlog)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import resource
from pathlib import Path

from tests.conftest import RunningNode


def listen_drops() -> int:
    """TcpExt ListenDrops of this network namespace (the tests run in their own)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    names, values = next(
        (a.split(), b.split())
        for a, b in itertools.pairwise(lines)
        if a.startswith("TcpExt:") and b.startswith("TcpExt:")
    )
    return int(values[names.index("ListenDrops")])


async def test_a_thousand_connections_at_once_are_all_queued(node: RunningNode) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    before = listen_drops()
    writers = []
    try:
        results = await asyncio.gather(
            *(asyncio.open_connection("127.0.0.1", node.port) for _ in range(1000)), return_exceptions=True
        )
        writers = [w for r in results if not isinstance(r, BaseException) for w in r[1:]]
        assert len(writers) == 1000
        assert listen_drops() - before == 0, "SYNs of a burst were dropped: the listen backlog is too small"
    finally:
        for w in writers:
            with contextlib.suppress(Exception):
                w.close()
