"""Client process for bench/fanout.py: K audience sockets that time comments, or the comment posters.

Plain WebSockets, no WebRTC: the ``subscriber.offer`` every participant gets after ``join`` is
ignored (never answered). Driven over pipes like bench/loadgen.py: JSON lines on stdout (``up``,
``joined``, ``stats``, ``posted``, ``report``, ``error``), commands on stdin (``join``, ``stats``,
``post``, ``report``, ``quit``). Runs on uvloop.

An audience socket times every ``comment.posted`` whose text is ``bench <seq> <send time>``:
latency = receive time - send time (``time.time()``: every process is on one machine, one clock).

    python bench/fanout_client.py --url http://127.0.0.1:8080 --stage bench --audience 250 --out DIR
    python bench/fanout_client.py --url http://127.0.0.1:8080 --stage bench --posters 4 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import resource
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.auth import Authenticator

_decode = msgspec.json.Decoder().decode
# Bench nodes have no API keys (development mode): they accept tokens signed with the development key.
_tokens = Authenticator({})


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def raise_fd_limit(wanted: int) -> int:
    """Soft RLIMIT_NOFILE up to ``wanted`` (the hard limit too when we may: root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class Timings:
    """What all the audience sockets of this process received: one sample per bench comment."""

    def __init__(self) -> None:
        # Triples (seq, receive - send, receive - the event's server `at` or NaN), seconds.
        self.samples = array("d")
        self.received = 0
        self.duplicates = 0
        self.foreign = 0  # comment.posted that are not ours (text not "bench ...")


class Participant:
    """One signalling WebSocket: joins, then reads every frame until the socket closes."""

    def __init__(self, name: str, role: str, timings: Timings | None) -> None:
        self.name, self.role, self.timings = name, role, timings
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.joined = asyncio.get_running_loop().create_future()
        self.offered = asyncio.Event()
        self.joined_at = self.offered_at = 0.0
        self.seqs: set[int] = set()
        self.errors: Counter[str] = Counter()
        self.replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self.close_code: int | None = None
        self.reader: asyncio.Task[None] | None = None

    async def join(self, session: aiohttp.ClientSession, url: str, stage: str, media: bool = True) -> None:
        self.ws = await session.ws_connect(url, autoclose=False, max_msg_size=0)
        self.reader = asyncio.create_task(self._read())
        # The name is the identity: unique over all the client processes of a run.
        token = _tokens.mint(self.name, name=self.name, role=self.role, stage=stage)
        join: dict[str, Any] = {"type": "join", "id": "join", "stage": stage, "name": self.name}
        join["role"] = self.role
        if not media:
            join["media"] = False  # a chat-only socket: no subscriber offer will come
        await self.ws.send_str(json.dumps({**join, "token": token}))
        await self.joined

    async def send_request(self, message: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send a request with an ``id``; the future gets its reply (``ok``, ``error``, ...)."""
        assert self.ws is not None
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.replies[message["id"]] = future
        await self.ws.send_str(json.dumps(message))
        return future

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        return await (await self.send_request(message))

    async def _read(self) -> None:
        assert self.ws is not None
        timings = self.timings
        try:
            while True:
                msg = await self.ws.receive()
                now = time.time()
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    if msg.type in (
                        aiohttp.WSMsgType.CLOSE,
                        aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR,
                    ):
                        break
                    continue
                frame: dict[str, Any] = _decode(msg.data)
                kind = frame.get("type")
                if kind == "comment.posted":
                    if timings is not None:
                        self._timed(frame, now, timings)
                elif kind == "joined":
                    self.joined_at = now
                    if not self.joined.done():
                        self.joined.set_result(frame)
                elif kind == "subscriber.offer":
                    self.offered_at = now
                    self.offered.set()
                elif kind == "error":
                    self.errors[frame.get("code", "?")] += 1
                    if frame.get("id") == "join" and not self.joined.done():
                        self.joined.set_exception(RuntimeError(f"join refused: {frame}"))
                future = self.replies.pop(frame.get("id"), None) if "id" in frame else None
                if future is not None and not future.done():
                    future.set_result(frame)
        finally:
            self.close_code = self.ws.close_code
            if not self.joined.done():
                self.joined.set_exception(RuntimeError(f"socket closed before joined ({self.close_code})"))
            for future in self.replies.values():
                if not future.done():
                    future.set_exception(RuntimeError(f"socket closed ({self.close_code})"))

    def _timed(self, frame: dict[str, Any], now: float, timings: Timings) -> None:
        text = frame["comment"]["text"]
        if not text.startswith("bench "):
            timings.foreign += 1
            return
        _, seq_text, sent_text = text.split(" ", 2)
        seq = int(seq_text)
        if seq in self.seqs:
            timings.duplicates += 1
            return
        self.seqs.add(seq)
        timings.received += 1
        at = frame.get("at")
        fanout = now - at if isinstance(at, (int, float)) else math.nan
        timings.samples.extend((seq, now - float(sent_text), fanout))


class Audience:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.timings = Timings()
        self.people: list[Participant] = []
        self.failures: Counter[str] = Counter()

    async def join(self, session: aiohttp.ClientSession) -> None:
        gate = asyncio.Semaphore(self.args.join_concurrency)

        async def one(i: int) -> None:
            person = Participant(f"{self.args.prefix}-{i}", "audience", self.timings)
            self.people.append(person)
            try:
                async with gate:
                    await person.join(session, self.args.ws, self.args.stage, not self.args.chat_only)
                if not self.args.chat_only:
                    async with asyncio.timeout(self.args.offer_timeout):
                        await person.offered.wait()
            except Exception as exc:
                self.failures[f"{type(exc).__name__}: {exc}"[:200]] += 1

        started = time.time()
        async with asyncio.TaskGroup() as group:
            for i in range(self.args.audience):
                group.create_task(one(i))
        # The measuring tool's own GC passes must not show up as latency: what exists now is
        # long-lived, keep it out of every later collection.
        gc.collect()
        gc.freeze()
        joined = [p.joined_at for p in self.people if p.joined_at]
        offered = [p.offered_at for p in self.people if p.offered_at]
        emit(
            "joined",
            joined=len(joined),
            offered=len(offered),
            started=started,
            last_joined=max(joined, default=0.0),
            last_offered=max(offered, default=0.0),
            failures=dict(self.failures),
        )

    def stats(self) -> dict[str, Any]:
        t = self.timings
        closes = Counter(str(p.close_code) for p in self.people if p.close_code is not None)
        errors: Counter[str] = Counter()
        for p in self.people:
            errors.update(p.errors)
        return {
            "received": t.received,
            "duplicates": t.duplicates,
            "foreign": t.foreign,
            "closed": dict(closes),
            "errors": dict(errors),
            "cpu_s": time.process_time(),
            "time": time.monotonic(),
        }

    def report(self) -> dict[str, Any]:
        out = Path(self.args.out)
        samples = out / f"{self.args.prefix}-samples.f64"
        samples.write_bytes(self.timings.samples.tobytes())
        per_socket = [len(p.seqs) for p in self.people]
        return {
            **self.stats(),
            "samples_file": str(samples),
            "per_socket_min": min(per_socket, default=0),
            "per_socket_max": max(per_socket, default=0),
        }


class Posters:
    """``--posters`` sockets (the first the host, the others ``--poster-role``) sharing one schedule."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.people: list[Participant] = []

    async def join(self, session: aiohttp.ClientSession) -> None:
        for i in range(self.args.posters):
            role = "host" if i == 0 else self.args.poster_role
            person = Participant(f"{self.args.prefix}-{i}", role, None)
            self.people.append(person)
            await person.join(session, self.args.ws, self.args.stage)
        # The stage may need to be live for comments; an older server answers unknown_type.
        async with asyncio.timeout(10):
            start = await self.people[0].request({"type": "stage.start", "id": "start"})
        emit("joined", joined=len(self.people), roles=[p.role for p in self.people], stage_start=start)

    async def post(self) -> None:
        """``--rate`` comments/s for ``--duration`` s, round-robin over the posters, on an absolute
        schedule (a late send does not shift the following ones)."""
        total = round(self.args.rate * self.args.duration)
        acks: list[asyncio.Future[dict[str, Any]]] = []
        ack_latency = array("d")  # reply time - send time, refusals included
        lateness = 0.0
        loop = asyncio.get_running_loop()

        def timed(sent: float) -> Any:
            def done(future: asyncio.Future[dict[str, Any]]) -> None:
                if not future.cancelled() and future.exception() is None:
                    ack_latency.append(time.time() - sent)

            return done

        started = time.time()
        t0 = loop.time()
        for seq in range(total):
            delay = t0 + seq / self.args.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lateness = max(lateness, -delay)
            person = self.people[seq % len(self.people)]
            sent = time.time()
            ack = await person.send_request(
                {"type": "comment.post", "id": seq, "text": f"bench {seq} {sent:.6f}"}
            )
            ack.add_done_callback(timed(sent))
            acks.append(ack)
        finished = time.time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.args.ack_timeout):
                await asyncio.wait(acks)
        replies: Counter[str] = Counter()
        examples: dict[str, dict[str, Any]] = {}  # one refusal per error code, as the server sent it
        for ack in acks:
            if not ack.done():
                replies["no reply"] += 1
                ack.cancel()
            elif ack.exception() is not None:
                replies[f"failed: {ack.exception()}"] += 1
            elif (reply := ack.result())["type"] == "error":
                replies[f"error {reply.get('code')}"] += 1
                examples.setdefault(str(reply.get("code")), reply)
            else:
                replies[str(reply["type"])] += 1
        acked = sorted(ack_latency)
        emit(
            "posted",
            sent=total,
            started=started,
            finished=finished,
            max_lateness=lateness,
            replies=dict(replies),
            error_examples=examples,
            ack_p50=acked[len(acked) // 2] if acked else None,
            ack_max=acked[-1] if acked else None,
        )


async def commands() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(args: argparse.Namespace) -> None:
    stdin = await commands()
    role: Audience | Posters = Posters(args) if args.posters else Audience(args)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    work: set[asyncio.Task[None]] = set()

    def start(coro: Any) -> None:
        task = asyncio.create_task(coro)
        work.add(task)

        def done(t: asyncio.Task[None]) -> None:
            work.discard(t)
            if not t.cancelled() and t.exception() is not None:
                emit("error", message=f"{type(t.exception()).__name__}: {t.exception()}")

        task.add_done_callback(done)

    async with aiohttp.ClientSession(connector=connector) as session:
        emit("up", fd_limit=args.fd_limit)
        try:
            while True:
                command = (await stdin.readline()).decode().strip()
                if command == "join":
                    start(role.join(session))
                elif command == "post" and isinstance(role, Posters):
                    start(role.post())
                elif command == "stats" and isinstance(role, Audience):
                    emit("stats", **role.stats())
                elif command == "report" and isinstance(role, Audience):
                    emit("report", **role.report())
                elif command in ("quit", ""):  # "" is EOF: our parent is gone
                    break
        finally:
            for task in list(work):
                task.cancel()
            readers = [p.reader for p in role.people if p.reader is not None]
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*work, *readers, return_exceptions=True)
            # No closing handshakes: the server is torn down by the harness anyway.


def main() -> None:
    parser = argparse.ArgumentParser(description="medstage comment fan-out client")
    parser.add_argument("--url", required=True, help="http://host:port of the node")
    parser.add_argument("--stage", required=True)
    parser.add_argument("--prefix", default="fc")
    parser.add_argument("--audience", type=int, default=0, help="audience sockets in this process")
    parser.add_argument("--posters", type=int, default=0, help="be the posters: this many sockets")
    parser.add_argument("--poster-role", default="moderator", help="role of every poster but the host")
    parser.add_argument("--rate", type=float, default=20.0, help="comments/s, all posters together")
    parser.add_argument("--duration", type=float, default=30.0, help="posting time, s")
    parser.add_argument("--join-concurrency", type=int, default=16)
    parser.add_argument("--chat-only", action="store_true", help="audience joins with media: false")
    parser.add_argument("--offer-timeout", type=float, default=120.0)
    parser.add_argument("--ack-timeout", type=float, default=10.0)
    parser.add_argument("--out", default=".", help="directory for the latency samples")
    args = parser.parse_args()
    args.ws = args.url.rstrip("/").replace("http://", "ws://", 1) + "/ws"
    args.fd_limit = raise_fd_limit(args.audience + args.posters + 1024)
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    main()
