"""Media workers seen from the main process: one process per core owns viewers' connections; main
keeps the publishers and sends each publication's packets once per worker over the forwarding link
(``media/link.py``).

``WorkerPool`` starts the workers, places each new viewer on the least loaded one, and supervises
them: a worker that exits (or whose control stream ends) loses only its viewers, whose ``lost``
callbacks tell the server to close their sockets with a reconnect code; the worker is started again.
``WorkerLink`` is main's end of one worker process: it implements the viewer side ``MediaRoom`` calls
(subscribe, answer, assign, release, remove) by control messages, and keeps the ``LinkTarget`` each
publication sends its datagrams to.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import secrets
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from aiortc import RTCIceCandidate
from aiortc.sdp import candidate_to_sdp

from media import link, stats
from media.errors import MediaError
from media.figures import ConnectionDirection
from media.messages import SubscriberOffer
from media.peer import MediaConfig
from media.tasks import OwnedTasks

if TYPE_CHECKING:
    from media.publication import Publication

log = logging.getLogger(__name__)

TOKEN_ENV = "MEDSTAGE_WORKER_TOKEN"
START_TIMEOUT_S = 30.0  # a worker imports aiortc and checks its hooks: seconds on a loaded machine
REQUEST_TIMEOUT_S = 15.0
PLACE_TIMEOUT_S = 5.0  # a join while every worker restarts waits this long for one


_Accepted = tuple[asyncio.StreamReader, asyncio.StreamWriter, link.Hello]


class MediaUnavailable(MediaError):
    code = "media_unavailable"


class LinkTarget:
    """One publication's packets to one worker: the datagrams of every forwarded frame, and its pause
    state. Counted by the slots of that worker it feeds; dropped at zero."""

    __slots__ = ("addr", "count", "link", "pub", "sendto")

    def __init__(self, link: WorkerLink, pub: Publication) -> None:
        self.link = link
        self.pub = pub
        self.count = 0
        self.sendto = link.sock.sendto
        self.addr = link.addr

    def send(self, datagrams: list[bytes]) -> None:
        sendto, addr = self.sendto, self.addr
        try:
            for datagram in datagrams:
                sendto(datagram, addr)
        except OSError:  # the worker's buffer is full, or it is gone (its supervisor will see)
            stats.link_send_errors += 1
            return
        stats.link_datagrams_sent += len(datagrams)

    def set_paused(self, key: int, paused: bool) -> None:
        self.link.tell(link.Pause(pub=key, paused=paused))


class RemotePeer:
    """What the signalling's trickled ICE candidates are added to: the worker's peer connection."""

    def __init__(self, link_: WorkerLink, vid: int) -> None:
        self._link = link_
        self._vid = vid

    async def addIceCandidate(self, candidate: RTCIceCandidate) -> None:
        reply = await self._link.request(
            lambda rid: link.Candidate(
                rid=rid,
                vid=self._vid,
                candidate=candidate_to_sdp(candidate),
                sdp_mid=candidate.sdpMid,
                sdp_mline_index=candidate.sdpMLineIndex,
            )
        )
        if reply.code:
            raise ValueError(reply.message)


class WorkerLink:
    """Main's end of one worker process (one incarnation: a restarted worker gets a new link)."""

    def __init__(
        self,
        index: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hello: link.Hello,
        sock: socket.socket,
    ) -> None:
        self.index = index
        self.pid = hello.pid
        self.addr = (hello.media_host, hello.media_port)
        self.sock = sock
        self.alive = True
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, int] = {}
        self.viewers: dict[int, Callable[[], None]] = {}  # viewer id -> its room's "lost" callback
        self.quality: dict[int, ConnectionDirection] = {}  # viewer id -> its last figures (link.Quality)
        self._reader = reader
        self._writer = writer
        self._rids = itertools.count(1)
        self._replies: dict[int, asyncio.Future[link.Reply]] = {}
        self._targets: dict[int, LinkTarget] = {}  # publication key -> target
        self._assigned: dict[tuple[int, int, str], LinkTarget] = {}  # (vid, pair, kind) -> target
        # ... and the targets of a simulcast video's other encodings (media/layergroup.py)
        self._other_layers: dict[tuple[int, int, str], list[LinkTarget]] = {}

    @property
    def load(self) -> int:
        return len(self.viewers)

    # --- control -----------------------------------------------------------------------------

    def tell(self, message: link.Control) -> None:
        if self.alive:
            self._writer.write(link.encode_frame(message))

    async def request(self, make: Callable[[int], link.Control]) -> link.Reply:
        if not self.alive:
            raise MediaUnavailable("the media worker serving this connection stopped")
        rid = next(self._rids)
        future: asyncio.Future[link.Reply] = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        self.tell(make(rid))
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                return await future
        except TimeoutError:
            raise MediaUnavailable("the media worker did not answer in time") from None
        finally:
            self._replies.pop(rid, None)

    async def run(self) -> None:
        """Read the worker's messages until its stream ends."""
        reader = link.FrameReader()
        while True:
            data = await self._reader.read(65536)
            if not data:
                return
            for message in reader.feed(data):
                self._on_message(message)

    def _on_message(self, message: link.ControlMessage) -> None:
        if isinstance(message, link.Reply):
            future = self._replies.get(message.rid)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, link.KeyframeRequest):
            target = self._targets.get(message.pub)
            if target is not None:
                target.pub.request_keyframe()
        elif isinstance(message, link.Counters):
            self.counters = message.values
            self.gauges = message.gauges
        elif isinstance(message, link.Quality):
            if message.vid in self.viewers:
                self.quality[message.vid] = message.down
        elif isinstance(message, (link.Connected, link.Failed)):
            log.debug("viewer %s on worker %d: %s", message.vid, self.index, type(message).__name__)
        else:
            raise link.LinkError(f"unexpected {type(message).__name__} from a worker")

    def die(self) -> list[Callable[[], None]]:
        """The worker is gone: fail what waits, stop sending to it; returns its viewers' callbacks."""
        self.alive = False
        for future in self._replies.values():
            if not future.done():
                future.set_exception(MediaUnavailable("the media worker serving this connection stopped"))
        for target in self._targets.values():
            if target in target.pub.links:
                target.pub.links.remove(target)
        self._targets.clear()
        self._assigned.clear()
        self._other_layers.clear()
        lost = list(self.viewers.values())
        self.viewers.clear()
        self._writer.close()
        return lost

    # --- the viewer side MediaRoom calls (media/room.py) -------------------------------------

    async def subscribe(self, vid: int) -> SubscriberOffer:
        reply = await self.request(lambda rid: link.Subscribe(rid=rid, vid=vid))
        _raise_for(reply)
        if reply.offer is None:
            raise link.LinkError("a subscribe reply without an offer")
        return reply.offer

    async def answer(self, vid: int, sdp: str) -> None:
        _raise_for(await self.request(lambda rid: link.Answer(rid=rid, vid=vid, sdp=sdp)))

    def figures(self, vid: int) -> ConnectionDirection | None:
        """The viewer's figures as its worker last reported them (every ``worker.QUALITY_S``)."""
        return self.quality.get(vid)

    def peer(self, vid: int) -> RemotePeer | None:
        return RemotePeer(self, vid) if self.alive and vid in self.viewers else None

    def assign(self, vid: int, pair: int, pub: Publication) -> None:
        if not self.alive:
            return
        slot = (vid, pair, pub.kind)
        old = self._assigned.get(slot)
        if old is not None and old.pub is pub:
            return
        if old is not None:
            self.release(vid, pair, pub.kind)
        target = self._targets.get(pub.key)
        if target is None:
            target = self._targets[pub.key] = LinkTarget(self, pub)
            pub.links.append(target)
        target.count += 1
        self._assigned[slot] = target
        layers = _layers_of(pub)
        others = []
        for layer in layers:  # every encoding reaches the worker: it switches the viewer between them
            if layer is not pub:
                other = self._targets.get(layer.key)
                if other is None:
                    other = self._targets[layer.key] = LinkTarget(self, layer)
                    layer.links.append(other)
                other.count += 1
                others.append(other)
        if others:
            self._other_layers[slot] = others
        self.tell(
            link.Assign(
                vid=vid,
                pair=pair,
                kind=pub.kind,
                pub=pub.key,
                participant_id=pub.participant_id,
                paused=pub.paused,
                layers=tuple(layer.key for layer in layers),
            )
        )

    def release(self, vid: int, pair: int, kind: str) -> None:
        target = self._assigned.pop((vid, pair, kind), None)
        if target is None:
            return
        self.tell(link.Release(vid=vid, pair=pair, kind=kind))
        for each in [target, *self._other_layers.pop((vid, pair, kind), [])]:
            each.count -= 1
            if each.count <= 0:
                del self._targets[each.pub.key]
                if each in each.pub.links:
                    each.pub.links.remove(each)
                self.tell(link.Unpublish(pub=each.pub.key))

    def set_preference(self, vid: int, preference: str, participant_id: str | None) -> None:
        if self.alive:
            self.tell(link.Preference(vid=vid, preference=preference, participant_id=participant_id))

    async def remove(self, vid: int) -> None:
        for vid_, pair, kind in [s for s in self._assigned if s[0] == vid]:
            self.release(vid_, pair, kind)
        self.viewers.pop(vid, None)
        self.quality.pop(vid, None)
        self.tell(link.Remove(vid=vid))


def _layers_of(pub: Publication) -> list[Publication]:
    """A video's encodings, lowest first (one for a single encoding: the worker measures and switches
    its temporal layers); nothing for audio."""
    group = pub.group
    if group is None:
        return []
    # In main every layer is a Publication (a worker's are Mirrors, never passed here).
    return [cast("Publication", layer) for layer in group.layers]


def _raise_for(reply: link.Reply) -> None:
    if reply.code:
        error = MediaError(reply.message)
        error.code = reply.code
        raise error


class WorkerPool:
    """``count`` media worker processes, supervised; viewers are placed on the least loaded."""

    def __init__(self, count: int, config: MediaConfig, log_format: str = "auto") -> None:
        self.count = count
        self.config = config
        self.log_format = log_format  # the node's: workers write to its log stream
        self.links: list[WorkerLink | None] = [None] * count
        self._vids = itertools.count(1)
        self._token = secrets.token_hex(16)
        self._hellos: dict[int, asyncio.Future[_Accepted]] = {}
        self._server: asyncio.Server | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        # A keyframe is a burst of datagrams per worker: room for a few of them.
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self._sock.bind(("127.0.0.1", 0))  # a fixed source: workers take datagrams from it only
        self._tasks = OwnedTasks(log, "media workers")
        self._changed = asyncio.Event()
        self._retired: dict[str, int] = {}  # counters of worker incarnations that ended
        self.restarts = 0

    async def start(self) -> None:
        """Start every worker; returns when each has said hello (or failed to, then it is retried)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        stats.providers.append(self.counters)
        starts = [asyncio.get_running_loop().create_future() for _ in range(self.count)]
        for index in range(self.count):
            self._tasks.spawn(self._keep(index, starts[index]))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(START_TIMEOUT_S):
                await asyncio.gather(*starts)

    async def close(self) -> None:
        if self.counters in stats.providers:
            stats.providers.remove(self.counters)
        await self._tasks.cancel_all()
        if self._server is not None:
            self._server.close()
        self._sock.close()

    def counters(self) -> dict[str, int]:
        total = dict(self._retired)
        for link_ in self.links:
            if link_ is not None:
                for name, value in link_.counters.items():
                    total[name] = total.get(name, 0) + value
        return total

    async def refresh_counters(self) -> None:
        """Every live worker's counters as of now (a scrape must not lag what clients saw)."""

        async def one(worker: WorkerLink) -> None:
            with contextlib.suppress(MediaError, TimeoutError):  # a busy worker: its last report
                async with asyncio.timeout(1.0):
                    await worker.request(lambda rid: link.CountersNow(rid=rid))

        await asyncio.gather(*(one(w) for w in self.links if w is not None and w.alive))

    def active_slots(self) -> int:
        """Slots forwarding a track in the workers (as each last reported)."""
        return sum(w.gauges.get("active_slots", 0) for w in self.links if w is not None)

    async def place(self, on_lost: Callable[[], None]) -> tuple[WorkerLink, int] | None:
        """The least loaded live worker and a new viewer id on it; None when no worker is live
        within ``PLACE_TIMEOUT_S`` (every one restarting, or failing to start)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PLACE_TIMEOUT_S):
                return await self._place(on_lost)
        return None

    async def _place(self, on_lost: Callable[[], None]) -> tuple[WorkerLink, int]:
        while True:
            alive = [w for w in self.links if w is not None and w.alive]
            if alive:
                worker = min(alive, key=lambda w: w.load)
                vid = next(self._vids)
                worker.viewers[vid] = on_lost
                return worker, vid
            self._changed.clear()
            await self._changed.wait()

    # --- supervision -------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                frames = link.FrameReader()
                while True:
                    data = await reader.read(4096)
                    if not data:
                        raise link.LinkError("closed before hello")
                    messages = list(frames.feed(data))
                    if messages:
                        break
            hello = messages[0]
            if not isinstance(hello, link.Hello) or len(messages) > 1:
                raise link.LinkError("the first frame must be a hello, alone")
            future = self._hellos.get(hello.worker)
            if hello.token != self._token or future is None or future.done():
                raise link.LinkError(f"unexpected hello from {writer.get_extra_info('peername')}")
            future.set_result((reader, writer, hello))
        except (link.LinkError, TimeoutError, OSError) as exc:
            log.warning("media worker connection refused: %s", exc)
            writer.close()

    async def _keep(self, index: int, started: asyncio.Future[None]) -> None:
        """Run worker ``index``, and run it again whenever it ends, until the pool closes."""
        delay = 0.1
        while True:
            loop = asyncio.get_running_loop()
            began = loop.time()
            try:
                await self._run_once(index, started)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("media worker %d failed", index)
            self.restarts += 1
            stats.media_worker_restarts += 1
            if loop.time() - began > 30:
                delay = 0.1
            log.error("media worker %d stopped; starting it again in %.1f s", index, delay)
            await asyncio.sleep(delay)
            delay = min(2 * delay, 5.0)

    async def _run_once(self, index: int, started: asyncio.Future[None]) -> None:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        hello_future = asyncio.get_running_loop().create_future()
        self._hellos[index] = hello_future
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "media.worker",
            "--control",
            f"{host}:{port}",
            "--index",
            str(index),
            "--log-format",
            self.log_format,
            env={**os.environ, TOKEN_ENV: self._token},
        )
        worker: WorkerLink | None = None
        try:
            exited = asyncio.ensure_future(proc.wait())
            done, _ = await asyncio.wait(
                {hello_future, exited}, timeout=START_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            if hello_future not in done:
                raise RuntimeError(f"media worker {index} did not say hello (exit code {proc.returncode})")
            reader, writer, hello = hello_future.result()
            worker = WorkerLink(index, reader, writer, hello, self._sock)
            source_host, source_port = self._sock.getsockname()[:2]
            worker.tell(
                link.Setup(
                    config=worker_config(self.config, index), source_host=source_host, source_port=source_port
                )
            )
            self.links[index] = worker
            self._changed.set()
            if not started.done():
                started.set_result(None)
            log.info("media worker %d ready (pid %d, media %s:%d)", index, proc.pid, *worker.addr)
            running = asyncio.ensure_future(worker.run())
            await asyncio.wait({running, exited}, return_when=asyncio.FIRST_COMPLETED)
            for task in (running,):
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("media worker %d link failed", index, exc_info=task.exception())
                task.cancel()
        finally:
            self._hellos.pop(index, None)
            if worker is not None:
                self.links[index] = None
                for name, value in worker.counters.items():
                    self._retired[name] = self._retired.get(name, 0) + value
                for lost in worker.die():
                    try:
                        lost()
                    except Exception:
                        log.exception("a lost viewer's callback failed")
            if proc.returncode is None:
                # Its control stream is closed (die): a worker exits by itself on that, its viewers'
                # connections closed; one that does not within 2 s is killed.
                try:
                    async with asyncio.timeout(2.0):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
            await proc.wait()
            log.warning("media worker %d (pid %d) exited with %s", index, proc.pid, proc.returncode)


def worker_config(config: MediaConfig, index: int) -> MediaConfig:
    """A fixed viewers' port is the node's; worker ``index`` takes the next ports (``media_port + 1 +
    index``): one UDP socket can be bound by one process only, and a worker that fell back to a socket
    per viewer would lose the batched sends."""
    if not config.media_port:
        return config
    return dataclasses.replace(config, media_port=config.media_port + 1 + index)
