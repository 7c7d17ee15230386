"""Comment fan-out benchmark: N audience WebSockets on one node receiving R comments/s.

Starts the node itself (``python -m server``, fd limit raised with prlimit, ``MEDSTAGE_COMMENT_RATE``
raised so that the per-person limiter never refuses a bench comment: this measures fan-out, not the
limiter), creates a stage, joins the posters (a host and moderators) and N audience sockets spread
over client processes (bench/fanout_client.py, no WebRTC), posts R comments/s for D seconds, and
reports the delivery latency (receive - send, one clock) p50/p90/p99/max, delivered/expected, the
server's CPU over the posting window (/proc utime+stime), its RSS per connection and the time to join.
Prints one Markdown table row per N (docs/benchmarks.md, "Comment fan-out").

With ``--nodes K`` (K >= 2) the run is a cluster: the script starts its own redis-server (in memory,
no persistence), K nodes on it (``MEDSTAGE_REDIS_URL``, ``MEDSTAGE_NODE_ID=node1`` ...; every node gets
the same settings), creates the stage on node1 (which then hosts it), keeps the posters on node1 and
spreads the audience evenly over the K nodes: the sockets on the other nodes are served through them
(server/relay.py). It reports the same latency figures, per node too, and the CPU and RSS of each
node and of redis-server. ``--redis`` runs even one node on a redis-server (the backend's own cost).

    unshare --net sh -c 'ip link set lo up && exec python bench/fanout.py --connections 250 500 1000'
    unshare --net sh -c 'ip link set lo up && exec python bench/fanout.py --connections 1000 --nodes 2'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Process handling and /proc readings are shared with the forwarding benchmark.
from common import (
    ROOT,
    Redis,
    cpu_seconds,
    create_stage,
    free_port,
    kill_all_children,
    log,
    machine,
    machine_busy_seconds,
    redis_call,
    rss_bytes,
    server_log_problems,
    spawn,
    start_redis,
    stop,
    wait_ready,
)
from loopstats import LoopStats, cell, window
from loopstats import read as read_loop

STAGE = "fanout"
TARGET_P99_S = 0.150


# --- processes ---------------------------------------------------------------------------------


def server_fd_limit() -> int:
    """What the node gets: 65536, or our hard limit when we may not raise it (no CAP_SYS_RESOURCE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= 65536:
        return 65536
    try:  # raising our own hard limit tells whether the node's can be raised
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, 65536))
    except (ValueError, OSError):
        return hard
    return 65536


def fd_limit_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line.split()[3]
    return "?"


@dataclass
class Node:
    name: str
    port: int
    proc: asyncio.subprocess.Process
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_node(
    args: argparse.Namespace, logdir: Path, tag: str, name: str = "node1", redis: Redis | None = None
) -> Node:
    """A node, ready: /healthz answers, and on a cluster /readyz (backend and relay inbox up)."""
    port = free_port()
    limit = server_fd_limit()
    cmd = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)]
    if shutil.which("prlimit"):
        # prlimit sets the limit on itself and execs: the pid we hold is the node's.
        cmd = ["prlimit", f"--nofile={limit}:{limit}", *cmd]
    env = dict(
        os.environ,
        MEDSTAGE_ICE_ADDRESSES="127.0.0.1",
        MEDSTAGE_COMMENT_RATE=str(args.comment_rate),
        PYTHONUNBUFFERED="1",
    )
    if redis is not None:
        env.update(MEDSTAGE_REDIS_URL=redis.url, MEDSTAGE_NODE_ID=name)
    for item in args.server_env:
        key, _, value = item.partition("=")
        env[key] = value
    log_path = logdir / (f"server-{tag}-{name}.log" if redis is not None else f"server-{tag}.log")
    with log_path.open("wb") as out:
        proc = await spawn(*cmd, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)
    node = Node(name, port, proc, log_path)
    label = "server" if redis is None else f"server {name}"
    await wait_ready(proc, node.base, log_path, label)
    if redis is not None:
        await wait_ready(proc, node.base, log_path, label, "/readyz")
    return node


@dataclass
class Client:
    """One bench/fanout_client.py process, driven over its pipes."""

    name: str
    proc: asyncio.subprocess.Process
    node: int = 0  # index of the node its sockets are on

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    async def next_event(self, wanted: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode})")
                event: dict[str, Any] = json.loads(line)
                if event["event"] == "error":
                    raise RuntimeError(f"{self.name}: {event['message']}")
                if event["event"] == wanted:
                    return event

    async def ask(self, command: str, wanted: str, timeout: float = 30) -> dict[str, Any]:
        await self.send(command)
        return await self.next_event(wanted, timeout)


async def start_client(name: str, node: Node, logdir: Path, *extra: str, index: int = 0) -> Client:
    with (logdir / f"{name}.log").open("wb") as stderr:
        proc = await spawn(
            sys.executable,
            str(ROOT / "bench" / "fanout_client.py"),
            "--url",
            node.base,
            "--stage",
            STAGE,
            "--prefix",
            name,
            "--out",
            str(logdir),
            *extra,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    client = Client(name, proc, index)
    await client.next_event("up", timeout=30)
    return client


# --- one measurement ---------------------------------------------------------------------------


def percentile(ordered: list[float] | array[float], q: float) -> float:
    """Nearest rank: the smallest sample with at least q of the samples at or below it."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Usage:
    """What one process of the run used: a node, or redis-server."""

    name: str
    sockets: int = 0  # audience sockets joined through it
    delivered: int = 0  # bench comments its audience sockets received
    posters: bool = False  # the posters' sockets are on it (node1: it also hosts the stage)
    join_s: float = 0.0  # "join" sent → the last `joined` reply of its sockets
    cpu_s: float = 0.0  # over the posting window
    idle_cpu_s: float = 0.0
    rss0: int = 0  # before the audience joins
    rss_joined: int = 0
    rss_end: int = 0
    fds: int = 0
    fd_limit: str = ""
    latency: dict[str, float] = field(default_factory=dict)  # of its sockets: receive - send
    problems: list[str] = field(default_factory=list)  # warnings and errors in its log


@dataclass
class Result:
    n: int
    rate: float
    duration: float
    joined: int = 0
    offered: int = 0
    join_s: float = math.nan  # "join" sent to every client → the last `joined` reply
    offers_s: float = math.nan  # ... → the last `subscriber.offer`
    sent: int = 0
    accepted: int = 0  # sent - refused (error replies)
    replies: dict[str, int] = field(default_factory=dict)
    error_examples: dict[str, Any] = field(default_factory=dict)
    ack_p50: float | None = None
    loop: LoopStats | None = None  # node1's loop health from the joins to the end of posting
    ack_max: float | None = None
    max_lateness: float = 0.0  # how far the posters fell behind their schedule, s
    delivered: int = 0
    duplicates: int = 0
    per_socket_min: int = 0
    per_socket_max: int = 0
    latency: dict[str, float] = field(default_factory=dict)  # receive - send
    per_comment: list[tuple[int, float, float]] = field(default_factory=list)  # seq, median, max
    fanout: dict[str, float] = field(default_factory=dict)  # receive - the event's server `at`
    window_s: float = 0.0
    server_cpu_s: float = 0.0
    idle_window_s: float = 0.0
    idle_cpu_s: float = 0.0
    clients_cpu_s: float = 0.0
    client_cpu_max: float = 0.0  # the busiest client process, share of a core
    machine_busy_s: float = 0.0
    rss0: int = 0  # node with the posters, before the audience joins
    rss_joined: int = 0
    rss_end: int = 0
    server_fd_limit: str = ""
    server_fds: int = 0  # open by the node once everyone joined
    closed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    stage_start: dict[str, Any] = field(default_factory=dict)
    poster_roles: list[str] = field(default_factory=list)
    # The server fields above (CPU, RSS, fds) are sums over the nodes; per node and redis-server here.
    nodes: int = 1
    redis: bool = False  # the nodes ran on a redis-server (always when nodes > 1)
    per_node: list[Usage] = field(default_factory=list)
    redis_usage: Usage | None = None
    redis_commands: dict[str, dict[str, int]] = field(default_factory=dict)  # in the window: calls, usec
    server: str = ""  # the tree under test when the nodes started (others may commit during a run)

    @property
    def expected(self) -> int:
        return self.accepted * self.joined

    @property
    def cpu_share(self) -> float:
        return self.server_cpu_s / self.window_s if self.window_s else math.nan

    @property
    def idle_cpu_share(self) -> float:
        return self.idle_cpu_s / self.idle_window_s if self.idle_window_s else math.nan

    @property
    def us_per_delivery(self) -> float:
        return self.server_cpu_s * 1e6 / self.delivered if self.delivered else math.nan

    @property
    def rss_per_connection(self) -> float:
        return (self.rss_joined - self.rss0) / self.joined if self.joined else math.nan

    @property
    def redis_cpu_s(self) -> float:
        return self.redis_usage.cpu_s if self.redis_usage else 0.0

    @property
    def other_cpu_share(self) -> float:
        """CPU used outside the nodes, redis-server and the bench clients during the window
        (1.0 = one core)."""
        other = self.machine_busy_s - self.server_cpu_s - self.redis_cpu_s - self.clients_cpu_s
        return max(0.0, other) / self.window_s if self.window_s else math.nan

    def share(self, cpu_s: float) -> float:
        """CPU seconds in the posting window as a share of one core."""
        return cpu_s / self.window_s if self.window_s else math.nan


def read_samples(path: str) -> array[float]:
    """One client process's samples: float64 in native byte order (bench/fanout_client.py)."""
    samples = array("d")
    samples.frombytes(Path(path).read_bytes())
    return samples


def per_comment(seqs: array[float], latency: array[float]) -> list[tuple[int, float, float]]:
    """(seq, median, max latency over the audience) of every comment, in posting order: shows
    when a stall happened."""
    by_seq: dict[int, list[float]] = {}
    for seq, value in zip(seqs, latency, strict=True):
        by_seq.setdefault(int(seq), []).append(value)
    out = []
    for seq in sorted(by_seq):
        values = sorted(by_seq[seq])
        out.append((seq, percentile(values, 0.5), values[-1]))
    return out


def summarize(samples: array[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": percentile(ordered, 0.50),
        "p90": percentile(ordered, 0.90),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else math.nan,
        "n": len(ordered),
    }


def spread(n: int, nodes: int, per_process: int) -> list[tuple[int, int]]:
    """(node index, sockets) of every audience process: n evenly over the nodes, then at most
    ``per_process`` per process, evenly."""
    plan = []
    for i in range(nodes):
        m = n // nodes + (1 if i < n % nodes else 0)
        count = max(1, math.ceil(m / per_process))
        plan += [(i, m // count + (1 if j < m % count else 0)) for j in range(count)]
    return [(i, m) for i, m in plan if m]


def parse_commandstats(info: str) -> dict[str, dict[str, int]]:
    """``INFO commandstats`` → {command: {"calls": ..., "usec": ...}}."""
    out = {}
    for line in info.splitlines():
        if line.startswith("cmdstat_"):
            name, _, values = line[len("cmdstat_") :].partition(":")
            fields = dict(item.split("=", 1) for item in values.split(","))
            out[name] = {"calls": int(fields["calls"]), "usec": int(fields["usec"])}
    return out


async def start_profilers(nodes: list[Node], args: argparse.Namespace, logdir: Path, tag: str) -> list[Any]:
    """``py-spy record`` on every node for the posting time (collapsed stacks, one file per node)."""
    profilers = []
    for node in nodes:
        out = logdir / f"profile-{tag}-{node.name}.txt"
        with (logdir / f"py-spy-{tag}-{node.name}.log").open("wb") as err:
            profilers.append(
                await spawn(
                    "py-spy",
                    "record",
                    "--pid",
                    str(node.proc.pid),
                    "--duration",
                    str(math.ceil(args.duration)),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out),
                    stdout=err,
                    stderr=asyncio.subprocess.STDOUT,
                )
            )
    return profilers


async def measure(n: int, args: argparse.Namespace, logdir: Path) -> Result:
    tag = f"{n}"
    clustered = args.nodes > 1 or args.redis
    result = Result(n, args.rate, args.duration, nodes=args.nodes, redis=clustered, server=tree_state())
    redis: Redis | None = None
    nodes: list[Node] = []
    clients: list[Client] = []
    profilers: list[Any] = []
    try:
        if clustered:
            redis = await start_redis(logdir, tag)
            result.redis_usage = Usage("redis-server")
        for i in range(args.nodes):
            nodes.append(await start_node(args, logdir, tag, f"node{i + 1}", redis))
        await create_stage(nodes[0].base, STAGE)  # node1 hosts it
        result.per_node = [Usage(node.name, fd_limit=fd_limit_of(node.proc.pid)) for node in nodes]
        result.per_node[0].posters = True
        result.server_fd_limit = result.per_node[0].fd_limit
        # Every process whose CPU and RSS we read: the nodes, then redis-server.
        watched = [(u, node.proc.pid) for u, node in zip(result.per_node, nodes, strict=True)]
        if redis is not None and result.redis_usage is not None:
            watched.append((result.redis_usage, redis.proc.pid))

        def read_rss(attribute: str) -> int:
            for u, pid in watched:
                setattr(u, attribute, rss_bytes(pid))
            return sum(getattr(u, attribute) for u in result.per_node)

        poster = await start_client(
            f"posters-{tag}",
            nodes[0],
            logdir,
            "--posters",
            str(args.posters),
            "--poster-role",
            args.poster_role,
            "--rate",
            str(args.rate),
            "--duration",
            str(args.duration),
        )
        clients.append(poster)
        joined = await poster.ask("join", "joined")
        result.poster_roles, result.stage_start = joined["roles"], joined["stage_start"]
        await asyncio.sleep(args.settle)
        result.rss0 = read_rss("rss0")
        loop0 = await read_loop(nodes[0].base)

        plan = spread(n, len(nodes), args.per_process)
        audience = list(
            await asyncio.gather(
                *(
                    start_client(
                        f"audience{j}-{tag}",
                        nodes[i],
                        logdir,
                        "--audience",
                        str(size),
                        *(["--chat-only"] if args.chat_only else []),
                        index=i,
                    )
                    for j, (i, size) in enumerate(plan)
                )
            )
        )
        clients.extend(audience)
        if clustered:
            per_node = [sum(size for i, size in plan if i == k) for k in range(len(nodes))]
            log(
                f"N={n}: {n} audience sockets over {len(plan)} processes on {len(nodes)} nodes "
                f"({' + '.join(map(str, per_node))}), posters on node1 (it hosts the stage), joining"
            )
        else:
            log(f"N={n}: {n} audience sockets over {len(plan)} processes, joining")
        started = time.time()
        await asyncio.gather(*(c.send("join") for c in audience))
        done = await asyncio.gather(*(c.next_event("joined", timeout=120 + 0.5 * n) for c in audience))
        result.joined = sum(d["joined"] for d in done)
        result.offered = sum(d["offered"] for d in done)
        result.join_s = max(d["last_joined"] for d in done) - started
        if result.offered:  # none with --chat-only
            result.offers_s = max(d["last_offered"] for d in done) - started
        for c, d in zip(audience, done, strict=True):
            u = result.per_node[c.node]
            u.sockets += d["joined"]
            u.join_s = max(u.join_s, d["last_joined"] - started)
            for reason, k in d["failures"].items():
                result.failures[reason] = result.failures.get(reason, 0) + k
        log(
            f"N={n}: {result.joined} joined in {result.join_s:.1f} s, "
            f"{result.offered} subscriber offers in {result.offers_s:.1f} s"
            + (
                " (per node: " + ", ".join(f"{u.sockets} in {u.join_s:.1f} s" for u in result.per_node) + ")"
                if clustered
                else ""
            )
        )
        await asyncio.sleep(args.settle)
        result.rss_joined = read_rss("rss_joined")
        for u, node in zip(result.per_node, nodes, strict=True):
            with contextlib.suppress(OSError):
                u.fds = len(os.listdir(f"/proc/{node.proc.pid}/fd"))
        result.server_fds = sum(u.fds for u in result.per_node)

        # Idle cost of N joined sockets (heartbeats, timers), to tell it from the fan-out.
        t0, idle0 = time.monotonic(), [cpu_seconds(pid) for _, pid in watched]
        await asyncio.sleep(args.idle)
        result.idle_window_s = time.monotonic() - t0
        for (u, pid), cpu in zip(watched, idle0, strict=True):
            u.idle_cpu_s = cpu_seconds(pid) - cpu
        result.idle_cpu_s = sum(u.idle_cpu_s for u in result.per_node)

        async def snapshot() -> tuple[float, list[float], float, list[dict[str, Any]]]:
            stats = await asyncio.gather(*(c.ask("stats", "stats") for c in audience))
            return time.monotonic(), [cpu_seconds(pid) for _, pid in watched], machine_busy_seconds(), stats

        if redis is not None:
            await redis_call(redis.port, "CONFIG", "RESETSTAT")
        if args.profile:
            profilers = await start_profilers(nodes, args, logdir, tag)
        log(f"N={n}: posting {args.rate:g} comments/s for {args.duration:g} s")
        t0, cpu0, busy0, s0 = await snapshot()
        posted = await poster.ask("post", "posted", timeout=args.duration + 60)
        result.sent = posted["sent"]
        result.replies, result.error_examples = posted["replies"], posted["error_examples"]
        refused = sum(k for reply, k in result.replies.items() if reply.startswith(("error", "failed")))
        result.accepted = result.sent - refused
        result.ack_p50, result.ack_max = posted["ack_p50"], posted["ack_max"]
        result.max_lateness = posted["max_lateness"]

        # The window ends when the last delivery arrived (or, if some never arrive, when the last
        # one did), so the CPU spent on a backlog after the last post counts.
        deadline = time.monotonic() + args.drain
        end = await snapshot()
        while sum(s["received"] for s in end[3]) < result.expected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            latest = await snapshot()
            if sum(s["received"] for s in latest[3]) > sum(s["received"] for s in end[3]):
                end = latest
            elif latest[0] - end[0] > 3:
                break  # nothing arrived for 3 s: the rest is lost
        t1, cpu1, busy1, s1 = end
        result.window_s, result.machine_busy_s = t1 - t0, busy1 - busy0
        for (u, _), before, after in zip(watched, cpu0, cpu1, strict=True):
            u.cpu_s = after - before
        result.server_cpu_s = sum(u.cpu_s for u in result.per_node)
        result.loop = window(loop0, await read_loop(nodes[0].base))
        if redis is not None:
            result.redis_commands = parse_commandstats(await redis_call(redis.port, "INFO", "commandstats"))
        for a, b in zip(s0, s1, strict=True):
            cpu = b["cpu_s"] - a["cpu_s"]
            result.clients_cpu_s += cpu
            result.client_cpu_max = max(result.client_cpu_max, cpu / (b["time"] - a["time"]))
        # The posters' CPU is not in the stats; it is small (R frames/s) and lands in "other".
        for profiler in profilers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(30):
                    await profiler.wait()

        reports = await asyncio.gather(*(c.ask("report", "report") for c in audience))
        result.rss_end = read_rss("rss_end")
        samples = array("d")
        by_node = [array("d") for _ in nodes]
        for c, r in zip(audience, reports, strict=True):
            mine = read_samples(r["samples_file"])
            samples.extend(mine)
            by_node[c.node].extend(mine)
            result.per_node[c.node].delivered += r["received"]
            result.delivered += r["received"]
            result.duplicates += r["duplicates"]
            for key, target in (("closed", result.closed), ("errors", result.errors)):
                for code, k in r[key].items():
                    target[code] = target.get(code, 0) + k
        result.per_socket_min = min(r["per_socket_min"] for r in reports)
        result.per_socket_max = max(r["per_socket_max"] for r in reports)
        seqs, latency, fanout = samples[0::3], samples[1::3], samples[2::3]
        result.latency = summarize(latency)
        result.fanout = summarize(array("d", (x for x in fanout if not math.isnan(x))))
        result.per_comment = per_comment(seqs, latency)
        for u, mine, node in zip(result.per_node, by_node, nodes, strict=True):
            u.latency = summarize(mine[1::3])
            u.problems = server_log_problems(node.log_path)  # before the teardown's own messages
        return result
    finally:
        for client in clients:
            if client.proc.returncode is None:
                with contextlib.suppress(Exception):
                    await client.send("quit")
        await asyncio.gather(*(stop(p, grace=5) for p in profilers))
        await asyncio.gather(*(stop(node.proc, grace=10) for node in nodes))
        if redis is not None:
            await stop(redis.proc, grace=5)
        await asyncio.gather(*(stop(c.proc, grace=5) for c in clients))


# --- output ------------------------------------------------------------------------------------

HEADER = (
    "| connections | comments/s | join all | p50 | p90 | p99 | max | delivered / expected | "
    "server CPU (posting) | server CPU (idle) | µs server CPU per delivery | RSS per connection | "
    "loop lag p99 / longest, GC | p99 ≤ 150 ms |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|"
)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None or math.isnan(seconds) else f"{seconds * 1e3:.1f} ms"


def _f(value: float, fmt: str) -> str:
    return "n/a" if math.isnan(value) else format(value, fmt)


def row(r: Result) -> str:
    lat = r.latency
    p99 = lat.get("p99", math.nan)
    verdict = "n/a" if math.isnan(p99) or not r.delivered else ("yes" if p99 <= TARGET_P99_S else "**no**")
    return (
        f"| {r.n} | {r.rate:g} | {_f(r.join_s, '.1f')} s | {_ms(lat.get('p50'))} | {_ms(lat.get('p90'))} | "
        f"{_ms(p99)} | {_ms(lat.get('max'))} | {r.delivered}/{r.expected} | "
        f"{_f(r.cpu_share * 100, '.0f')} % | {_f(r.idle_cpu_share * 100, '.0f')} % | "
        f"{_f(r.us_per_delivery, '.1f')} | {_f(r.rss_per_connection / 2**10, '.0f')} KiB | {cell(r.loop)} | "
        f"{verdict} |"
    )


CLUSTER_HEADER = (
    "| nodes | connections | sockets per node | comments/s | join all | p50 | p90 | p99 | max | "
    "delivered / expected | CPU per node (posting) | redis CPU (posting) | RSS per node (joined) | "
    "node1 loop lag p99 / longest, GC | p99 ≤ 150 ms |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|"
)


def cluster_row(r: Result) -> str:
    """The row of a run on a redis-server: the first node hosts the stage and has the posters."""
    lat = r.latency
    p99 = lat.get("p99", math.nan)
    verdict = "n/a" if math.isnan(p99) or not r.delivered else ("yes" if p99 <= TARGET_P99_S else "**no**")
    sockets = " / ".join(str(u.sockets) for u in r.per_node)
    cpu = " / ".join(f"{_f(r.share(u.cpu_s) * 100, '.0f')} %" for u in r.per_node)
    rss = " / ".join(f"{u.rss_joined / 2**20:.0f}" for u in r.per_node)
    return (
        f"| {r.nodes} | {r.n} | {sockets} | {r.rate:g} | {_f(r.join_s, '.1f')} s | {_ms(lat.get('p50'))} | "
        f"{_ms(lat.get('p90'))} | {_ms(p99)} | {_ms(lat.get('max'))} | {r.delivered}/{r.expected} | {cpu} | "
        f"{_f(r.share(r.redis_cpu_s) * 100, '.0f')} % | {rss} MiB | {cell(r.loop)} | {verdict} |"
    )


def usage_line(r: Result, u: Usage) -> str:
    what = ""
    if u.name != "redis-server":
        what = (
            f"{u.sockets} audience sockets (all joined after {u.join_s:.1f} s), delivered "
            f"{u.delivered}/{r.accepted * u.sockets}"
        )
    if u.posters:
        what += ", the posters, hosts the stage"
    lat = u.latency
    return (
        f"  {u.name}: {what + '; ' if what else ''}CPU {_f(r.share(u.cpu_s) * 100, '.0f')} % posting, "
        f"{_f(u.idle_cpu_s / r.idle_window_s * 100 if r.idle_window_s else math.nan, '.1f')} % idle; "
        f"RSS {u.rss0 / 2**20:.1f} → {u.rss_joined / 2**20:.1f} → {u.rss_end / 2**20:.1f} MB"
        + (f"; fds {u.fds} (limit {u.fd_limit})" if u.fd_limit else "")
        + (
            f"; its sockets: p50 {_ms(lat.get('p50'))}, p99 {_ms(lat.get('p99'))}, max {_ms(lat.get('max'))}"
            if lat.get("n")
            else ""
        )
    )


def redis_line(r: Result, limit: int = 6) -> str:
    top = sorted(r.redis_commands.items(), key=lambda kv: -kv[1]["usec"])[:limit]
    return "  redis commands in the window (calls, CPU inside redis): " + ", ".join(
        f"{name} {c['calls']} ({c['usec'] / 1e3:.0f} ms)" for name, c in top
    )


def details(r: Result) -> str:
    fan = r.fanout
    lines = [
        f"N={r.n}: joined {r.joined}/{r.n} (`joined` in {r.join_s:.1f} s, `subscriber.offer` "
        f"{r.offered}/{r.n} in {r.offers_s:.1f} s); posters {r.poster_roles}, stage.start → "
        f"{r.stage_start.get('type')} {r.stage_start.get('message', '')}".rstrip()
        + f"; server: {r.server}",
        f"  comments sent {r.sent} in {r.window_s:.1f} s (posters at most {r.max_lateness * 1e3:.1f} ms "
        f"behind schedule), replies {r.replies}, ack p50 {_ms(r.ack_p50)} max {_ms(r.ack_max)}",
        f"  delivered {r.delivered}/{r.expected}, duplicates {r.duplicates}, per socket "
        f"{r.per_socket_min}-{r.per_socket_max} of {r.accepted}; receive - server `at`: p50 "
        f"{_ms(fan.get('p50'))}, p99 {_ms(fan.get('p99'))}, max {_ms(fan.get('max'))}",
        f"  server CPU {r.server_cpu_s:.2f} s over {r.window_s:.1f} s, idle {r.idle_cpu_s:.2f} s over "
        f"{r.idle_window_s:.1f} s; RSS {r.rss0 / 2**20:.1f} → {r.rss_joined / 2**20:.1f} MB joined → "
        f"{r.rss_end / 2**20:.1f} MB after posting; server fds {r.server_fds} (limit {r.server_fd_limit})",
        f"  busiest audience process {r.client_cpu_max * 100:.0f} % of a core, all audience processes "
        f"{r.clients_cpu_s / r.window_s * 100 if r.window_s else math.nan:.0f} %, other processes "
        f"{r.other_cpu_share * 100:.0f} % of a core",
    ]
    slow = [c for c in r.per_comment if c[1] > TARGET_P99_S]
    if r.per_comment:
        worst = max(r.per_comment, key=lambda c: c[1])
        lines.append(
            f"  comments whose median delivery exceeded {TARGET_P99_S * 1e3:.0f} ms: {len(slow)}/"
            f"{len(r.per_comment)}; slowest: #{worst[0]} (median {_ms(worst[1])}, max {_ms(worst[2])}), "
            f"posted {worst[0] / r.rate:.1f} s into the window"
        )
    if r.redis:
        lines += [usage_line(r, u) for u in r.per_node]
        if r.redis_usage is not None:
            lines += [usage_line(r, r.redis_usage), redis_line(r)]
    for u in r.per_node:
        if u.problems:
            lines.append(f"  {u.name} log: " + "; ".join(u.problems))
    if r.error_examples:
        lines.append(f"  refused comments, e.g. {json.dumps(r.error_examples, ensure_ascii=False)}")
    if r.closed or r.errors or r.failures:
        lines.append(f"  audience sockets closed {r.closed}, errors {r.errors}, join failures {r.failures}")
    return "\n".join(lines)


def tree_state() -> str:
    """The server under test: commit, and how many files under server/ rooms/ media/ differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "server", "rooms", "media"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {commit}" + (
        f" + {len(status)} uncommitted files under server/ rooms/ media/" if status else ""
    )


# --- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, logdir: Path) -> list[Result]:
    results: list[Result] = []
    for n in args.connections:
        log(f"=== {n} audience connections")
        try:
            r = await measure(n, args, logdir)
        except Exception as exc:
            log(f"N={n} failed: {type(exc).__name__}: {exc}")
            continue
        results.append(r)
        log(details(r))
        if r.other_cpu_share > 0.2:
            log(f"warning: other processes used {r.other_cpu_share * 100:.0f} % of a core: figures are noisy")
        log(cluster_row(r) if r.redis else row(r))
    clustered = args.nodes > 1 or args.redis
    print(
        f"\nMachine: {machine()}. {args.rate:g} comments/s for {args.duration:g} s from {args.posters} "
        f"posters (host + {args.poster_role}), ≤{args.per_process} audience sockets per client process, "
        f"server env MEDSTAGE_COMMENT_RATE={args.comment_rate} (the per-person limiter is not under test)"
        + (f", {' '.join(args.server_env)}" if args.server_env else "")
        + (", chat-only audience (join with media: false)" if args.chat_only else "")
        + (
            f". {args.nodes} node(s) on one redis-server (every node with the same settings): node1 hosts "
            f"the stage and has the posters, the audience is spread evenly over the nodes"
            if clustered
            else ""
        )
        + f". Server: {tree_state()}. Logs: {logdir}\n"
    )
    print(CLUSTER_HEADER if clustered else HEADER)
    for r in results:
        print(cluster_row(r) if clustered else row(r))
    print()
    for r in results:
        print(details(r))
    return results


def write_json(path: str | None, args: argparse.Namespace, results: list[Result]) -> None:
    if not path:
        return
    runs = [
        dict(
            asdict(r),
            expected=r.expected,
            cpu_share=r.cpu_share,
            idle_cpu_share=r.idle_cpu_share,
            us_per_delivery=r.us_per_delivery,
            rss_per_connection=r.rss_per_connection,
            other_cpu_share=r.other_cpu_share,
            redis_cpu_s=r.redis_cpu_s,
        )
        for r in results
    ]
    options = {k: v for k, v in vars(args).items()}
    Path(path).write_text(
        json.dumps({"machine": machine(), "server": tree_state(), "options": options, "runs": runs}, indent=2)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1000], help="audience sockets")
    parser.add_argument(
        "--nodes", type=int, default=1, help="nodes on one redis-server (1: one node, in-process backend)"
    )
    parser.add_argument("--redis", action="store_true", help="a redis-server even for one node")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy record every node while posting (perturbs the figures)"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="comments/s, all posters together")
    parser.add_argument("--duration", type=float, default=30.0, help="posting time, s")
    parser.add_argument("--posters", type=int, default=4, help="poster sockets (the first is the host)")
    parser.add_argument("--poster-role", default="moderator", help="role of the other posters")
    parser.add_argument("--per-process", type=int, default=250, help="audience sockets per client process")
    parser.add_argument("--comment-rate", type=int, default=1000, help="server MEDSTAGE_COMMENT_RATE")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra server environment"
    )
    parser.add_argument(
        "--chat-only",
        action="store_true",
        help="the audience joins with media: false (no subscriber peer connection on the node)",
    )
    parser.add_argument("--settle", type=float, default=2.0, help="wait after joins, s")
    parser.add_argument("--idle", type=float, default=5.0, help="idle CPU window before posting, s")
    parser.add_argument("--drain", type=float, default=15.0, help="longest wait for late deliveries, s")
    parser.add_argument("--logdir", default=None)
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args()
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    if (args.nodes > 1 or args.redis) and shutil.which("redis-server") is None:
        parser.error("--nodes > 1 and --redis need redis-server (Debian package redis-server)")
    if args.profile and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy")

    import atexit

    import uvloop

    atexit.register(kill_all_children)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    logdir = Path(args.logdir or ROOT / "bench" / ".cache" / "fanout" / time.strftime("%Y%m%d-%H%M%S"))
    logdir.mkdir(parents=True, exist_ok=True)
    log(f"logs: {logdir}")
    try:
        results = uvloop.run(run(args, logdir))
        write_json(args.json, args, results)
        return 0 if len(results) == len(args.connections) else 1
    except KeyboardInterrupt:
        return 130
    finally:
        kill_all_children()


if __name__ == "__main__":
    sys.exit(main())
