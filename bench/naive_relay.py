"""The naive baseline: aiortc's MediaRelay behind medstage's signalling (a protocol subset).

Decodes each publication once and re-encodes it per subscriber (each RTCRtpSender has its own VP8 and
Opus encoder): what an aiortc "SFU" does when it only uses public API. bench/forwarding.py measures
it next to medstage. Speaks: POST /api/stages, GET /healthz, GET /metrics, and on /ws `join`,
`subscriber.answer`, `publish.offer`, `publish.stop`, `leave`, `ping` (docs/protocol.md), with the
same pre-allocated slots, `slot.assigned` and `slot.released`.

    MEDSTAGE_ICE_ADDRESSES=127.0.0.1 python bench/naive_relay.py --host 127.0.0.1 --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
from aiohttp import WSMsgType, web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

SLOTS = int(os.environ.get("MEDSTAGE_MEDIA_SLOTS", "6"))
log = logging.getLogger("naive_relay")


def use_host_addresses(addresses: list[str]) -> None:
    """aioice 0.13 never gathers loopback by itself; its module global is looked up at gathering."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [
        a for a in addresses if (use_ipv6 if ":" in a else use_ipv4)
    ]


class SlotTrack(MediaStreamTrack):
    """What a subscriber slot sends: frames of its current source, or nothing (no 20 ms polling).

    ``replaceTrack`` would leave the sender blocked in the old track's ``recv()``; a proxy whose
    source changes does not.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.source: MediaStreamTrack | None = None
        self._changed = asyncio.Event()

    def set_source(self, source: MediaStreamTrack | None) -> None:
        old, self.source = self.source, source
        if old is not None and old is not source:
            old.stop()
        self._changed.set()

    async def recv(self) -> Any:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self.source
            if source is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                return await source.recv()
            except MediaStreamError:
                if self.source is source:
                    self.source = None


@dataclass
class Slot:
    index: int
    audio: SlotTrack
    video: SlotTrack
    audio_mid: str = ""
    video_mid: str = ""
    publisher: str | None = None


@dataclass
class Participant:
    id: str
    name: str
    role: str
    ws: web.WebSocketResponse
    stage: Stage
    subscriber_pc: RTCPeerConnection | None = None
    subscriber_ready: bool = False
    slots: list[Slot] = field(default_factory=list)
    publisher_pc: RTCPeerConnection | None = None
    relays: dict[str, tuple[MediaRelay, MediaStreamTrack]] = field(default_factory=dict)
    sinks: list[asyncio.Task[None]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        publishing = {k: k in self.relays for k in ("audio", "video")}
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "publishing": publishing,
            "muted": {"audio": False, "video": False},
        }

    async def send(self, msg: dict[str, Any]) -> None:
        if not self.ws.closed:
            await self.ws.send_str(json.dumps(msg))


@dataclass
class Stage:
    id: str
    title: str
    participants: dict[str, Participant] = field(default_factory=dict)


class NaiveRelay:
    def __init__(self) -> None:
        self.stages: dict[str, Stage] = {}
        self.decoded_frames = 0
        self.peers: set[RTCPeerConnection] = set()
        self._ids = itertools.count(1)

    # HTTP
    async def create_stage(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        stage_id = body.get("id") or f"s-{secrets.token_hex(4)}"
        if stage_id in self.stages:
            return web.json_response(
                {
                    "type": "about:blank",
                    "title": "Conflict",
                    "status": 409,
                    "code": "stage_exists",
                    "detail": stage_id,
                },
                status=409,
            )
        stage = self.stages[stage_id] = Stage(stage_id, body.get("title") or stage_id)
        return web.json_response(
            {
                "id": stage.id,
                "title": stage.title,
                "state": "live",
                "url": f"http://{request.host}/s/{stage.id}",
            },
            status=201,
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        sent = received = 0
        for pc in list(self.peers):
            for transceiver in pc.getTransceivers():
                for stats in (await transceiver.sender.getStats()).values():
                    if stats.type == "outbound-rtp":
                        sent += stats.packetsSent
                for stats in (await transceiver.receiver.getStats()).values():
                    if stats.type == "inbound-rtp":
                        received += stats.packetsReceived
        text = (
            "# TYPE medstage_rtp_packets_sent_total counter\n"
            f"medstage_rtp_packets_sent_total {sent}\n"
            "# TYPE medstage_rtp_packets_received_total counter\n"
            f"medstage_rtp_packets_received_total {received}\n"
            "# TYPE medstage_decoded_frames_total counter\n"
            f"medstage_decoded_frames_total {self.decoded_frames}\n"
        )
        return web.Response(text=text, content_type="text/plain")

    # signalling
    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        me: Participant | None = None
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                frame = json.loads(msg.data)
                try:
                    if frame.get("type") == "join":
                        me = await self.join(ws, frame)
                    elif me is None:
                        await self.error(ws, frame, "not_joined", "join first")
                    else:
                        await self.handle(me, frame)
                except Exception as exc:  # a bench tool: report, keep the connection
                    log.exception("handling %s", frame.get("type"))
                    await self.error(ws, frame, "internal", repr(exc))
                if me is not None and frame.get("type") == "leave":
                    await ws.close(code=1000)
        finally:
            if me is not None:
                await self.remove(me)
        return ws

    async def error(self, ws: web.WebSocketResponse, frame: dict[str, Any], code: str, message: str) -> None:
        await ws.send_str(
            json.dumps({"type": "error", "id": frame.get("id"), "code": code, "message": message})
        )

    async def join(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> Participant | None:
        stage = self.stages.get(frame["stage"])
        if stage is None:
            if frame["role"] != "host":
                await self.error(ws, frame, "stage_not_found", frame["stage"])
                return None
            stage = self.stages[frame["stage"]] = Stage(frame["stage"], frame["stage"])
        me = Participant(f"p-{next(self._ids):06x}", frame["name"], frame["role"], ws, stage)
        others = list(stage.participants.values())
        stage.participants[me.id] = me
        await me.send(
            {
                "type": "joined",
                "id": frame.get("id"),
                "participant": me.info(),
                "stage": {"id": stage.id, "title": stage.title, "state": "live"},
                "participants": [p.info() for p in others],
                "ice_servers": [],
            }
        )
        for other in others:
            await other.send({"type": "participant.joined", "participant": me.info()})

        pc = me.subscriber_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peers.add(pc)
        for index in range(SLOTS):
            slot = Slot(index, SlotTrack("audio"), SlotTrack("video"))
            pc.addTransceiver(slot.audio, direction="sendonly")
            pc.addTransceiver(slot.video, direction="sendonly")
            me.slots.append(slot)
        await pc.setLocalDescription(await pc.createOffer())
        transceivers = pc.getTransceivers()
        for slot in me.slots:
            slot.audio_mid = transceivers[2 * slot.index].mid
            slot.video_mid = transceivers[2 * slot.index + 1].mid
        await me.send(
            {
                "type": "subscriber.offer",
                "sdp": pc.localDescription.sdp,
                "slots": [
                    {
                        "slot": s.index,
                        "stream": f"slot-{s.index}",
                        "audio_mid": s.audio_mid,
                        "video_mid": s.video_mid,
                    }
                    for s in me.slots
                ],
            }
        )
        return me

    async def handle(self, me: Participant, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        reply_id = frame.get("id")
        if kind == "subscriber.answer":
            assert me.subscriber_pc is not None
            await me.subscriber_pc.setRemoteDescription(
                RTCSessionDescription(sdp=frame["sdp"], type="answer")
            )
            me.subscriber_ready = True
            await me.send({"type": "subscriber.ready", "id": reply_id})
            for other in list(me.stage.participants.values()):
                if other is not me and other.relays:
                    await self.assign(me, other)
        elif kind == "publish.offer":
            await self.publish(me, frame)
        elif kind == "publish.stop":
            await self.unpublish(me)
            await me.send({"type": "ok", "id": reply_id})
        elif kind == "leave":
            await me.send({"type": "left", "id": reply_id})
        elif kind == "ping":
            await me.send({"type": "pong", "id": reply_id})
        else:
            await self.error(me.ws, frame, "unknown_type", str(kind))

    async def publish(self, me: Participant, frame: dict[str, Any]) -> None:
        if me.role not in ("host", "speaker"):
            await self.error(me.ws, frame, "not_allowed", f"role {me.role} may not publish")
            return
        pc = me.publisher_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.peers.add(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=frame["sdp"], type="offer"))
        for transceiver in pc.getTransceivers():
            track = transceiver.receiver.track
            relay = MediaRelay()
            me.relays[track.kind] = (relay, track)
            # Drain the decoded track even with no subscriber (its queue is unbounded) and count
            # the decoded frames.
            me.sinks.append(asyncio.create_task(self._sink(relay.subscribe(track, buffered=False))))
        await pc.setLocalDescription(await pc.createAnswer())
        await me.send({"type": "publish.answer", "id": frame.get("id"), "sdp": pc.localDescription.sdp})
        for other in list(me.stage.participants.values()):
            if other is not me and other.subscriber_ready:
                await self.assign(other, me)

    async def _sink(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                self.decoded_frames += 1

    async def assign(self, viewer: Participant, publisher: Participant) -> None:
        slot = next((s for s in viewer.slots if s.publisher is None), None)
        if slot is None:
            return
        slot.publisher = publisher.id
        for kind, (relay, track) in publisher.relays.items():
            getattr(slot, kind).set_source(relay.subscribe(track, buffered=False))
            await viewer.send(self._slot_event("slot.assigned", slot, kind, publisher.id))

    async def unpublish(self, me: Participant) -> None:
        for other in list(me.stage.participants.values()):
            for slot in other.slots:
                if slot.publisher == me.id:
                    slot.publisher = None
                    for kind in me.relays:
                        getattr(slot, kind).set_source(None)
                        await other.send(self._slot_event("slot.released", slot, kind, me.id))
        for task in me.sinks:
            task.cancel()
        me.sinks.clear()
        me.relays.clear()
        if me.publisher_pc is not None:
            self.peers.discard(me.publisher_pc)
            await me.publisher_pc.close()
            me.publisher_pc = None

    @staticmethod
    def _slot_event(type_: str, slot: Slot, kind: str, publisher: str) -> dict[str, Any]:
        return {
            "type": type_,
            "slot": slot.index,
            "kind": kind,
            "mid": slot.audio_mid if kind == "audio" else slot.video_mid,
            "stream": f"slot-{slot.index}",
            "participant_id": publisher,
        }

    async def remove(self, me: Participant) -> None:
        await self.unpublish(me)
        me.stage.participants.pop(me.id, None)
        if me.subscriber_pc is not None:
            self.peers.discard(me.subscriber_pc)
            for slot in me.slots:
                slot.audio.stop()
                slot.video.stop()
            await me.subscriber_pc.close()
        for other in list(me.stage.participants.values()):
            await other.send({"type": "participant.left", "participant_id": me.id})

    async def close(self, app: web.Application) -> None:
        for pc in list(self.peers):
            await pc.close()


def make_app() -> web.Application:
    relay = NaiveRelay()
    app = web.Application()
    app.router.add_post("/api/stages", relay.create_stage)
    app.router.add_get("/healthz", relay.healthz)
    app.router.add_get("/metrics", relay.metrics)
    app.router.add_get("/ws", relay.websocket)
    app.on_shutdown.append(relay.close)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    addresses = os.environ.get("MEDSTAGE_ICE_ADDRESSES")
    if addresses:
        use_host_addresses([a.strip() for a in addresses.split(",") if a.strip()])
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, loop=loop)


if __name__ == "__main__":
    main()
