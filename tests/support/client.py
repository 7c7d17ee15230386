"""An aiortc client of the medstage signalling protocol (docs/protocol.md), for tests and bench/.

One :class:`MedstageClient` is one participant: a WebSocket, a subscriber peer connection (the
server offers, we answer) and, while publishing, a publisher peer connection (we offer). Received
media is not decoded: every receiver gets a :class:`~tests.support.framecheck.FrameAssembler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import aioice.ice
import msgpack
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    sdp,
)

from .framecheck import FrameAssembler, NextFrame, TrackStats, install_frame_assembler

Message = dict[str, Any]
DEFAULT_TIMEOUT = 10.0

_original_get_host_addresses = aioice.ice.get_host_addresses


def use_host_addresses(addresses: Sequence[str] | None) -> None:
    """Make aioice gather host candidates on ``addresses`` only (``None`` restores the default).

    aioice 0.13 never gathers loopback addresses by itself; ``aioice.ice.get_host_addresses`` is
    a module global looked up at gathering time, so patching it affects the whole process.
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    fixed = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in fixed if (use_ipv6 if ":" in a else use_ipv4)]

    aioice.ice.get_host_addresses = get_host_addresses


def _loopback_addresses(host: str | None) -> list[str] | None:
    if host == "localhost":
        return ["127.0.0.1"]
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return None
    return [str(address)] if address.is_loopback else None


def ws_url(url: str) -> str:
    """``http://h:p`` or ``ws://h:p`` → ``ws://h:p/ws``; a URL with a path is kept as is."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class RequestError(Exception):
    """The server answered a request with an ``error`` frame."""

    def __init__(self, reply: Message) -> None:
        super().__init__(f"{reply.get('code')}: {reply.get('message')}")
        self.reply = reply
        self.code: str | None = reply.get("code")
        self.message: str | None = reply.get("message")


class MedstageClient:
    """One participant. Use as ``async with MedstageClient(url) as c: await c.join(...)``.

    ``host_addresses``: where aioice gathers candidates; by default the URL's host when it is a
    loopback address (tests run in a loopback-only network namespace), else aioice's own choice.
    ``decode``: also decode received video with PyAV and count decodable frames.
    ``framing``: ``"json"`` (text frames) or ``"msgpack"`` (binary frames).
    """

    def __init__(
        self,
        url: str,
        *,
        host_addresses: Sequence[str] | None = None,
        decode: bool = False,
        framing: str = "json",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if framing not in ("json", "msgpack"):
            raise ValueError("framing is 'json' or 'msgpack'")
        self.url = ws_url(url)
        self.host_addresses = (
            list(host_addresses)
            if host_addresses is not None
            else _loopback_addresses(urlsplit(self.url).hostname)
        )
        self.decode = decode
        self.framing = framing
        self.timeout = timeout

        self.participant: Message | None = None  # from `joined`
        self.joined: Message | None = None
        self.slot_layout: list[Message] = []  # from `subscriber.offer`
        self.slots: dict[str, Message] = {}  # mid -> current `slot.assigned`
        self.events: list[Message] = []  # every event received, in order
        self.assemblers: dict[str, FrameAssembler] = {}  # subscriber mid -> assembler
        self.subscriber_pc: RTCPeerConnection | None = None
        self.publisher_pc: RTCPeerConnection | None = None
        self.published: dict[str, MediaStreamTrack] = {}
        self.close_code: int | None = None

        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[Message]] = {}
        self._unconsumed: list[Message] = []
        self._changed = asyncio.Condition()
        self._closed = asyncio.Event()
        self._media = asyncio.Event()  # set when a receiver completes a frame

    # connection
    async def __aenter__(self) -> MedstageClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        if self.host_addresses is not None:
            use_host_addresses(self.host_addresses)
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(self.url, autoping=True)
        except BaseException:
            await self._session.close()
            raise
        self._reader = asyncio.create_task(self._read(), name=f"medstage-client-read {self.url}")

    async def close(self) -> None:
        """Close both peer connections and the WebSocket (no `leave`)."""
        for pc in (self.publisher_pc, self.subscriber_pc):
            if pc is not None:
                await pc.close()
        if self._ws is not None and not self._ws.closed:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self, timeout: float | None = None) -> int | None:
        """Wait until the server closes the WebSocket; return the close code."""
        async with asyncio.timeout(timeout or self.timeout):
            await self._closed.wait()
        return self.close_code

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    frame = msgpack.unpackb(msg.data)
                else:
                    break
                await self._dispatch(frame)
        finally:
            self.close_code = self._ws.close_code
            self._closed.set()
            self._media.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"closed with {self.close_code}"))
            async with self._changed:
                self._changed.notify_all()

    async def _dispatch(self, frame: Message) -> None:
        future = self._pending.pop(frame.get("id"), None) if isinstance(frame, dict) else None
        if future is not None:
            if not future.done():
                future.set_result(frame)
            return
        if isinstance(frame, dict):
            if frame.get("type") == "slot.assigned":
                self.slots[str(frame.get("mid"))] = frame
            elif frame.get("type") == "slot.released":
                self.slots.pop(str(frame.get("mid")), None)
        self.events.append(frame)
        async with self._changed:
            self._unconsumed.append(frame)
            self._changed.notify_all()

    # messages
    async def send(self, msg: Message | bytes | str) -> None:
        """Send one frame: a dict in the client's framing, or raw ``str``/``bytes`` as is."""
        assert self._ws is not None
        if isinstance(msg, str):
            await self._ws.send_str(msg)
        elif isinstance(msg, bytes):
            await self._ws.send_bytes(msg)
        elif self.framing == "json":
            await self._ws.send_str(json.dumps(msg))
        else:
            await self._ws.send_bytes(msgpack.packb(msg))

    async def request(
        self,
        msg: Message,
        *,
        check: bool = True,
        timeout: float | None = None,
    ) -> Message:
        """Send ``msg`` with an id and return the reply; an ``error`` reply raises
        :class:`RequestError` unless ``check=False``."""
        msg = dict(msg)
        msg.setdefault("id", next(self._ids))
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[msg["id"]] = future
        try:
            await self.send(msg)
            async with asyncio.timeout(timeout or self.timeout):
                reply = await future
        finally:
            self._pending.pop(msg["id"], None)
        if check and reply.get("type") == "error":
            raise RequestError(reply)
        return reply

    async def wait_for(
        self,
        type: str,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Return (and consume) the first event of ``type`` matching ``predicate``, waiting for it
        if it has not arrived yet. Events received before the call count."""

        def find() -> Message | None:
            for i, event in enumerate(self._unconsumed):
                if event.get("type") == type and (predicate is None or predicate(event)):
                    return self._unconsumed.pop(i)
            return None

        async with asyncio.timeout(timeout or self.timeout), self._changed:
            while True:
                event = find()
                if event is not None:
                    return event
                if self.closed:
                    raise ConnectionError(f"closed with {self.close_code} while waiting for {type}")
                await self._changed.wait()

    async def ping(self) -> Message:
        return await self.request({"type": "ping"})

    # joining and the subscriber connection
    async def join(
        self,
        stage: str,
        name: str,
        role: str,
        *,
        answer: bool = True,
        token: str | None = None,
        identity: str | None = None,
    ) -> Message:
        """Send `join`; with ``answer`` (default) also answer the `subscriber.offer`. Without ``token``,
        one is minted with the development key (nodes without configured API keys accept it)."""
        if token is None:
            from .tokens import token as mint

            token = mint(stage, role, identity, name)
        reply = await self.request(
            {"type": "join", "stage": stage, "name": name, "role": role, "token": token}
        )
        self.joined = reply
        self.participant = reply.get("participant")
        if answer:
            await self.answer_subscriber()
        return reply

    @property
    def participant_id(self) -> str | None:
        return self.participant.get("id") if self.participant else None

    def _configuration(self) -> RTCConfiguration:
        # Always an explicit list: with None, aiortc adds Google's STUN server.
        servers = [
            RTCIceServer(s["urls"], s.get("username"), s.get("credential"))
            for s in (self.joined or {}).get("ice_servers") or []
        ]
        # max-bundle, as browsers do: with aiortc's default (balanced) the second and later video
        # transceivers stay on a per-kind transport that BUNDLE never connects, and get nothing.
        return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)

    async def answer_subscriber(self, offer: Message | None = None) -> Message:
        """Answer the server's `subscriber.offer` (waited for if not given); returns the reply."""
        if offer is None:
            offer = await self.wait_for("subscriber.offer")
        self.slot_layout = list(offer.get("slots") or [])
        pc = self.subscriber_pc = RTCPeerConnection(self._configuration())
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        for transceiver in pc.getTransceivers():
            self.assemblers[transceiver.mid] = install_frame_assembler(
                transceiver.receiver,
                transceiver.kind,
                decode=self.decode,
                on_frame=self._on_frame,
            )
        await pc.setLocalDescription(await pc.createAnswer())
        _route_rtx(pc, offer["sdp"])
        return await self.request({"type": "subscriber.answer", "sdp": pc.localDescription.sdp})

    def _on_frame(self, stats: TrackStats) -> None:
        # Called in the event loop by aiortc's receive path: wakes wait_media() (a no-op when
        # already set, so cheap enough per frame).
        self._media.set()

    async def wait_media(
        self,
        mid: str | None = None,
        *,
        kind: str = "video",
        keyframe: bool = False,
        timeout: float | None = None,
    ) -> TrackStats:
        """Wait until a complete frame (``keyframe``: a keyframe) arrived on ``mid``, or on any
        receiver of ``kind``; return that receiver's stats."""

        def ready() -> TrackStats | None:
            for m, assembler in self.assemblers.items():
                stats = assembler.stats
                if (mid is None and stats.kind == kind) or m == mid:
                    if (stats.keyframes if keyframe else stats.frames_complete) > 0:
                        return stats
            return None

        async with asyncio.timeout(timeout or self.timeout):
            while (stats := ready()) is None:
                if self.closed:
                    raise ConnectionError(f"closed with {self.close_code} while waiting for media")
                self._media.clear()
                await self._media.wait()
            return stats

    def stats(self, mid: str) -> TrackStats:
        return self.assemblers[mid].stats

    def watch_next_frame(self, mid: str) -> NextFrame:
        """From now on, the first packet and the first complete frame received on ``mid``."""
        return self.assemblers[mid].watch_next_frame()

    def received(self, kind: str | None = None) -> TrackStats:
        """Sum of the receive stats over all subscriber receivers (of ``kind``)."""
        total = TrackStats(kind=kind or "all")
        for assembler in self.assemblers.values():
            s = assembler.stats
            if kind is None or s.kind == kind:
                for field in (
                    "packets",
                    "bytes",
                    "frames_complete",
                    "frames_incomplete",
                    "keyframes",
                    "decoded_ok",
                    "decode_failed",
                ):
                    setattr(total, field, getattr(total, field) + getattr(s, field))
        return total

    # publishing
    async def publish(
        self,
        audio_track: MediaStreamTrack | None = None,
        video_track: MediaStreamTrack | None = None,
        *,
        video_codecs: Iterable[str] = ("VP8",),
    ) -> Message:
        """Open the publisher connection (send-only), send `publish.offer`, apply the answer.

        ``video_codecs`` orders (and restricts) the offered video codecs; pre-encoded VP8 needs
        VP8. A video track with ``request_keyframe`` gets the sender's PLI/FIR.
        """
        from .clip import attach_keyframe_requests

        pc = self.publisher_pc = RTCPeerConnection(self._configuration())
        video_sender = None
        for track in (audio_track, video_track):
            if track is None:
                continue
            transceiver = pc.addTransceiver(track, direction="sendonly")
            if track.kind == "video":
                video_sender = transceiver.sender
                transceiver.setCodecPreferences(_codec_preferences(video_codecs))
            self.published[track.kind] = track
        await pc.setLocalDescription(await pc.createOffer())
        reply = await self.request({"type": "publish.offer", "sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))
        if video_sender is not None and hasattr(video_track, "request_keyframe"):
            attach_keyframe_requests(video_sender, video_track)  # type: ignore[arg-type]
        return reply

    async def mute(self, kind: str, muted: bool) -> Message:
        return await self.request({"type": "publish.mute", "kind": kind, "muted": muted})

    async def stop_publishing(self) -> Message:
        """`publish.stop`, then close our publisher connection."""
        reply = await self.request({"type": "publish.stop"})
        if self.publisher_pc is not None:
            await self.publisher_pc.close()
            self.publisher_pc = None
        self.published.clear()
        return reply

    async def leave(self) -> Message:
        """`leave`; returns the `left` reply (the server then closes the socket with 1000)."""
        return await self.request({"type": "leave"})


def _route_rtx(pc: RTCPeerConnection, offer_sdp: str) -> None:
    """Route each slot's RTX stream to its receiver, as browsers do from ``a=ssrc-group:FID``.

    aiortc 1.16 registers only a receiver's primary SSRC with its transport's ``RtpRouter``
    (rtcdtlstransport.py 683-696) and routes an unknown SSRC by payload type only when one receiver
    has that type (297-319): every slot shares the RTX payload type, so retransmissions answering
    this client's NACKs would be dropped before they reach the receiver.
    """
    receivers = {t.mid: t.receiver for t in pc.getTransceivers()}
    for media in sdp.SessionDescription.parse(offer_sdp).media:
        receiver = receivers.get(media.rtp.muxId)
        router = getattr(receiver.transport, "_rtp_router", None) if receiver is not None else None
        if router is None:
            continue
        for group in media.ssrc_group:
            if group.semantic == "FID" and len(group.items) == 2:
                router.ssrc_table[int(group.items[1])] = receiver


def _codec_preferences(names: Iterable[str]) -> list[Any]:
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    wanted = [n.lower() for n in names]
    preferred = [
        codec for name in wanted for codec in capabilities if codec.mimeType.lower() == f"video/{name}"
    ]
    return preferred + [c for c in capabilities if c.mimeType.lower() == "video/rtx"]
