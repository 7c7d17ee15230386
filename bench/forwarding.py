"""Forwarding benchmark: one VP8 ~1 Mbit/s + Opus publisher, N subscribers that never decode.

Starts the server under test itself (medstage: ``python -m server``; the naive baseline:
bench/naive_relay.py, aiortc MediaRelay = decode once, encode per subscriber), creates a stage,
spreads the subscribers over load-generator processes (bench/loadgen.py), waits until every
subscriber receives video, then measures over a steady window: server CPU (/proc utime+stime of
the server's process tree), RTP packets the server sent (its /metrics), packets the subscribers
received, RSS. Prints one Markdown table row per run (docs/benchmarks.md).

    unshare --net sh -c 'ip link set lo up && exec python bench/forwarding.py --subscribers 25 50'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import math
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.clip import clip_path, load_clip  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
STAGE = "bench"
_children: list[asyncio.subprocess.Process] = []


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG = 1: the kernel sends SIGKILL to the child when we die, even by SIGKILL.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


async def spawn(
    *cmd: str, env: dict[str, str] | None = None, stdout: Any = None, stderr: Any = None, stdin: Any = None
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        cwd=ROOT,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    _children.append(proc)
    return proc


def _signal_group(proc: asyncio.subprocess.Process, sig: int) -> None:
    # Each child leads its own session (start_new_session), so its group id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def stop(proc: asyncio.subprocess.Process, grace: float = 5.0) -> None:
    if proc.returncode is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            _signal_group(proc, signal.SIGKILL)
            await proc.wait()
    with contextlib.suppress(ValueError):
        _children.remove(proc)


def kill_all_children() -> None:
    """Last resort (atexit, signals): SIGKILL every process group we started."""
    for proc in list(_children):
        if proc.returncode is None:
            _signal_group(proc, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- /proc -----------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """pid and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid and its live descendants (all threads), in seconds."""
    ticks = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU time spent by the whole machine (all cores, not idle or iowait), in seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


def rss_bytes(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
    return total


# --- the server under test ---------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {metric name: sum over its label sets}."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0].strip()
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(value)
    return out


@dataclass
class Server:
    impl: str
    port: int
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def metrics(self, http: aiohttp.ClientSession) -> dict[str, float]:
        async with http.get(f"{self.base}/metrics") as resp:
            resp.raise_for_status()
            return parse_metrics(await resp.text())


async def start_server(impl: str, logdir: Path, tag: str) -> Server:
    port = free_port()
    if impl == "medstage":
        cmd = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)]
    else:
        cmd = [
            sys.executable,
            str(ROOT / "bench" / "naive_relay.py"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    env = dict(os.environ, MEDSTAGE_ICE_ADDRESSES="127.0.0.1", PYTHONUNBUFFERED="1")
    log_path = logdir / f"server-{tag}.log"
    with log_path.open("wb") as out:
        proc = await spawn(*cmd, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)
    server = Server(impl, port, proc, log_path)
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 30
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"{impl} exited with {proc.returncode}; see {log_path}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{server.base}/healthz") as resp:
                    if resp.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{impl} did not answer /healthz in 30 s; see {log_path}")
            await asyncio.sleep(0.1)
        async with http.post(f"{server.base}/api/stages", json={"id": STAGE}) as resp:
            if resp.status != 201:
                raise RuntimeError(f"POST /api/stages: {resp.status} {await resp.text()}")
    return server


# --- load generators -------------------------------------------------------------------------


@dataclass
class LoadGen:
    name: str
    proc: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)

    async def next_event(self, *wanted: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode})")
                event = json.loads(line)
                self.events.append(event)
                if event["event"] == "error":
                    log(f"{self.name}: {event}")
                if event["event"] in wanted:
                    return event

    async def stats(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stats\n")
        await self.proc.stdin.drain()
        return await self.next_event("stats", timeout=10)


async def start_loadgen(name: str, server: Server, logdir: Path, clip_cache: str, *extra: str) -> LoadGen:
    stderr = (logdir / f"{name}.log").open("wb")
    proc = await spawn(
        sys.executable,
        str(ROOT / "bench" / "loadgen.py"),
        "--url",
        server.base,
        "--stage",
        STAGE,
        "--prefix",
        name,
        "--clip-cache",
        clip_cache,
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )
    stderr.close()
    return LoadGen(name, proc)


# --- one measurement ---------------------------------------------------------------------------


@dataclass
class Result:
    impl: str
    n: int
    window_s: float = 0.0
    server_cpu_s: float = 0.0
    sent: float = 0.0
    received_by_subscribers: float = 0.0
    bytes_by_subscribers: float = 0.0
    rss0: int = 0
    rss_n: int = 0
    decoded_frames: float | None = None
    first_keyframe: int = 0
    first_not_keyframe: int = 0
    ready: int = 0
    loadgen_cpu_max: float = 0.0
    publisher_cpu: float = 0.0
    publisher_lag_resets: int = 0
    keyframe_requests: int = 0
    server_received: float = 0.0
    retransmitted: float = 0.0
    loadgen_cpu_s: float = 0.0  # all load generators and the publisher, over the window
    machine_busy_s: float = 0.0
    note: str = ""

    @property
    def us_per_packet(self) -> float:
        return self.server_cpu_s * 1e6 / self.sent if self.sent else math.nan

    @property
    def pps_per_subscriber(self) -> float:
        return self.sent / self.window_s / self.n if self.window_s and self.n else math.nan

    @property
    def subscribers_per_core(self) -> float:
        return 1e6 / (self.us_per_packet * self.pps_per_subscriber)

    @property
    def kbps_per_subscriber(self) -> float:
        return self.bytes_by_subscribers * 8 / 1e3 / self.window_s / self.n

    @property
    def other_cpu_share(self) -> float:
        """CPU used by processes outside this benchmark during the window (1.0 = one core)."""
        other = self.machine_busy_s - self.server_cpu_s - self.loadgen_cpu_s
        return max(0.0, other) / self.window_s if self.window_s else math.nan

    @property
    def loss(self) -> float:
        """Packets that never reached a subscriber. Subscribers count retransmissions too (aiortc
        unwraps RTX before the assembler), so they are added to the packets sent."""
        sent = self.sent + self.retransmitted
        return 1 - self.received_by_subscribers / sent if sent else math.nan


async def measure(impl: str, n: int, args: argparse.Namespace, logdir: Path) -> Result:
    tag = f"{impl}-{n}"
    result = Result(impl, n)
    server = await start_server(impl, logdir, tag)
    gens: list[LoadGen] = []
    try:
        async with aiohttp.ClientSession() as http:
            publisher = await start_loadgen(f"pub-{tag}", server, logdir, args.clip_cache, "--publish")
            gens.append(publisher)
            await publisher.next_event("publishing", timeout=30)
            await asyncio.sleep(args.settle)
            result.rss0 = rss_bytes(server.proc.pid)

            per = args.per_loadgen
            count = max(1, math.ceil(n / per))
            sizes = [n // count + (1 if i < n % count else 0) for i in range(count)]
            subs = [
                await start_loadgen(
                    f"sub{i}-{tag}", server, logdir, args.clip_cache, "--subscribers", str(size)
                )
                for i, size in enumerate(sizes)
            ]
            gens.extend(subs)
            log(f"{tag}: {n} subscribers over {count} load generators, joining")
            join_timeout = 60 + 2.0 * n
            readies = await asyncio.gather(*(g.next_event("ready", timeout=join_timeout) for g in subs))
            result.ready = sum(r["ready"] for r in readies)
            if result.ready < n:
                result.note = f"only {result.ready}/{n} subscribers got video"
                log(f"{tag}: {result.note}")
            await asyncio.sleep(args.settle)

            async def snapshot() -> tuple[float, float, float, dict[str, float], list[dict[str, Any]]]:
                # Server counters and subscriber counters read concurrently, so that "loss" is
                # not skewed by the time between the two reads.
                cpu, busy = cpu_seconds(server.proc.pid), machine_busy_seconds()
                metrics, *stats = await asyncio.gather(server.metrics(http), *(g.stats() for g in gens))
                return time.monotonic(), cpu, busy, metrics, stats

            await server.metrics(http)  # open the HTTP connection before the first snapshot

            log(f"{tag}: measuring for {args.window:g} s")
            t0, cpu0, busy0, m0, s0 = await snapshot()
            await asyncio.sleep(args.window)
            t1, cpu1, busy1, m1, s1 = await snapshot()
            result.rss_n = rss_bytes(server.proc.pid)

        result.window_s = t1 - t0
        result.server_cpu_s = cpu1 - cpu0
        result.machine_busy_s = busy1 - busy0
        result.loadgen_cpu_s = sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(s0, s1, strict=True))
        result.sent = m1.get("medstage_rtp_packets_sent_total", math.nan) - m0.get(
            "medstage_rtp_packets_sent_total", math.nan
        )
        result.server_received = m1.get("medstage_rtp_packets_received_total", math.nan) - m0.get(
            "medstage_rtp_packets_received_total", math.nan
        )
        result.retransmitted = m1.get("medstage_retransmissions_total", 0.0) - m0.get(
            "medstage_retransmissions_total", 0.0
        )
        if "medstage_decoded_frames_total" in m1:
            result.decoded_frames = m1["medstage_decoded_frames_total"]
        for missing in ("medstage_rtp_packets_sent_total", "medstage_decoded_frames_total"):
            if missing not in m1:
                log(f"{tag}: /metrics has no {missing}")
        for before, after in zip(s0[1:], s1[1:], strict=True):
            result.received_by_subscribers += after["packets"] - before["packets"]
            result.bytes_by_subscribers += after["bytes"] - before["bytes"]
            result.first_keyframe += after["first_frame_keyframe"]
            result.first_not_keyframe += after["first_frame_not_keyframe"]
            cpu = (after["cpu_s"] - before["cpu_s"]) / (after["time"] - before["time"])
            result.loadgen_cpu_max = max(result.loadgen_cpu_max, cpu)
        pub0, pub1 = s0[0], s1[0]
        result.publisher_cpu = (pub1["cpu_s"] - pub0["cpu_s"]) / (pub1["time"] - pub0["time"])
        result.publisher_lag_resets = pub1.get("lag_resets", 0)
        result.keyframe_requests = pub1.get("keyframe_requests", 0)
        return result
    finally:
        for gen in gens:
            if gen.proc.stdin is not None and gen.proc.returncode is None:
                with contextlib.suppress(Exception):
                    gen.proc.stdin.write(b"quit\n")
        await asyncio.gather(*(stop(g.proc, grace=3) for g in gens))
        await stop(server.proc)


# --- output ------------------------------------------------------------------------------------

HEADER = (
    "| server | subscribers | RTP pkt/s per subscriber | kbit/s per subscriber | server CPU | "
    "µs CPU per packet sent | subscribers per core | RSS per subscriber | loss | "
    "first video frame a keyframe | decoded frames in server |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _f(value: float, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def row(r: Result) -> str:
    cpu_share = r.server_cpu_s / r.window_s if r.window_s else math.nan
    decoded = "not exposed" if r.decoded_frames is None else f"{r.decoded_frames:.0f}"
    return (
        f"| {r.impl} | {r.n} | {_f(r.pps_per_subscriber, '.0f')} | "
        f"{_f(r.kbps_per_subscriber, '.0f')} | {_f(cpu_share * 100, '.0f')} % | "
        f"{_f(r.us_per_packet, '.1f')} | {_f(r.subscribers_per_core, '.0f')} | "
        f"{_f((r.rss_n - r.rss0) / r.n / 2**20, '.2f')} MB | {_f(r.loss * 100, '.2f')} % | "
        f"{r.first_keyframe}/{r.first_keyframe + r.first_not_keyframe} | {decoded} |"
    )


def details(r: Result) -> str:
    return (
        f"{r.impl} N={r.n}: window {r.window_s:.1f} s, server CPU {r.server_cpu_s:.2f} s, "
        f"sent {r.sent:.0f} (+{r.retransmitted:.0f} retransmitted), "
        f"received by subscribers {r.received_by_subscribers:.0f}, "
        f"server received {r.server_received:.0f}, RSS {r.rss0 / 2**20:.1f} → "
        f"{r.rss_n / 2**20:.1f} MB, subscribers with video {r.ready}/{r.n}, busiest load "
        f"generator {r.loadgen_cpu_max * 100:.0f} % of a core, publisher {r.publisher_cpu * 100:.0f} %"
        f" (clock resets {r.publisher_lag_resets}), keyframe requests at the publisher "
        f"{r.keyframe_requests}, other processes on the machine "
        f"{r.other_cpu_share * 100:.0f} % of a core" + (f"; {r.note}" if r.note else "")
    )


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return f"nproc {os.cpu_count()}, CPU {model}, Python {sys.version.split()[0]}"


# --- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, logdir: Path) -> list[Result]:
    plan: list[tuple[str, int]] = []
    if args.medstage:
        plan += [("medstage", n) for n in args.subscribers]
    naive_ns: list[int] = []
    if args.naive:
        for n in args.subscribers:
            capped = min(n, args.naive_max)
            if capped not in naive_ns:
                naive_ns.append(capped)
        plan += [("naive", n) for n in naive_ns]
    args.planned = len(plan)

    results: list[Result] = []
    for impl, n in plan:
        log(f"=== {impl}, {n} subscribers")
        try:
            r = await measure(impl, n, args, logdir)
        except Exception as exc:
            log(f"{impl} N={n} failed: {type(exc).__name__}: {exc}")
            continue
        results.append(r)
        log(details(r))
        if r.other_cpu_share > 0.2:
            log(f"warning: other processes used {r.other_cpu_share * 100:.0f} % of a core: figures are noisy")
        log(row(r))

    print(
        f"\nMachine: {machine()}. Window {args.window:g} s, settle {args.settle:g} s, "
        f"≤{args.per_loadgen} subscribers per load generator. Logs: {logdir}\n"
    )
    print(HEADER)
    for r in results:
        print(row(r))
    if args.naive and any(n > args.naive_max for n in args.subscribers):
        print(f"\nNaive relay capped at {args.naive_max} subscribers (--naive-max).")
    ours = {r.n: r for r in results if r.impl == "medstage"}
    for r in (r for r in results if r.impl == "naive"):
        if r.n in ours and ours[r.n].us_per_packet:
            print(
                f"\nNaive / medstage µs CPU per packet at N={r.n}: "
                f"{r.us_per_packet / ours[r.n].us_per_packet:.1f} times"
            )
    for impl in ("medstage", "naive"):
        line = marginal(results, impl)
        if line:
            print(f"\n{line}")
    print()
    for r in results:
        print(f"- {details(r)}")
    return results


def marginal(results: list[Result], impl: str) -> str:
    """CPU per extra packet between the smallest and the largest N: fixed costs (the publisher's
    inbound stream, timers) cancel out."""
    runs = sorted((r for r in results if r.impl == impl and r.sent), key=lambda r: r.n)
    if len(runs) < 2 or runs[0].n == runs[-1].n:
        return ""
    lo, hi = runs[0], runs[-1]
    rate_lo, rate_hi = lo.server_cpu_s / lo.window_s, hi.server_cpu_s / hi.window_s
    pps_lo, pps_hi = lo.sent / lo.window_s, hi.sent / hi.window_s
    if pps_hi <= pps_lo or hi.pps_per_subscriber < 0.95 * lo.pps_per_subscriber:
        return ""  # the larger run did not keep real time: the difference means nothing
    us = (rate_hi - rate_lo) * 1e6 / (pps_hi - pps_lo)
    return f"{impl}: marginal µs CPU per extra packet sent, N={lo.n} → N={hi.n}: {us:.1f}"


def write_json(path: str, results: list[Result]) -> None:
    if path:
        Path(path).write_text(
            json.dumps(
                [
                    dict(
                        r.__dict__,
                        us_per_packet=r.us_per_packet,
                        pps_per_subscriber=r.pps_per_subscriber,
                        subscribers_per_core=r.subscribers_per_core,
                        loss=r.loss,
                    )
                    for r in results
                ],
                indent=2,
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[25, 50, 100])
    parser.add_argument("--window", type=float, default=20.0, help="measurement window, s")
    parser.add_argument("--settle", type=float, default=3.0, help="wait before measuring, s")
    parser.add_argument("--medstage", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--naive", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--naive-max", type=int, default=25, help="cap on naive subscribers")
    parser.add_argument("--per-loadgen", type=int, default=25, help="subscribers per load-generator process")
    parser.add_argument("--clip-cache", default=str(ROOT / "bench" / ".cache"))
    parser.add_argument("--logdir", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    import atexit

    import uvloop

    atexit.register(kill_all_children)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    logdir = Path(args.logdir or ROOT / "bench" / ".cache" / "runs" / time.strftime("%Y%m%d-%H%M%S"))
    logdir.mkdir(parents=True, exist_ok=True)
    log(f"clip: {clip_path(args.clip_cache)}; logs: {logdir}")
    load_clip(args.clip_cache)
    try:
        results = uvloop.run(run(args, logdir))
        write_json(args.json, results)
        return 0 if len(results) == args.planned else 1
    except KeyboardInterrupt:
        return 130
    finally:
        kill_all_children()


if __name__ == "__main__":
    sys.exit(main())
