"""A media worker process: viewers' connections, fed by the forwarding link (``media/link.py``).

Started by the main process (``media/workers.py``) as ``python -m media.worker --control HOST:PORT
--index N``; it connects back, says hello, and from then on serves the viewers main places on it:
their offers and answers (``LocalViewers``, the same code a node without workers runs), and per
publication a ``Mirror``, the same ``Fanout`` forwarding code as main's ``Publication``, fed one
datagram per packet. It exits when its control stream ends (main is gone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from aiortc.sdp import candidate_from_sdp

from media import figures, link, peer, stats
from media.errors import MediaError
from media.layergroup import EVALUATE_S, LayerGroup
from media.publication import Fanout
from media.tasks import OwnedTasks
from media.viewers import LocalViewers

log = logging.getLogger("media.worker")

COUNTERS_S = 0.25  # how often changed counters go to main (its /metrics lags by at most this)
QUALITY_S = 2.0  # how often each connected viewer's figures go to main (link.Quality)
QUALITY_BATCH = 100


class Mirror(Fanout):
    """Main's publication as this worker sees it: the packets main forwarded, with main's numbers."""

    def __init__(self, worker: Worker, key: int, kind: str, participant_id: str) -> None:
        super().__init__(participant_id, kind, renumber=False)
        self.key = key
        self._worker = worker
        self._asked_at = float("-inf")
        self._pending = False
        self._again: asyncio.TimerHandle | None = None

    def request_keyframe(self) -> None:
        """Main applies its policy (coalesced, rate-limited per publication); here only repeats are
        held back: one request per pending keyframe, again after main's interval while slots still
        wait (main stops repeating once *it* has a keyframe: that one's datagram may have been lost)."""
        if self.kind != "video" or self.closed:
            return
        now = time.monotonic()
        if self._pending and now - self._asked_at < self._worker.pli_interval:
            return
        self._pending = True
        self._asked_at = now
        self._worker.tell(link.KeyframeRequest(pub=self.key))
        if self._again is None:
            self._again = asyncio.get_running_loop().call_later(self._worker.pli_interval, self._ask_again)

    def _ask_again(self) -> None:
        self._again = None
        if self.waiting and not self.closed:
            self._pending = False
            self.request_keyframe()

    def _keyframe_arrived(self) -> None:
        self._pending = False

    def close(self) -> list[Any]:
        if self._again is not None:
            self._again.cancel()
            self._again = None
        return super().close()


class Worker(asyncio.DatagramProtocol):
    def __init__(self, index: int, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self._writer = writer
        self.mirrors: dict[int, Mirror] = {}
        self.groups: list[LayerGroup] = []  # videos: mirrors of their encodings (or of the one)
        self._evaluating: asyncio.Task[Any] | None = None
        self.viewers: LocalViewers | None = None
        self.pli_interval = 0.5
        self._tasks = OwnedTasks(log, "worker", worker=index)
        self._subscribing: set[int] = set()
        self._removed: set[int] = set()  # removed while their offer was being made
        self._reported: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self._source: tuple[str, int] | None = None  # main's media address (Setup)

    def tell(self, message: link.Control) -> None:
        self._writer.write(link.encode_frame(message))

    # --- media channel -----------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr != self._source:
            return
        decoded = link.decode_datagram(data)
        if decoded is None:
            return
        key, _flags, mime, frame = decoded
        mirror = self.mirrors.get(key)
        if mirror is None:
            return
        if mirror.mime != mime:
            mirror.mime = mime
        try:
            mirror._forward(frame, time.monotonic())  # type: ignore[arg-type]
        except Exception:  # the datagram loop must survive a bug here
            log.exception("forwarding failed", extra={"participant": mirror.participant_id})

    # --- control channel ---------------------------------------------------------------------

    def on_message(self, message: link.ControlMessage) -> None:
        if isinstance(message, link.Setup):
            peer.setup(message.config)
            self._source = (message.source_host, message.source_port)
            self.pli_interval = message.config.pli_interval
            self.viewers = LocalViewers(message.config, self._on_state, worker=self.index)
            return
        viewers = self.viewers
        if viewers is None:
            raise link.LinkError(f"{type(message).__name__} before setup")
        if isinstance(message, link.Subscribe):
            self._subscribing.add(message.vid)
            self._tasks.spawn(self._subscribe(viewers, message))
        elif isinstance(message, link.Answer):
            self._tasks.spawn(self._reply(message.rid, viewers.answer(message.vid, message.sdp)))
        elif isinstance(message, link.Candidate):
            self._tasks.spawn(self._candidate(viewers, message))
        elif isinstance(message, link.Assign):
            assigned = self._mirror(message.pub, message)
            assigned.set_paused(message.paused)
            if message.pub in message.layers and assigned.group is None:
                self._group(message)
            viewers.assign(message.vid, message.pair, assigned)
        elif isinstance(message, link.Release):
            viewers.release(message.vid, message.pair, message.kind)
        elif isinstance(message, link.Pause):
            mirror = self.mirrors.get(message.pub)
            if mirror is not None:
                mirror.set_paused(message.paused)
        elif isinstance(message, link.Unpublish):
            mirror = self.mirrors.pop(message.pub, None)
            if mirror is not None:
                mirror.close()
        elif isinstance(message, link.Preference):
            viewers.set_preference(message.vid, message.preference, message.participant_id)
        elif isinstance(message, link.CountersNow):
            self._send_counters()
            self.tell(link.Reply(rid=message.rid))
        elif isinstance(message, link.Remove):
            if message.vid in self._subscribing:
                self._removed.add(message.vid)
            else:
                self._tasks.spawn(viewers.remove(message.vid))
        else:
            raise link.LinkError(f"unexpected {type(message).__name__} from main")

    def _mirror(self, key: int, message: link.Assign) -> Mirror:
        mirror = self.mirrors.get(key)
        if mirror is None:
            mirror = self.mirrors[key] = Mirror(self, key, message.kind, message.participant_id)
        return mirror

    def _group(self, message: link.Assign) -> None:
        """A video's mirrors as one group, lowest first, switched here (media/layergroup.py): a
        simulcast video's encodings, or a single encoding whose temporal layers are switched here."""
        mirrors = [self._mirror(key, message) for key in message.layers]
        for mirror in mirrors:
            mirror.set_paused(message.paused)
        if any(m.group is not None for m in mirrors):
            return  # already grouped (a main that never regroups keys: cannot happen, kept safe)
        group = LayerGroup(message.participant_id, list(mirrors))
        self.groups.append(group)
        if self._evaluating is None:
            self._evaluating = self._tasks.spawn(self._evaluate_layers())

    async def _evaluate_layers(self) -> None:
        try:
            while self.groups:
                await asyncio.sleep(EVALUATE_S)
                now = time.monotonic()
                self.groups = [g for g in self.groups if not all(m.closed for m in g.layers)]
                for group in self.groups:
                    try:
                        group.evaluate(now)
                    except Exception:
                        log.exception("layer evaluation failed", extra={"participant": group.participant_id})
        finally:
            self._evaluating = None

    async def _subscribe(self, viewers: LocalViewers, message: link.Subscribe) -> None:
        try:
            offer = await viewers.subscribe(message.vid)
        except Exception as exc:
            log.exception("subscriber offer failed")
            self.tell(link.Reply(rid=message.rid, code="internal", message=str(exc)))
            await viewers.remove(message.vid)
            return
        finally:
            self._subscribing.discard(message.vid)
        if message.vid in self._removed:
            self._removed.discard(message.vid)
            await viewers.remove(message.vid)
        self.tell(link.Reply(rid=message.rid, offer=offer))

    async def _reply(self, rid: int, work: Any) -> None:
        try:
            await work
        except MediaError as exc:
            self.tell(link.Reply(rid=rid, code=exc.code, message=exc.message))
        except Exception as exc:
            log.exception("control request failed")
            self.tell(link.Reply(rid=rid, code="internal", message=str(exc)))
        else:
            self.tell(link.Reply(rid=rid))

    async def _candidate(self, viewers: LocalViewers, message: link.Candidate) -> None:
        try:
            candidate = candidate_from_sdp(message.candidate)
            candidate.sdpMid = message.sdp_mid
            candidate.sdpMLineIndex = message.sdp_mline_index
            await viewers.add_candidate(message.vid, candidate)
        except Exception as exc:  # aiortc raises ValueError and others for candidates it refuses
            self.tell(link.Reply(rid=message.rid, code="invalid_candidate", message=str(exc)))
        else:
            self.tell(link.Reply(rid=message.rid))

    def _on_state(self, vid: Any, state: str) -> None:
        self.tell(link.Connected(vid=vid) if state == "connected" else link.Failed(vid=vid))

    def _send_counters(self) -> None:
        values = stats.snapshot()
        gauges = {"active_slots": sum(len(m.active) for m in self.mirrors.values())}
        if (values, gauges) != self._reported:
            self.tell(link.Counters(values=values, gauges=gauges))
            self._reported = (values, gauges)

    async def report_counters(self) -> None:
        while True:
            await asyncio.sleep(COUNTERS_S)
            self._send_counters()

    async def send_quality(self) -> None:
        """Every connected viewer's figures, one ``link.Quality`` each (sampled here: one sampler),
        ``QUALITY_BATCH`` viewers per loop pass (≈ 35 µs each: a full worker must not stall)."""
        if self.viewers is None:
            return
        for n, (vid, sub) in enumerate(list(self.viewers.subscribers.items()), 1):
            if sub.connected and not sub.closed:
                self.tell(link.Quality(vid=vid, down=figures.viewer(sub)))
            if n % QUALITY_BATCH == 0:
                await asyncio.sleep(0)

    async def report_quality(self) -> None:
        while True:
            await asyncio.sleep(QUALITY_S)
            try:
                await self.send_quality()
            except Exception:  # figures are a convenience: never the worker's end
                log.exception("quality figures failed")

    async def close(self) -> None:
        if self.viewers is not None:
            await self.viewers.close()
        await self._tasks.cancel_all()


async def serve(control: str, index: int) -> None:
    host, _, port = control.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    loop = asyncio.get_running_loop()
    local_host = writer.get_extra_info("sockname")[0]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # A keyframe arrives as a burst of datagrams: room for several before this loop reads them.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((local_host, 0))
    worker: Worker | None = None
    transport, protocol = await loop.create_datagram_endpoint(lambda: Worker(index, writer), sock=sock)
    worker = protocol
    media_host, media_port = sock.getsockname()[:2]
    worker.tell(
        link.Hello(
            worker=index,
            token=os.environ.get("MEDSTAGE_WORKER_TOKEN", ""),
            pid=os.getpid(),
            media_host=media_host,
            media_port=media_port,
        )
    )
    counters = asyncio.ensure_future(worker.report_counters())
    quality = asyncio.ensure_future(worker.report_quality())
    frames = link.FrameReader()
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return  # main is gone: so are we
            for message in frames.feed(data):
                worker.on_message(message)
    finally:
        counters.cancel()
        quality.cancel()
        transport.close()
        await worker.close()


class _JsonLines(logging.Formatter):
    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "worker": self.index,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _text_format(index: int) -> logging.Formatter:
    return logging.Formatter(f"%(asctime)s %(levelname)-7s media worker {index} %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m media.worker")
    parser.add_argument("--control", required=True, help="HOST:PORT of the main process's link")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--log-format", choices=("auto", "json", "text"), default="auto")
    args = parser.parse_args(argv)
    # A terminal's Ctrl+C or systemd's SIGTERM reach the whole process group: the node shuts down in
    # order (clients get 1001) and then ends its workers by closing their control streams. A worker
    # that died first would instead have its viewers told 4012 and be started again.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The node's log stream (stderr is inherited), in the node's format: one JSON object a line
    # (server/logs.py's fields, and the worker's index), or a readable line in a terminal.
    handler = logging.StreamHandler(sys.stderr)
    json_lines = args.log_format == "json" or (args.log_format == "auto" and not sys.stderr.isatty())
    handler.setFormatter(_JsonLines(args.index) if json_lines else _text_format(args.index))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    import uvloop

    uvloop.run(serve(args.control, args.index))


if __name__ == "__main__":
    main()
