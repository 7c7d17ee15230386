"""GC policy A/B: a wave of full WebRTC viewers joining one node, then leaving, per GC configuration.

For each run and configuration (interleaved, so that each A/B pair shares the machine's load): a node
(``python -m server`` with the configuration's environment), a publisher (bench/loadgen.py), V
viewers (bench/loadgen.py, ICE + DTLS + SRTP, each waits for video), a quiet pause (the policy's
freeze pass), then every viewer leaves and a quiet pause (the full pass). Prints one Markdown row per
run: join time, node CPU, loop health in the join window and in the leave window (bench/loopstats.py).

    unshare --net sh -c 'ip link set lo up && exec python bench/gc_wave.py --viewers 80 --runs 2'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, cpu_seconds, create_stage, free_port, log, rss_bytes, spawn, stop, wait_ready
from loopstats import LoopStats, read, window

CONFIGS = {
    "python": {"MEDSTAGE_GC_FREEZE": "0", "MEDSTAGE_GC_GEN0_THRESHOLD": "0"},
    "freeze": {"MEDSTAGE_GC_FREEZE": "1", "MEDSTAGE_GC_GEN0_THRESHOLD": "0"},
    "gen0": {"MEDSTAGE_GC_FREEZE": "0", "MEDSTAGE_GC_GEN0_THRESHOLD": "10000"},
    "default": {},  # freeze + gen0 threshold 10000 (server/config.py)
}
HEADER = (
    "| config | viewers | all receiving | node CPU | join: lag p99 / longest | join: GC (full) | "
    "join: collections 0/1/2 | leave: longest | leave: GC (full) |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
)


async def _events(proc: asyncio.subprocess.Process, wanted: str, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while line := await proc.stdout.readline():
            event = json.loads(line)
            if event["event"] == wanted:
                return dict(event)
            if event["event"] == "error":
                log(f"loadgen: {event}")
    raise RuntimeError(f"loadgen ended before {wanted!r}")


async def _loadgen(base: str, *extra: str) -> asyncio.subprocess.Process:
    return await spawn(
        sys.executable,
        str(ROOT / "bench" / "loadgen.py"),
        "--url",
        base,
        "--stage",
        "wave",
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms"


def _row(name: str, viewers: int, join_s: float, cpu_s: float, wave: LoopStats, leave: LoopStats) -> str:
    counts = "/".join(str(int(wave.gc_collections.get(g, 0))) for g in "012")
    return (
        f"| {name} | {viewers} | {join_s:.1f} s | {cpu_s:.1f} s | "
        f"{_ms(wave.lag_p99_s)} / {_ms(wave.lag_max_s)} | {_ms(wave.gc_total_s)} ({_ms(wave.gc_full_s)}) | "
        f"{counts} | {_ms(leave.lag_max_s)} | "
        f"{_ms(leave.gc_total_s)} ({_ms(leave.gc_full_s)}) |"
    )


async def one(name: str, args: argparse.Namespace, logdir: Path) -> str:
    port = free_port()
    log_path = logdir / f"server-{name}-{port}.log"
    env = {
        **os.environ,
        "MEDSTAGE_ICE_ADDRESSES": "127.0.0.1",
        "MEDSTAGE_LOG_FORMAT": "json",
        "MEDSTAGE_GC_QUIET_S": str(args.quiet),
        "PYTHONUNBUFFERED": "1",
        **CONFIGS[name],
    }
    with log_path.open("wb") as out:
        cmd = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)]
        node = await spawn(*cmd, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    procs: list[asyncio.subprocess.Process] = []
    try:
        await wait_ready(node, base, log_path, "server")
        await create_stage(base, "wave")
        procs.append(await _loadgen(base, "--publish"))
        await _events(procs[0], "publishing", 60)
        await asyncio.sleep(args.quiet + 1)  # past the start-up: the window holds the wave only
        before, cpu0, t0 = await read(base), cpu_seconds(node.pid), time.monotonic()
        viewers = [
            await _loadgen(base, "--subscribers", str(size), "--prefix", f"v{i}", "--join-concurrency", "8")
            for i, size in enumerate(_split(args.viewers, args.per_process))
        ]
        procs += viewers
        await asyncio.gather(*(_events(p, "ready", 120 + args.viewers) for p in viewers))
        join_s, cpu_s = time.monotonic() - t0, cpu_seconds(node.pid) - cpu0
        wave = window(before, await read(base))
        await asyncio.sleep(args.quiet + 2)  # the freeze pass
        joined, rss = await read(base), rss_bytes(node.pid)
        for p in viewers:
            assert p.stdin is not None
            p.stdin.write(b"quit\n")
        await asyncio.gather(*(stop(p, grace=10) for p in viewers))
        await asyncio.sleep(args.quiet + 3)  # the full pass
        leave = window(joined, await read(base))
        log(f"{name}: RSS joined {rss / 2**20:.0f} MB; logs {log_path}")
        return _row(name, args.viewers, join_s, cpu_s, wave, leave)
    finally:
        await asyncio.gather(*(stop(p, grace=5) for p in procs if p.returncode is None))
        await stop(node, grace=10)


def _split(n: int, per: int) -> list[int]:
    return [min(per, n - i) for i in range(0, n, per)]


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--viewers", type=int, default=80)
    parser.add_argument("--per-process", type=int, default=40, help="viewers per loadgen process")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--quiet", type=float, default=3.0, help="MEDSTAGE_GC_QUIET_S, s")
    args = parser.parse_args()
    logdir = ROOT / "bench" / ".cache" / "gc_wave" / time.strftime("%Y%m%d-%H%M%S")
    logdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in range(args.runs):
        for name in args.configs:
            log(f"run {run + 1}/{args.runs}: {name}")
            rows.append(await one(name, args, logdir))
            log(rows[-1])
    print(HEADER)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
