"""Forwarding benchmark: one VP8 ~1 Mbit/s + Opus publisher, N subscribers that never decode.

Starts the server under test itself (medstage: ``python -m server``; the naive baseline:
bench/naive_relay.py, aiortc MediaRelay = decode once, encode per subscriber), creates a stage,
spreads the subscribers over load-generator processes (bench/loadgen.py), waits until every
subscriber receives video, then measures over a steady window: server CPU (/proc utime+stime of
the server's process tree), RTP packets the server sent (its /metrics), packets the subscribers
received, RSS. Prints one Markdown table row per run (docs/benchmarks.md).

Recording (docs/recording.md): with ``--record`` the server runs with ``MEDSTAGE_RECORDING_MODE=manual``
and its recordings in a temporary directory under bench/.cache (deleted afterwards unless
``--keep-recordings``); the publisher gives consent (media, comments) when it joins, and once it
publishes, the host starts recording (``recording.start``) before anyone subscribes; after the window
it stops recording and checks the manifest (the publisher's audio and video, finalized, non-empty
files) and the consent ledger (``python -m recording verify``). ``--record both`` runs every N
without and with recording, in pairs (``--repeat`` pairs, alternating which goes first), and prints
the extra server CPU. ``--soak [SECONDS]`` (600) makes the window that long and samples the server's
RSS and CPU every ``--sample`` seconds (10): first, last and max RSS and its slope in MiB per minute.

    unshare --net sh -c 'ip link set lo up && exec python bench/forwarding.py --subscribers 25 50'
    unshare --net sh -c 'ip link set lo up && exec python bench/forwarding.py --subscribers 25 100 \
        --record both'
    unshare --net sh -c 'ip link set lo up && exec python bench/forwarding.py --subscribers 25 --soak'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Process handling, /proc readings and the node's start-up are shared with the fan-out benchmark.
from common import (
    CLK_TCK,
    ROOT,
    cpu_seconds,
    free_port,
    kill_all_children,
    log,
    machine,
    machine_busy_seconds,
    rss_bytes,
    server_log_problems,
    spawn,
    stop,
    wait_ready_and_create_stage,
)

sys.path.insert(0, str(ROOT))

from loopstats import LoopStats, cell
from loopstats import read as read_loop
from loopstats import window as loop_window

from tests.support.clip import clip_path, load_clip

STAGE = "bench"


# --- processes -------------------------------------------------------------------------------


# --- /proc -----------------------------------------------------------------------------------


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of pid alone (all its threads; not its media workers)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int, tids: list[int]) -> float:
    """utime + stime of some threads of pid, in seconds (threads gone since count 0)."""
    ticks = 0
    for tid in tids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


async def recorder_threads(pid: int) -> dict[int, str]:
    """The server's recording threads (``writer <file>``, ``timeline <session>``) by OS thread id.
    Python 3.11 does not give threads OS names, so their names come from ``py-spy dump``; without
    py-spy, nothing (the per-thread figure is then not measured)."""
    if shutil.which("py-spy") is None:
        return {}
    proc = await asyncio.create_subprocess_exec(
        "py-spy",
        "dump",
        "--pid",
        str(pid),
        "--json",
        "--nonblocking",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    try:
        threads = json.loads(out)
    except ValueError:
        return {}
    return {
        int(t["os_thread_id"]): str(t["thread_name"])
        for t in threads
        if str(t.get("thread_name") or "").startswith(("writer ", "timeline ")) and t.get("os_thread_id")
    }


# --- the server under test ---------------------------------------------------------------------


def udp_errors() -> tuple[float, float]:
    """RcvbufErrors, SndbufErrors of this network namespace (the bench runs in the node's)."""
    try:
        text = Path("/proc/net/snmp").read_text()
        lines = [line.split() for line in text.splitlines() if line.startswith("Udp:")]
        table = dict(zip(lines[0][1:], lines[1][1:], strict=True))
        return float(table["RcvbufErrors"]), float(table["SndbufErrors"])
    except (OSError, IndexError, KeyError, ValueError):
        return math.nan, math.nan


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


async def start_server(impl: str, logdir: Path, tag: str, extra_env: dict[str, str] | None = None) -> Server:
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
    env = dict(os.environ, MEDSTAGE_ICE_ADDRESSES="127.0.0.1", PYTHONUNBUFFERED="1", **(extra_env or {}))
    log_path = logdir / f"server-{tag}.log"
    with log_path.open("wb") as out:
        proc = await spawn(*cmd, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)
    server = Server(impl, port, proc, log_path)
    await wait_ready_and_create_stage(proc, server.base, log_path, impl, STAGE)
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

    async def record(self, action: str, timeout: float = 30) -> dict[str, Any]:
        """``recording.start`` / ``recording.stop`` by the publisher (the host); the server's reply."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"record {action}\n".encode())
        await self.proc.stdin.drain()
        event = await self.next_event("recording", timeout=timeout)
        if not event["ok"]:
            raise RuntimeError(f"recording.{action} refused: {event['reply']}")
        return dict(event["reply"])


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
    # Where loss happened: datagrams the node dropped on a full send buffer (medstage_send_drops_total),
    # and the namespace's kernel UDP counters (/proc/net/snmp RcvbufErrors: a starved receiver).
    send_drops: float = 0.0
    udp_rcvbuf_errors: float = 0.0
    udp_sndbuf_errors: float = 0.0
    loadgen_cpu_s: float = 0.0  # all load generators and the publisher, over the window
    machine_busy_s: float = 0.0
    note: str = ""
    recording: bool = False
    run_id: int = 0  # the pair, with --repeat
    record_ok: bool | None = None  # manifest and ledger checks passed (None: not recording)
    record_summary: str = ""
    finalize_s: float = math.nan  # recording.stop → manifest complete with every track finalized
    recorder_threads_cpu_s: float = math.nan  # CPU of the writer and timeline threads in the window
    recorder_threads: list[str] = field(default_factory=list)
    samples: list[dict[str, float]] = field(default_factory=list)  # soak: t, rss, cpu, sent, received
    server_problems: list[str] = field(default_factory=list)  # warnings and errors in the server log
    # Media workers (MEDSTAGE_MEDIA_WORKERS as the node got it; docs/architecture.md): the server's
    # CPU above counts the main process and its workers; this is the main process alone.
    workers: str = field(default_factory=lambda: os.environ.get("MEDSTAGE_MEDIA_WORKERS", "per core"))
    main_cpu_s: float = math.nan
    loop: LoopStats | None = None  # the node's main loop over the window (medstage only)

    @property
    def label(self) -> str:
        impl = f"{self.impl} (workers {self.workers})" if self.impl == "medstage" else self.impl
        return f"{impl} (recording)" if self.recording else impl

    @property
    def cpu_share(self) -> float:
        return self.server_cpu_s / self.window_s if self.window_s else math.nan

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


async def measure(
    impl: str, n: int, args: argparse.Namespace, logdir: Path, record: bool = False, run_id: int = 0
) -> Result:
    tag = f"{impl}-{n}" + ("-rec" if record else "") + (f"-{run_id}" if run_id else "")
    result = Result(impl, n, recording=record, run_id=run_id)
    extra_env: dict[str, str] = {}
    rec_dir: Path | None = None
    if record or args.record_env:
        # In --record both, the run without recording has the same configuration and consent:
        # the pair differs only by recording.start.
        rec_dir = Path(tempfile.mkdtemp(prefix=f"recordings-{tag}-", dir=args.clip_cache))
        extra_env = {"MEDSTAGE_RECORDING_MODE": "manual", "MEDSTAGE_RECORDINGS_DIR": str(rec_dir)}
    server = await start_server(impl, logdir, tag, extra_env)
    gens: list[LoadGen] = []
    try:
        async with aiohttp.ClientSession() as http:
            consent = ("--consent",) if extra_env else ()
            publisher = await start_loadgen(
                f"pub-{tag}", server, logdir, args.clip_cache, "--publish", *consent
            )
            gens.append(publisher)
            published = await publisher.next_event("publishing", timeout=30)
            session: Path | None = None
            if record:
                assert rec_dir is not None
                reply = await publisher.record("start")
                session = rec_dir / STAGE / reply["session_id"]
                log(f"{tag}: recording {reply['session_id']}")
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

            async def sample(t0: float) -> None:
                metrics = await server.metrics(http)
                result.samples.append(
                    {
                        "t": time.monotonic() - t0,
                        "rss": rss_bytes(server.proc.pid),
                        "cpu": cpu_seconds(server.proc.pid),
                        "busy": machine_busy_seconds(),
                        "sent": metrics.get("medstage_rtp_packets_sent_total", math.nan),
                        "received": metrics.get("medstage_rtp_packets_received_total", math.nan),
                        "recorded_bytes": dir_bytes(session) if session is not None else 0,
                    }
                )

            await server.metrics(http)  # open the HTTP connection before the first snapshot
            tids: dict[int, str] = await recorder_threads(server.proc.pid) if record else {}
            result.recorder_threads = sorted(tids.values())

            window = args.soak or args.window
            log(f"{tag}: measuring for {window:g} s")
            t0, cpu0, busy0, m0, s0 = await snapshot()
            main0 = process_cpu_seconds(server.proc.pid)
            loop0 = await _loop_stats(server.base) if impl == "medstage" else None
            udp0 = udp_errors()
            threads0 = thread_cpu_seconds(server.proc.pid, list(tids))
            if args.soak:
                await sample(t0)
                ticks = max(1, round(window / args.sample))
                for i in range(1, ticks + 1):
                    await asyncio.sleep(max(0.0, t0 + i * window / ticks - time.monotonic()))
                    await sample(t0)
                    if i % 6 == 0 or i == ticks:
                        last = result.samples[-1]
                        log(f"{tag}: {last['t']:.0f} s, RSS {last['rss'] / 2**20:.1f} MB")
            else:
                await asyncio.sleep(window)
            t1, cpu1, busy1, m1, s1 = await snapshot()
            result.main_cpu_s = process_cpu_seconds(server.proc.pid) - main0
            loop1 = await _loop_stats(server.base) if loop0 is not None else None
            if loop0 is not None and loop1 is not None:
                result.loop = loop_window(loop0, loop1)
            udp1 = udp_errors()
            result.udp_rcvbuf_errors, result.udp_sndbuf_errors = udp1[0] - udp0[0], udp1[1] - udp0[1]
            drops = "medstage_send_drops_total"
            result.send_drops = m1.get(drops, 0.0) - m0.get(drops, 0.0)
            if tids:
                result.recorder_threads_cpu_s = thread_cpu_seconds(server.proc.pid, list(tids)) - threads0
            result.rss_n = rss_bytes(server.proc.pid)

            if record:
                assert session is not None
                stopped = time.monotonic()
                await publisher.record("stop")
                await check_recording(result, session, published["participant"], stopped)

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
        result.server_problems = server_log_problems(server.log_path)
        if rec_dir is not None:
            if args.keep_recordings:
                log(f"{tag}: recordings kept in {rec_dir}")
            else:
                shutil.rmtree(rec_dir, ignore_errors=True)


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file():
                total += p.stat().st_size
    return total


async def check_recording(result: Result, session: Path, publisher: str, stopped: float) -> None:
    """After recording.stop: wait for the manifest to say complete with every track finalized, then
    check that it has the publisher's audio and video in non-empty files, and verify the ledger."""
    manifest: dict[str, Any] = {}
    problems: list[str] = []
    deadline = stopped + 120
    while True:
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads((session / "manifest.json").read_text())
        tracks = manifest.get("tracks") or []
        if (
            manifest.get("status") != "recording"
            and manifest.get("stopped_at")
            and (session / "timeline.json").exists()
            and all(t.get("finalized") or t.get("error") for t in tracks)
        ):
            result.finalize_s = time.monotonic() - stopped
            break
        if time.monotonic() > deadline:
            problems.append(
                f"manifest not complete 120 s after recording.stop (status {manifest.get('status')})"
            )
            break
        await asyncio.sleep(0.2)
    if manifest.get("status") != "complete":
        problems.append(f"manifest status {manifest.get('status')!r}")
    parts = []
    tracks = manifest.get("tracks") or []
    for kind in ("audio", "video"):
        mine = [t for t in tracks if t.get("participant_id") == publisher and t.get("kind") == kind]
        if not mine:
            problems.append(f"no {kind} track of the publisher {publisher} in the manifest")
            continue
        for t in mine:
            path = session / t["file"]
            size = path.stat().st_size if path.is_file() else 0
            if size == 0:
                problems.append(f"{t['file']}: missing or empty")
            if not t.get("finalized"):
                problems.append(f"{t['file']}: not finalized")
            if t.get("error"):
                problems.append(f"{t['file']}: error {t['error']}")
            span = (t.get("capture_ended_at") or 0) - (t.get("capture_started_at") or 0)
            parts.append(
                f"{kind} {t['file']} {size / 2**20:.1f} MB, {t.get('frames')} frames, "
                f"{t.get('duration_s')} s of {span:.1f} s captured, dropped {t.get('dropped_frames')}"
            )
            # Video capture starts at the next keyframe (docs/recording.md): up to one keyframe
            # interval of the clip (30 frames) is dropped before it, by design.
            allowed = 30 if kind == "video" else 0
            if (t.get("dropped_frames") or 0) > allowed:
                problems.append(f"{t['file']}: {t['dropped_frames']} frames dropped (allowed {allowed})")
    others = [t for t in tracks if t.get("participant_id") != publisher]
    if others:
        problems.append(f"{len(others)} tracks of other participants (subscribers never publish)")
    verify = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "recording",
        "verify",
        str(session),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await verify.communicate()
    verdict = out.decode().strip().splitlines()[-1] if out.strip() else ""
    if verify.returncode != 0:
        problems.append(f"recording verify: exit {verify.returncode}: {out.decode().strip()}")
    result.record_ok = not problems
    result.record_summary = (
        f"finalized {result.finalize_s:.1f} s after recording.stop; "
        + "; ".join(parts)
        + f"; verify: {verdict}"
    )
    if problems:
        result.record_summary += "; PROBLEMS: " + "; ".join(problems)
        log(f"recording check failed: {'; '.join(problems)}")


async def _loop_stats(base: str) -> LoopStats | None:
    try:
        return await read_loop(base)
    except Exception:  # an older node without the figures: the column says n/a
        return None


# --- output ------------------------------------------------------------------------------------

HEADER = (
    "| server | subscribers | RTP pkt/s per subscriber | kbit/s per subscriber | server CPU | "
    "µs CPU per packet sent | subscribers per core | RSS per subscriber | loss | "
    "first video frame a keyframe | decoded frames in server | main loop: lag p99 / longest, GC |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def _f(value: float, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def row(r: Result) -> str:
    cpu_share = r.server_cpu_s / r.window_s if r.window_s else math.nan
    decoded = "not exposed" if r.decoded_frames is None else f"{r.decoded_frames:.0f}"
    return (
        f"| {r.label} | {r.n} | {_f(r.pps_per_subscriber, '.0f')} | "
        f"{_f(r.kbps_per_subscriber, '.0f')} | {_f(cpu_share * 100, '.0f')} % | "
        f"{_f(r.us_per_packet, '.1f')} | {_f(r.subscribers_per_core, '.0f')} | "
        f"{_f((r.rss_n - r.rss0) / r.n / 2**20, '.2f')} MB | {_f(r.loss * 100, '.2f')} % | "
        f"{r.first_keyframe}/{r.first_keyframe + r.first_not_keyframe} | {decoded} | {cell(r.loop)} |"
    )


def details(r: Result) -> str:
    return (
        f"{r.label} N={r.n}: window {r.window_s:.1f} s, server CPU {r.server_cpu_s:.2f} s "
        f"(main process {r.main_cpu_s:.2f} s), "
        f"sent {r.sent:.0f} (+{r.retransmitted:.0f} retransmitted), "
        f"received by subscribers {r.received_by_subscribers:.0f}, "
        f"server received {r.server_received:.0f}, RSS {r.rss0 / 2**20:.1f} → "
        f"{r.rss_n / 2**20:.1f} MB, subscribers with video {r.ready}/{r.n}, busiest load "
        f"generator {r.loadgen_cpu_max * 100:.0f} % of a core, publisher {r.publisher_cpu * 100:.0f} %"
        f" (clock resets {r.publisher_lag_resets}), keyframe requests at the publisher "
        f"{r.keyframe_requests}, other processes on the machine "
        f"{r.other_cpu_share * 100:.0f} % of a core"
        f", dropped: by the node {r.send_drops:.0f} (full send buffer), kernel UDP receive buffers "
        f"{r.udp_rcvbuf_errors:.0f}, send buffers {r.udp_sndbuf_errors:.0f}"
        + (f"; {r.note}" if r.note else "")
        + (f"; recording: {r.record_summary}" if r.recording else "")
        + (
            f"; recorder threads ({', '.join(r.recorder_threads)}) {r.recorder_threads_cpu_s:.2f} s CPU, "
            f"{r.recorder_threads_cpu_s / r.window_s * 100:.2f} % of a core"
            if r.recorder_threads and r.window_s
            else ""
        )
        + (
            f"; server log: {' | '.join(r.server_problems)}"
            if r.server_problems
            else "; server log: no warnings or errors"
        )
    )


# --- main --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, logdir: Path) -> list[Result]:
    plan: list[tuple[str, int, bool, int]] = []  # impl, N, recording, repeat
    if args.medstage:
        modes = {"off": [False], "on": [True], "both": [False, True]}[args.record]
        for rep in range(args.repeat):
            for n in args.subscribers:
                # Pairs alternate which run goes first, so that a slow drift of the machine's
                # load does not always land on the same side.
                order = modes if rep % 2 == 0 else modes[::-1]
                plan += [("medstage", n, record, rep + 1 if args.repeat > 1 else 0) for record in order]
    naive_ns: list[int] = []
    if args.naive:
        for n in args.subscribers:
            capped = min(n, args.naive_max)
            if capped not in naive_ns:
                naive_ns.append(capped)
        plan += [("naive", n, False, 0) for n in naive_ns]
    args.planned = len(plan)

    results: list[Result] = []
    for i, (impl, n, record, rep) in enumerate(plan, 1):
        what = f"{impl}{' with recording' if record else ''}, {n} subscribers" + (
            f", pair {rep}" if rep else ""
        )
        log(f"=== {i}/{len(plan)}: {what}")
        try:
            r = await measure(impl, n, args, logdir, record, rep)
        except Exception as exc:
            log(f"{what} failed: {type(exc).__name__}: {exc}")
            continue
        results.append(r)
        log(details(r))
        if r.other_cpu_share > 0.2:
            log(f"warning: other processes used {r.other_cpu_share * 100:.0f} % of a core: figures are noisy")
        log(row(r))

    print(
        f"\nMachine: {machine()}. Window {args.soak or args.window:g} s, settle {args.settle:g} s, "
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
        line = marginal([r for r in results if not r.recording], impl)
        if line:
            print(f"\n{line}")
    if args.record == "both":
        print(recording_comparison(results, args.max_other_load))
    if args.soak:
        for r in results:
            print(soak_summary(r))
    print()
    for r in results:
        print(f"- {details(r)}")
    return results


def recording_comparison(results: list[Result], max_other: float | None = None) -> str:
    """Extra server CPU with recording, per N: medians over the runs, and over the pairs (a run
    with recording minus the run without it next to it), which cancels slow drifts of the load.
    ``max_other``: leave out pairs in which other processes used more than that share of a core."""
    out = [
        "\nRecording cost (server CPU with the publisher's audio and video recorded vs not; medians):\n",
        "| subscribers | pairs | server CPU off | server CPU on | extra CPU | µs/packet off | µs/packet on "
        "| extra µs/packet | extra CPU per recorded packet | extra CPU, paired median (range) | "
        "extra, % of a core, paired median | recorder threads | other load (max) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    excluded: list[str] = []
    for n in sorted({r.n for r in results if r.impl == "medstage"}):
        runs = [r for r in results if r.impl == "medstage" and r.n == n and r.sent]
        # A run in which the publisher or the server fell behind real time (a busy machine) forwards
        # fewer packets for less CPU: it is left out, and its pair with it.
        pps = statistics.median(r.pps_per_subscriber for r in runs) if runs else math.nan
        inbound = statistics.median(r.server_received / r.window_s for r in runs) if runs else math.nan
        bad = {
            r.run_id
            for r in runs
            if r.pps_per_subscriber < 0.97 * pps
            or r.server_received / r.window_s < 0.97 * inbound
            or r.loss > 0.01
            or (max_other is not None and r.other_cpu_share > max_other)
        }
        for r in runs:
            if r.run_id in bad:
                excluded.append(
                    f"N={n} pair {r.run_id} {'with' if r.recording else 'without'} recording: "
                    f"{r.pps_per_subscriber:.0f} pkt/s per subscriber, {r.server_received / r.window_s:.0f} "
                    f"pkt/s from the publisher, loss {r.loss * 100:.2f} %, other processes "
                    f"{r.other_cpu_share * 100:.0f} % of a core"
                )
        runs = [r for r in runs if r.run_id not in bad]
        off = [r for r in runs if not r.recording]
        on = [r for r in runs if r.recording]
        if not off or not on:
            continue
        cpu_off = statistics.median(r.cpu_share for r in off)
        cpu_on = statistics.median(r.cpu_share for r in on)
        us_off = statistics.median(r.us_per_packet for r in off)
        us_on = statistics.median(r.us_per_packet for r in on)
        # The recorder handles what the server receives from the publisher (≈ 30 video frames and
        # 50 audio frames per second): its cost per packet received.
        received = statistics.median(r.server_received / r.window_s for r in on)
        per_recorded = (cpu_on - cpu_off) * 1e6 / received if received else math.nan
        by_run: dict[int, dict[bool, Result]] = {}
        for r in off + on:
            by_run.setdefault(r.run_id, {})[r.recording] = r
        paired = [
            (pair[True].cpu_share / pair[False].cpu_share - 1) * 100
            for pair in by_run.values()
            if len(pair) == 2 and pair[False].cpu_share
        ]
        paired_abs = [
            (pair[True].cpu_share - pair[False].cpu_share) * 100 for pair in by_run.values() if len(pair) == 2
        ]
        paired_abs_s = f"{statistics.median(paired_abs):+.2f}" if paired_abs else "n/a"
        paired_s = (
            f"{statistics.median(paired):+.1f} % ({min(paired):+.1f} … {max(paired):+.1f})"
            if paired
            else "n/a"
        )
        other = max(r.other_cpu_share for r in off + on) * 100
        threads = [
            r.recorder_threads_cpu_s / r.window_s for r in on if not math.isnan(r.recorder_threads_cpu_s)
        ]
        threads_s = (
            f"{statistics.median(threads) * 100:.2f} % of a core "
            f"({statistics.median(threads) / cpu_off * 100:+.1f} % of CPU off)"
            if threads
            else "n/a"
        )
        out.append(
            f"| {n} | {len(paired)} | {cpu_off * 100:.1f} % | {cpu_on * 100:.1f} % | "
            f"{(cpu_on / cpu_off - 1) * 100:+.1f} % | {us_off:.1f} | {us_on:.1f} | {us_on - us_off:+.1f} | "
            f"{per_recorded:.0f} µs/packet received | {paired_s} | {paired_abs_s} | {threads_s} | "
            f"{other:.0f} % of a core |"
        )
    if excluded:
        out.append(
            "\nLeft out (not in real time: packet rates below 0.97 of the median, or loss > 1 %"
            + (
                f", or other processes above {max_other * 100:.0f} % of a core"
                if max_other is not None
                else ""
            )
            + "), with their pairs:"
        )
        out += [f"- {line}" for line in excluded]
    return "\n".join(out)


def soak_summary(r: Result) -> str:
    """RSS over the soak: first, last, max, and the least-squares slope (MiB per minute), over all
    samples and after the first minute (warm-up: buffers, caches and the allocator settle)."""
    samples = r.samples
    if len(samples) < 3:
        return f"\n{r.label} N={r.n}: too few samples for a soak summary"

    def slope(points: list[dict[str, float]]) -> float:
        if len(points) < 2:
            return math.nan
        xs = [p["t"] / 60 for p in points]
        ys = [p["rss"] / 2**20 for p in points]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else math.nan

    rss = [p["rss"] / 2**20 for p in samples]
    late = [p for p in samples if p["t"] >= 60]
    lines = [
        f"\nSoak, {r.label}, N={r.n}, {samples[-1]['t']:.0f} s, a sample every "
        f"{samples[1]['t'] - samples[0]['t']:.0f} s: RSS first {rss[0]:.1f} MiB, last {rss[-1]:.1f} MiB, "
        f"max {max(rss):.1f} MiB (at {samples[rss.index(max(rss))]['t']:.0f} s), min {min(rss):.1f} MiB; "
        f"slope {slope(samples):+.3f} MiB/min over all samples, {slope(late):+.3f} MiB/min after the "
        f"first minute; last - first {rss[-1] - rss[0]:+.1f} MiB.",
        "",
        "| minute | RSS at end, MiB | server CPU | RTP pkt/s sent | RTP pkt/s received | recorded MiB | "
        "other load |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    prev = samples[0]
    for p in samples[1:]:
        if int(p["t"] // 60) == int(prev["t"] // 60) and p is not samples[-1]:
            continue
        dt = p["t"] - prev["t"]
        if dt <= 0:
            continue
        cpu = (p["cpu"] - prev["cpu"]) / dt
        other = max(0.0, (p["busy"] - prev["busy"]) / dt - cpu)
        lines.append(
            f"| {p['t'] / 60:.1f} | {p['rss'] / 2**20:.1f} | {cpu * 100:.1f} % | "
            f"{(p['sent'] - prev['sent']) / dt:.0f} | {(p['received'] - prev['received']) / dt:.0f} | "
            f"{p['recorded_bytes'] / 2**20:.1f} | {other * 100:.0f} % of a core (incl. load generators) |"
        )
        prev = p
    return "\n".join(lines)


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


def read_json(paths: list[str]) -> list[Result]:
    """Results written by --json, several runs pooled: pair numbers are made unique across files."""
    results: list[Result] = []
    names = {f.name for f in dataclasses.fields(Result)}
    for i, path in enumerate(paths):
        for raw in json.loads(Path(path).read_text()):
            r = Result(**{k: v for k, v in raw.items() if k in names})
            r.run_id += (i + 1) * 1000
            results.append(r)
    return results


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
                # Result holds LoopStats (a dataclass) since loop health joined the tables.
                default=lambda o: dataclasses.asdict(o) if dataclasses.is_dataclass(o) else str(o),
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--subscribers", type=int, nargs="+", default=None, help="default 25 50 100 (soak: 25)"
    )
    parser.add_argument("--window", type=float, default=20.0, help="measurement window, s")
    parser.add_argument("--settle", type=float, default=3.0, help="wait before measuring, s")
    parser.add_argument("--medstage", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--naive", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--naive-max", type=int, default=25, help="cap on naive subscribers")
    parser.add_argument("--per-loadgen", type=int, default=25, help="subscribers per load-generator process")
    parser.add_argument("--clip-cache", default=str(ROOT / "bench" / ".cache"))
    parser.add_argument("--logdir", default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--record",
        nargs="?",
        const="on",
        choices=("off", "on", "both"),
        default=None,
        help="record the publisher's tracks: on (bare --record), off, or both (each N without and "
        "with, in pairs); default off, on with --soak",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs (pairs with --record both) per N")
    parser.add_argument("--keep-recordings", action="store_true", help="keep the recordings directory")
    parser.add_argument(
        "--soak",
        nargs="?",
        type=float,
        const=600.0,
        default=None,
        metavar="SECONDS",
        help="one long window (600 s) sampling server RSS and CPU every --sample s",
    )
    parser.add_argument("--sample", type=float, default=10.0, help="soak sampling period, s")
    parser.add_argument(
        "--max-other-load",
        type=float,
        default=None,
        metavar="CORES",
        help="recording comparison: skip pairs in which other processes used more (0.2: 20 %% of a core)",
    )
    parser.add_argument(
        "--summarize",
        nargs="+",
        metavar="JSON",
        help="run nothing: print the recording comparison and soak summaries of earlier --json files, pooled",
    )
    args = parser.parse_args()
    if args.summarize:
        pooled = read_json(args.summarize)
        if {r.recording for r in pooled} == {False, True}:
            print(recording_comparison(pooled, args.max_other_load))
        for r in pooled:
            if r.samples:
                print(soak_summary(r))
        return 0
    if args.record is None:
        args.record = "on" if args.soak else "off"
    if args.subscribers is None:
        args.subscribers = [25] if args.soak else [25, 50, 100]
    # The run without recording of a pair gets the same configuration and consent.
    args.record_env = args.record == "both"
    if (args.record != "off" or args.soak) and args.naive:
        args.naive = False
        log("the naive relay has no recorder and is not soaked: not run (--record/--soak)")

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
        bad = [r for r in results if r.record_ok is False]
        for r in bad:
            log(f"recording check failed: {r.label} N={r.n}: {r.record_summary}")
        return 0 if len(results) == args.planned and not bad else 1
    except KeyboardInterrupt:
        return 130
    finally:
        kill_all_children()


if __name__ == "__main__":
    sys.exit(main())
