"""Figures for the data-rights foundation (issue 15): a people ledger append (compare-and-append on the
backend, fsynced file write, signed head) on the embedded backend and on a real redis-server, a key
store get-or-create on each store, and seal/open of 1 MiB with AES-256-GCM.

    python3 bench/people.py [--appends 200]

Prints one JSON object: medians and 95th percentiles in milliseconds. Everything runs in this process
(the ledger's files in a temporary directory on the disk of the working directory's file system)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from common import ROOT, kill_all_children, machine, start_redis, stop

from recording.keys import FileKeyStore, KeyStore, new_key, open_, seal
from recording.signing import NodeKey
from server.auth import Authenticator
from server.backend import Backend, MemoryBackend, RedisBackend
from server.backend.redis_keys import RedisKeyStore
from server.host.people import People

AUTH = Authenticator({"k": "k" * 40})
PLATFORM = AUTH.verify(AUTH.mint("ops", admin=True))


def figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3),
    }


async def timed(n: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - t0)
    return samples


async def ledger_appends(backend: Backend, directory: Path, keys: KeyStore, n: int) -> dict[str, float]:
    key = NodeKey.load_or_create(directory / "keys" / "ledger-ed25519.key")
    people = People(backend, directory / "people", lambda: key, keys, lambda kind, data: None, time.time)
    samples = await timed(n, lambda i: people.nominate(PLATFORM, f"person-{i}", f"nominee-{i}"))
    return figures(samples)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--appends", type=int, default=200)
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": machine(), "appends": args.appends}
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        base = Path(tmp)
        memory = MemoryBackend()
        file_keys = FileKeyStore(base / "memory" / "keys" / "people")
        out["ledger_append_memory"] = await ledger_appends(memory, base / "memory", file_keys, args.appends)
        out["key_get_or_create_file"] = figures(
            await timed(args.appends, lambda i: file_keys.get_or_create(f"k-{i}", 0.0))
        )
        redis = await start_redis(base, "people")
        try:
            backend = RedisBackend(redis.url)
            redis_keys = RedisKeyStore(backend)
            out["ledger_append_redis"] = await ledger_appends(
                backend, base / "redis", redis_keys, args.appends
            )
            out["key_get_or_create_redis"] = figures(
                await timed(args.appends, lambda i: redis_keys.get_or_create(f"k-{i}", 0.0))
            )
            await backend.close()
        finally:
            await stop(redis.proc)
    key, blob = new_key("x", 0.0), bytes(1 << 20)
    seals: list[float] = []
    for _ in range(50):
        t0 = time.perf_counter()
        envelope = seal(key, blob, b"aad")
        seals.append(time.perf_counter() - t0)
    opens = []
    for _ in range(50):
        t0 = time.perf_counter()
        open_(key, envelope, b"aad")
        opens.append(time.perf_counter() - t0)
    out["seal_1mib"], out["open_1mib"] = figures(seals), figures(opens)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        kill_all_children()
