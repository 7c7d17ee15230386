"""Join waves: N viewers join a live stage at once, each through full WebRTC, and what it costs the node.

One run per wave size (``--waves 50 100 200``), each on a fresh node (``python -m server``, fd limit
raised with prlimit, ``MEDSTAGE_ICE_ADDRESSES=127.0.0.1``):

1. A publisher process joins as host and publishes the cached pre-encoded clip: Opus only by default
   (the issue's measurement: "audio arriving"), VP8 as well with ``--video``.
2. The probe (this process) joins two sockets: the host posts a comment every ``--comment-interval``
   (0.1 s) and times its echo on the listener socket; the listener sends a ``ping`` every 20 ms and
   times each ``pong``. The longest ping round trip during the wave is the longest event-loop stall
   seen from outside (plus one loopback round trip); ``medstage_event_loop_lag_max_seconds`` from
   /metrics is reported too when the node has it.
3. Wave client processes (``--per-client`` viewers each, started and warmed before the wave) get "go"
   at the same moment; every viewer then opens its WebSocket, joins, answers the ``subscriber.offer``
   with aiortc, completes ICE and DTLS and waits for its first RTP datagram. A viewer only *counts*
   datagrams: once ICE has chosen its pair, RTP and RTCP datagrams are counted and dropped before
   aiortc sees them (STUN and DTLS go on to aiortc). Every ``--sample``-th viewer instead takes the
   full aiortc receive path with a frame assembler (tests/support/framecheck.py: SRTP, every frame
   assembled, video's first frame a keyframe) as the correctness check.
4. Figures (node CPU from /proc of the node's process tree, sampled every 50 ms):
   - CPU per join: (node CPU from "go" to the last viewer's first media - the pre-wave CPU rate x
     that time) / viewers. It includes forwarding to viewers already joined during the wave.
   - RSS per viewer: (RSS 3 s after the last first media - RSS before the wave) / viewers.
   - last media: "go" → the last viewer's first RTP datagram (and the median viewer's).
   - longest stall (ping), comment echo p99 (comments posted during the wave).

    unshare --net sh -c 'ip link set lo up && exec python bench/joinwave.py --waves 50 100 200'

``--node-root DIR`` runs the node from another checkout (A/B with the same bench);
``--profile DIR`` runs it under cProfile (CPU time) and writes ``DIR/node-<N>-<run>.prof``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    cpu_seconds,
    create_stage,
    free_port,
    kill_all_children,
    log,
    machine,
    machine_busy_seconds,
    rss_bytes,
    server_log_problems,
    spawn,
    stop,
    wait_ready,
)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _token(stage: str, identity: str, role: str) -> str:
    from server.auth import Authenticator

    # Bench nodes have no API keys (development mode): they accept the development key's tokens.
    return Authenticator({}).mint(identity, name=identity, role=role, stage=stage)


# --- the wave client (a child process) ----------------------------------------------------------


@dataclass
class ViewerTimes:
    joined: float = 0.0
    offered: float = 0.0
    connected: float = 0.0  # DTLS up on our side
    first_media: float = 0.0  # first RTP datagram (monotonic)
    packets: int = 0
    error: str = ""
    sample: bool = False
    frames: int = 0
    first_frame_keyframe: bool | None = None


class _CountingSink:
    """Stands where aiortc's jitter buffer stands for a counting viewer: packets that reached aiortc
    before the datagram counter was in place are counted, never decoded."""

    def __init__(self, times: ViewerTimes, media: asyncio.Event) -> None:
        self.times, self.media = times, media

    def add(self, packet: Any) -> tuple[bool, None]:
        if not self.times.first_media:
            self.times.first_media = time.monotonic()
            self.media.set()
        self.times.packets += 1
        return False, None


class Viewer:
    def __init__(self, args: argparse.Namespace, index: int) -> None:
        self.args = args
        self.name = f"{args.prefix}-{index}"
        self.times = ViewerTimes(sample=args.sample > 0 and index % args.sample == 0)
        self.pc: Any = None
        self.ws: Any = None
        self.assemblers: list[Any] = []
        self.media = asyncio.Event()

    async def run(self, session: Any) -> None:
        from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        t = self.times
        self.ws = await session.ws_connect(self.args.ws, autoping=False, max_msg_size=0)
        token = _token(self.args.stage, self.name, "audience")
        join = {"type": "join", "id": "j", "stage": self.args.stage, "name": self.name, "role": "audience"}
        await self.ws.send_str(json.dumps({**join, "token": token}))
        offer = None
        while offer is None:
            msg = await self.ws.receive()
            if msg.type.name != "TEXT":
                raise ConnectionError(f"socket closed ({self.ws.close_code}) before the offer")
            frame = json.loads(msg.data)
            kind = frame.get("type")
            if kind == "joined":
                t.joined = time.monotonic()
            elif kind == "subscriber.offer":
                t.offered = time.monotonic()
                offer = frame
            elif kind == "error":
                raise RuntimeError(f"{frame.get('code')}: {frame.get('message')}")
        self.pc = pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        self._install_receive_side(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        if t.sample:
            from tests.support.client import _route_rtx

            _route_rtx(pc, offer["sdp"])
        await self.ws.send_str(
            json.dumps({"type": "subscriber.answer", "id": "a", "sdp": pc.localDescription.sdp})
        )

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState == "connected" and not t.connected:
                t.connected = time.monotonic()

        # The rest of the socket is read and dropped (slot messages, comments of the probe).
        drain = asyncio.ensure_future(self._drain())
        try:
            await self.media.wait()
        finally:
            drain.cancel()

    async def _drain(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type.name in ("CLOSE", "CLOSED", "ERROR"):
                return

    def _install_receive_side(self, pc: Any) -> None:
        from tests.support.framecheck import install_frame_assembler

        t = self.times
        for transceiver in pc.getTransceivers():
            if t.sample:
                self.assemblers.append(
                    install_frame_assembler(transceiver.receiver, transceiver.kind, on_frame=self._on_frame)
                )
            else:
                transceiver.receiver._RTCRtpReceiver__jitter_buffer = _CountingSink(t, self.media)
        if t.sample:
            return

        ice = pc.getTransceivers()[0].receiver.transport.transport

        @ice.on("statechange")
        def _ice_state() -> None:
            if ice.state == "completed":
                self._count_datagrams(ice)

    def _count_datagrams(self, ice: Any) -> None:
        """From the chosen pair on, RTP/RTCP datagrams are counted and dropped (no SRTP, no aiortc);
        STUN (consent checks) and DTLS still reach aiortc."""
        pair = ice._connection._nominated.get(1)
        if pair is None:
            return
        protocol = pair.protocol
        original = protocol.datagram_received
        t, media = self.times, self.media

        def datagram_received(data: bytes, addr: Any) -> None:
            if 127 < data[0] < 192:  # RFC 7983: RTP or RTCP
                if not 63 < data[1] & 0x7F < 96:  # RTCP packet types 192-223 (RFC 5761)
                    if not t.first_media:
                        t.first_media = time.monotonic()
                        media.set()
                    t.packets += 1
                return
            original(data, addr)

        protocol.datagram_received = datagram_received

    def _on_frame(self, stats: Any) -> None:
        t = self.times
        if not t.first_media:
            firsts = [a.stats.first_packet_at for a in self.assemblers if a.stats.first_packet_at]
            t.first_media = min(firsts, default=time.monotonic())
        self.media.set()

    def finish(self) -> None:
        t = self.times
        if self.assemblers:
            t.frames = sum(a.stats.frames_complete for a in self.assemblers)
            t.packets = sum(a.stats.packets for a in self.assemblers)
            video = [a.stats for a in self.assemblers if a.stats.kind == "video" and a.stats.frames_complete]
            t.first_frame_keyframe = video[0].first_frame_keyframe if video else None


def _lighter_receivers() -> None:
    """The load generator must not be the bottleneck: its receivers never feed aiortc's remote bitrate
    estimator (counting viewers drop media before aiortc; sample viewers need no REMB), whose
    1,000-bucket rate counter costs ≈ 0.3 ms per video receiver to build. Client process only."""
    import aiortc.rtcrtpreceiver

    class NoEstimator:
        def add(self, *args: Any) -> None:
            return None

    aiortc.rtcrtpreceiver.RemoteBitrateEstimator = NoEstimator  # type: ignore[assignment,misc]


async def client_main(args: argparse.Namespace) -> None:
    import aiohttp

    from tests.support.client import use_host_addresses

    use_host_addresses(["127.0.0.1"])
    _lighter_receivers()
    stdin = await _stdin()
    viewers = [Viewer(args, i) for i in range(args.viewers)]
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        emit("up", viewers=len(viewers))
        if (await stdin.readline()).decode().strip() != "go":
            return
        cpu0 = time.process_time()

        async def one(v: Viewer) -> None:
            try:
                # The whole join, not only the wait for media: a join that never gets its offer (a
                # socket the node never accepted) is a failure of the wave, not a hang of the bench.
                async with asyncio.timeout(args.media_timeout):
                    await v.run(session)
            except TimeoutError:
                v.times.error = "timed out" + (" before the offer" if not v.times.offered else "")
            except Exception as exc:
                v.times.error = f"{type(exc).__name__}: {exc}"[:200]

        await asyncio.gather(*(one(v) for v in viewers))
        await asyncio.sleep(args.after)  # frames keep arriving for the sample's check
        for v in viewers:
            v.finish()
        emit(
            "done",
            cpu_s=time.process_time() - cpu0,
            viewers=[vars(v.times) for v in viewers],
        )
        # Steady state after the wave (--hold): the parent asks for the counting viewers' datagram
        # totals at both ends of its window; anything else ("quit", EOF) ends the client.
        while (await stdin.readline()).decode().strip() == "count":
            counting = [v.times for v in viewers if not v.times.sample and v.times.first_media]
            emit("count", packets=sum(t.packets for t in counting), viewers=len(counting))
        for v in viewers:
            if v.pc is not None:
                with contextlib.suppress(Exception):
                    await v.pc.close()


async def publisher_main(args: argparse.Namespace) -> None:
    from tests.support.client import MedstageClient
    from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip

    stdin = await _stdin()
    clip = load_clip(args.clip_cache)
    async with MedstageClient(args.url) as client:
        await client.join(args.stage, f"{args.prefix}-speaker", "host", answer=False)
        await client.request({"type": "stage.start"}, check=False)  # comments need a live stage
        video = EncodedVideoTrack(clip) if args.video else None
        await client.publish(EncodedAudioTrack(clip), video)
        emit("publishing")
        await stdin.readline()


async def _stdin() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# --- the probe (in the harness) ------------------------------------------------------------------


@dataclass
class Probe:
    """Pings every 20 ms and a comment every ``interval`` s (as a moderator: the publisher is the host
    and started the stage); both timed, with the send time."""

    ws_url: str
    stage: str
    interval: float
    pings: list[tuple[float, float]] = field(default_factory=list)  # (sent, round trip)
    comments: list[tuple[float, float]] = field(default_factory=list)  # (sent, echo latency)
    posted: int = 0
    errors: list[str] = field(default_factory=list)

    async def run(self, ready: asyncio.Event) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            host = await session.ws_connect(self.ws_url, autoping=False, max_msg_size=0)
            listener = await session.ws_connect(self.ws_url, autoping=False, max_msg_size=0)
            for ws, name, role in (
                (host, "probe-poster", "moderator"),
                (listener, "probe-listener", "audience"),
            ):
                join = {"type": "join", "id": "j", "stage": self.stage, "name": name, "role": role}
                await ws.send_str(json.dumps({**join, "token": _token(self.stage, name, role)}))
            sent_pings: dict[int, float] = {}
            sent_comments: dict[str, float] = {}

            async def read(ws: Any) -> None:
                while True:
                    msg = await ws.receive()
                    now = time.monotonic()
                    if msg.type.name != "TEXT":
                        return
                    frame = json.loads(msg.data)
                    kind = frame.get("type")
                    if kind == "pong" and frame.get("id") in sent_pings:
                        sent = sent_pings.pop(frame["id"])
                        self.pings.append((sent, now - sent))
                    elif kind == "comment.posted" and ws is listener:
                        sent = sent_comments.pop(frame["comment"]["text"], None)
                        if sent is not None:
                            self.comments.append((sent, now - sent))
                    elif kind == "error" and len(self.errors) < 5:
                        self.errors.append(str(frame))

            async def ping() -> None:
                for seq in range(10**9):
                    sent_pings[seq] = time.monotonic()
                    await listener.send_str(json.dumps({"type": "ping", "id": seq}))
                    await asyncio.sleep(0.02)

            async def comment() -> None:
                for seq in range(10**9):
                    text = f"jw {seq}"
                    sent_comments[text] = time.monotonic()
                    self.posted += 1
                    await host.send_str(json.dumps({"type": "comment.post", "id": f"c{seq}", "text": text}))
                    await asyncio.sleep(self.interval)

            async with asyncio.TaskGroup() as group:
                for task in (read(host), read(listener), ping(), comment()):
                    group.create_task(task)
                ready.set()


# --- the harness ---------------------------------------------------------------------------------


@dataclass
class Proc:
    proc: asyncio.subprocess.Process
    lines: asyncio.Queue[dict[str, Any]]
    pump: asyncio.Future[None]  # reads the child's stdout into ``lines`` until it exits

    async def expect(self, event: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                line = await self.lines.get()
                if line.get("event") == event:
                    return line
                if line.get("event") == "error":
                    log(f"child error: {line}")

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()


_SELF = str(Path(__file__).resolve())


def _log_file(path: Path, mode: str = "ab") -> Any:
    return path.open(mode)


async def start_child(*argv: str, logfile: Path) -> Proc:
    with _log_file(logfile) as err:
        proc = await spawn(
            sys.executable,
            _SELF,
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def pump() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            with contextlib.suppress(ValueError):
                await lines.put(json.loads(raw))

    return Proc(proc, lines, asyncio.ensure_future(pump()))


async def start_node(args: argparse.Namespace, logdir: Path, tag: str) -> tuple[Any, str, Path]:
    port = free_port()
    code = (
        f"import sys; sys.path.insert(0, {args.node_root!r}); sys.argv = ['server', '--host', '127.0.0.1', "
        f"'--port', '{port}']; import runpy; "
    )
    if args.profile:
        out = f"{args.profile}/node-{tag}.prof"
        run = "runpy.run_module('server', run_name='__main__')"
        # CPU time, not wall time: on a shared machine a wall-clock profile counts the neighbours too.
        code += (
            "import cProfile, time; profile = cProfile.Profile(time.process_time)\n"
            f"try:\n    profile.run({run!r})\nexcept SystemExit:\n    pass\n"
            f"profile.dump_stats({out!r})"
        )
    else:
        code += "runpy.run_module('server', run_name='__main__')"
    cmd = [sys.executable, "-c", code]
    from bench.fanout import server_fd_limit

    limit = min(args.fd_limit, server_fd_limit())
    import shutil

    if shutil.which("prlimit"):
        cmd = ["prlimit", f"--nofile={limit}:{limit}", *cmd]
    env = dict(
        os.environ, MEDSTAGE_ICE_ADDRESSES="127.0.0.1", MEDSTAGE_COMMENT_RATE="100000", PYTHONUNBUFFERED="1"
    )
    for item in args.server_env:
        key, _, value = item.partition("=")
        env[key] = value
    log_path = logdir / f"server-{tag}.log"
    with _log_file(log_path, "wb") as out_file:
        proc = await spawn(*cmd, env=env, stdout=out_file, stderr=asyncio.subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    await wait_ready(proc, base, log_path, "server")
    return proc, base, log_path


async def metric_sum(base: str, name: str) -> float:
    import aiohttp

    total = 0.0
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def hold_window(args: argparse.Namespace, base: str, clients: list[Proc], pid: int) -> dict[str, Any]:
    """Steady state with the whole wave watching: loss = 1 - datagrams a counting viewer received per
    second / RTP packets the node sent per viewer per second (both over the same window)."""

    async def counts() -> tuple[int, int]:
        await asyncio.gather(*(c.send("count") for c in clients))
        replies = [await c.expect("count", 30) for c in clients]
        return sum(r["packets"] for r in replies), sum(r["viewers"] for r in replies)

    sent = "medstage_rtp_packets_sent_total"
    p0, _ = await counts()
    s0, c0, t0 = await metric_sum(base, sent), cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(args.hold)
    p1, counting = await counts()
    s1, c1, t1 = await metric_sum(base, sent), cpu_seconds(pid), time.monotonic()
    window = t1 - t0
    return {"hold_s": window, "hold_sent_pps": (s1 - s0) / window, "hold_counting_viewers": counting,
            "hold_received": p1 - p0, "hold_cpu_share": (c1 - c0) / window,
            "hold_us_per_packet": 1e6 * (c1 - c0) / max(1.0, s1 - s0)}


async def lag_metric(base: str) -> float | None:
    import aiohttp

    with contextlib.suppress(Exception):
        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith("medstage_event_loop_lag_max_seconds"):
                    return float(line.rsplit(" ", 1)[1])
    return None


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_wave(args: argparse.Namespace, n: int, logdir: Path, tag: str) -> dict[str, Any]:
    stage = f"wave-{tag}"
    node, base, log_path = await start_node(args, logdir, tag)
    ws_url = base.replace("http://", "ws://") + "/ws"
    children: list[Proc] = []
    probe_task = None
    try:
        await create_stage(base, stage)
        common = ["--url", base, "--stage", stage]
        publisher = await start_child(
            "publish",
            *common,
            *(["--video"] if args.video else []),
            "--prefix",
            f"{tag}p",
            logfile=logdir / f"publisher-{tag}.log",
        )
        children.append(publisher)
        await publisher.expect("publishing", 30)
        probe = Probe(ws_url, stage, args.comment_interval)
        probe_ready = asyncio.Event()
        probe_task = asyncio.ensure_future(probe.run(probe_ready))
        await asyncio.wait_for(probe_ready.wait(), 10)
        counts = [args.per_client] * (n // args.per_client) + (
            [n % args.per_client] if n % args.per_client else []
        )
        for i, k in enumerate(counts):
            child = await start_child(
                "client",
                *common,
                "--viewers",
                str(k),
                "--prefix",
                f"{tag}c{i}",
                "--sample",
                str(args.sample),
                "--media-timeout",
                str(args.media_timeout),
                logfile=logdir / f"client-{tag}-{i}.log",
            )
            children.append(child)
        for child in children[1:]:
            await child.expect("up", 60)
        await asyncio.sleep(args.settle)
        pid = node.pid
        # Pre-wave CPU rate: publisher received and probe answered, nobody watching yet.
        c0, m0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(args.baseline)
        c1, m1 = cpu_seconds(pid), time.monotonic()
        base_rate = (c1 - c0) / (m1 - m0)
        rss0 = rss_bytes(pid)
        samples: list[tuple[float, float, float]] = []  # (time, node CPU, the machine's busy CPU)

        async def sample_cpu() -> None:
            while True:
                samples.append((time.monotonic(), cpu_seconds(pid), machine_busy_seconds()))
                await asyncio.sleep(0.05)

        sampler = asyncio.ensure_future(sample_cpu())
        go = time.monotonic()
        cpu_go, busy_go = cpu_seconds(pid), machine_busy_seconds()
        await asyncio.gather(*(c.send("go") for c in children[1:]))
        dones = [await c.expect("done", args.media_timeout + 60) for c in children[1:]]
        sampler.cancel()
        viewers = [v for d in dones for v in d["viewers"]]
        ok = [v for v in viewers if v["first_media"]]
        last = max((v["first_media"] for v in ok), default=go)
        cpu_last, busy_last = next(
            ((c, b) for t, c, b in samples if t >= last), (cpu_seconds(pid), machine_busy_seconds())
        )
        await asyncio.sleep(max(0.0, last + 3 - time.monotonic()))
        rss1 = rss_bytes(pid)
        lag = await lag_metric(base)
        held = await hold_window(args, base, children[1:], pid) if args.hold > 0 else {}
        wave_pings = [rtt for sent, rtt in probe.pings if go <= sent <= last]
        before_pings = [rtt for sent, rtt in probe.pings if sent < go]
        wave_comments = [lat for sent, lat in probe.comments if go <= sent <= last]
        failures: dict[str, int] = {}
        for v in viewers:
            if v["error"] or not v["first_media"]:
                key = v["error"] or "no media"
                failures[key] = failures.get(key, 0) + 1
        sample = [v for v in viewers if v["sample"]]
        result = {
            "viewers": n,
            "with_media": len(ok),
            "failures": failures,
            "cpu_ms_per_join": 1000 * ((cpu_last - cpu_go) - base_rate * (last - go)) / max(1, len(ok)),
            "node_cpu_s_wave": cpu_last - cpu_go,
            "baseline_cpu_rate": base_rate,
            # Contention: the node's share of a core during the wave, and the whole machine's busy
            # cores (2.0 = both saturated; then wall-clock figures measure the neighbours too).
            "node_cpu_share": (cpu_last - cpu_go) / max(1e-9, last - go),
            "machine_busy_cores": (busy_last - busy_go) / max(1e-9, last - go),
            "rss_kb_per_viewer": (rss1 - rss0) / 1024 / max(1, len(ok)),
            "rss_mb_before": rss0 / 2**20,
            "rss_mb_after": rss1 / 2**20,
            "last_media_s": last - go,
            "median_media_s": statistics.median([v["first_media"] - go for v in ok]) if ok else None,
            "last_connected_s": max((v["connected"] - go for v in viewers if v["connected"]), default=None),
            "last_offer_s": max((v["offered"] - go for v in viewers if v["offered"]), default=None),
            "ping_max_s": max(wave_pings, default=None),
            "ping_p50_before_s": quantile(before_pings, 0.5),
            "lag_max_metric_s": lag,
            "comment_p99_s": quantile(wave_comments, 0.99),
            "comment_max_s": max(wave_comments, default=None),
            "comments_in_wave": len(wave_comments),
            "sample_viewers": len(sample),
            "sample_with_frames": sum(1 for v in sample if v["frames"] > 0),
            "sample_first_video_keyframe": [
                v["first_frame_keyframe"] for v in sample if v["first_frame_keyframe"] is not None
            ],
            "client_cpu_s": [d["cpu_s"] for d in dones],
            "probe_errors": probe.errors,
            "server_log": server_log_problems(log_path),
            **held,
        }
        if held:
            # Per viewer: what a counting viewer got against what the node sent to each viewer.
            per_viewer_sent = held["hold_sent_pps"] / max(1, len(ok))
            per_viewer_got = held["hold_received"] / max(1, held["hold_counting_viewers"]) / held["hold_s"]
            result["hold_pps_per_viewer"] = per_viewer_sent
            result["hold_loss"] = 1 - per_viewer_got / per_viewer_sent if per_viewer_sent else None
        return result
    finally:
        if probe_task is not None:
            probe_task.cancel()
            with contextlib.suppress(BaseException):
                await probe_task
        for child in children:
            with contextlib.suppress(Exception):
                await child.send("quit")
        for child in children:
            await stop(child.proc, grace=5)
        await stop(node, grace=10)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def show(r: dict[str, Any]) -> str:
    def f(x: Any, fmt: str) -> str:
        return "n/a" if x is None else format(x, fmt)

    return (
        f"| {r['label']} | {r['viewers']} | {r['with_media']} | {f(r['cpu_ms_per_join'], '.1f')} | "
        f"{f(r['rss_kb_per_viewer'], '.0f')} | {f(r['last_media_s'], '.2f')} | "
        f"{f(r['median_media_s'], '.2f')} | "
        f"{f(r['ping_max_s'], '.3f')} | {f(r['lag_max_metric_s'], '.3f')} | {f(r['comment_p99_s'], '.3f')} | "
        f"{r['sample_with_frames']}/{r['sample_viewers']} | {f(r['node_cpu_share'], '.2f')} | "
        f"{f(r['machine_busy_cores'], '.2f')} |"
    )


async def harness(args: argparse.Namespace) -> None:
    logdir = Path(args.logdir)
    log(f"{machine()}; logs in {logdir}")
    results = []
    try:
        for rep in range(args.repeat):
            for n in args.waves:
                tag = f"{n}-{rep}"
                log(f"wave of {n} (run {rep + 1}/{args.repeat}), node from {args.node_root}")
                r = await one_wave(args, n, logdir, tag)
                r["label"] = args.label
                results.append(r)
                log(json.dumps({k: v for k, v in r.items() if k != "server_log"}))
                if r["server_log"]:
                    log("node log: " + "; ".join(r["server_log"]))
    finally:
        kill_all_children()
    print(
        "| node | wave | with media | node CPU ms/join | RSS KB/viewer | last media s | median media s | "
        "longest ping s | lag max (metric) s | comment p99 s | sample viewers with frames | "
        "node CPU share | machine busy cores |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(show(r))
    held = [r for r in results if "hold_loss" in r]
    if held:
        print("\n| node | viewers | pkt/s per viewer | loss | node CPU share | µs CPU per packet sent |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in held:
            print(
                f"| {r['label']} | {r['with_media']} | {r['hold_pps_per_viewer']:.0f} | "
                f"{100 * r['hold_loss']:.2f} % | {r['hold_cpu_share']:.2f} | {r['hold_us_per_packet']:.1f} |"
            )
    if args.json:
        _write(Path(args.json), json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description="medstage join-wave benchmark")
    sub = parser.add_subparsers(dest="mode")
    client = sub.add_parser("client", help="(internal) a wave client process")
    publish = sub.add_parser("publish", help="(internal) the publisher process")
    for p in (client, publish):
        p.add_argument("--url", required=True)
        p.add_argument("--stage", required=True)
        p.add_argument("--prefix", default="jw")
    client.add_argument("--viewers", type=int, required=True)
    client.add_argument("--sample", type=int, default=10, help="every Nth viewer assembles frames (0: none)")
    client.add_argument("--media-timeout", type=float, default=60.0)
    client.add_argument(
        "--after", type=float, default=2.0, help="s to keep receiving after the last first media"
    )
    publish.add_argument("--video", action="store_true")
    publish.add_argument("--clip-cache", default=None)
    parser.add_argument("--waves", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--per-client", type=int, default=100, help="viewers per wave client process")
    parser.add_argument("--sample", type=int, default=10, help="every Nth viewer assembles frames (0: none)")
    parser.add_argument("--video", action="store_true", help="publish VP8 video too (default: Opus only)")
    parser.add_argument("--comment-interval", type=float, default=0.1)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument(
        "--hold", type=float, default=0.0, help="s of steady state after the wave (0: none)"
    )
    parser.add_argument("--baseline", type=float, default=2.0, help="s of pre-wave CPU rate measurement")
    parser.add_argument("--media-timeout", type=float, default=90.0)
    parser.add_argument("--fd-limit", type=int, default=65536)
    parser.add_argument("--node-root", default=str(ROOT), help="checkout whose server/ runs the node")
    parser.add_argument("--label", default="", help="names the node in the table (e.g. before/after)")
    parser.add_argument("--profile", default=None, help="run the node under cProfile; .prof files here")
    parser.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for the node")
    parser.add_argument("--logdir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import uvloop

    if args.mode == "client":
        args.ws = args.url.replace("http://", "ws://") + "/ws"
        from bench.fanout_client import raise_fd_limit

        raise_fd_limit(args.viewers * 4 + 256)
        uvloop.run(client_main(args))
    elif args.mode == "publish":
        uvloop.run(publisher_main(args))
    else:
        args.node_root = str(Path(args.node_root).resolve())
        args.label = args.label or Path(args.node_root).name
        stamp = time.strftime("%Y%m%d-%H%M%S")
        args.logdir = args.logdir or str(ROOT / "bench" / ".cache" / "runs" / f"joinwave-{stamp}")
        Path(args.logdir).mkdir(parents=True, exist_ok=True)
        if args.profile:
            args.profile = str(Path(args.profile).resolve())
            Path(args.profile).mkdir(parents=True, exist_ok=True)
        uvloop.run(harness(args))


if __name__ == "__main__":
    main()
