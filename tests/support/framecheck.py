"""Receive without decoding: a frame assembler that replaces an aiortc receiver's jitter buffer.

aiortc 1.16 ``RTCRtpReceiver._handle_rtp_packet`` (rtcrtpreceiver.py 471-567) removes SRTP, unwraps
RTX, sends NACKs, depayloads into ``packet._data`` and then calls
``self.__jitter_buffer.add(packet) -> (pli_flag, frame | None)``; a frame goes to a decoder thread.
:class:`FrameAssembler` takes that place, assembles and checks frames itself and always returns
``(False, None)``: aiortc's decoder never gets anything. With ``decode=True`` it decodes the
assembled VP8/H264 frames with PyAV in this process, to check that what arrives is decodable.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import av

_JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"
_CODECS_ATTR = "_RTCRtpReceiver__codecs"
MAX_PENDING_FRAMES = 64
_DECODERS = {"VP8": "vp8", "H264": "h264"}


def _seq_diff(a: int, b: int) -> int:
    """a - b on the 16-bit sequence space, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def is_keyframe(codec: str, frame: bytes) -> bool:
    """VP8: P bit of the frame tag is 0 (RFC 6386 §9.1). H264: an IDR slice (NAL type 5)."""
    if codec == "VP8":
        return len(frame) > 0 and frame[0] & 1 == 0
    if codec == "H264":
        return any(nal & 0x1F == 5 for nal in _annexb_nal_headers(frame))
    return False


def _annexb_nal_headers(data: bytes) -> list[int]:
    headers = []
    pos = data.find(b"\x00\x00\x01")
    while pos != -1 and pos + 3 < len(data):
        headers.append(data[pos + 3])
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return headers


def _vp8_starts_frame(payload: bytes) -> bool:
    """RFC 7741 §4.2: S=1 and PID=0 mark the first packet of a frame."""
    return len(payload) > 0 and payload[0] & 0x10 != 0 and payload[0] & 0x07 == 0


def _h264_starts_nal(payload: bytes) -> bool:
    """The RTP payload starts a NAL unit (anything but a continued FU-A)."""
    if not payload:
        return False
    if payload[0] & 0x1F == 28:  # FU-A: start bit
        return len(payload) > 1 and payload[1] & 0x80 != 0
    return True


@dataclass
class TrackStats:
    """What one receiver got. Byte counts are RTP payload bytes."""

    kind: str
    codec: str | None = None
    packets: int = 0
    bytes: int = 0
    frames_complete: int = 0
    frames_incomplete: int = 0  # abandoned with a packet missing
    keyframes: int = 0
    first_frame_keyframe: bool | None = None  # video: was the first complete frame a keyframe?
    first_packet_at: float | None = None  # time.monotonic()
    first_frame_at: float | None = None
    first_keyframe_at: float | None = None
    decoded_ok: int = 0
    decode_failed: int = 0

    @property
    def decodable_ratio(self) -> float | None:
        """Frames decoded OK / frames complete (needs ``decode=True``)."""
        total = self.decoded_ok + self.decode_failed
        return self.decoded_ok / total if total else None


@dataclass
class NextFrame:
    """What arrives after :meth:`FrameAssembler.watch_next_frame`: the first packet, and the first
    frame completed. The first forwarded frame was a keyframe iff :attr:`starts_on_keyframe`."""

    first_packet_ts: int | None = None  # RTP timestamp of the first packet received
    frame_ts: int | None = None  # RTP timestamp of the first frame completed
    keyframe: bool | None = None  # was that frame a keyframe?
    abandoned: int = 0  # frames given up (a packet missing) before it completed

    @property
    def done(self) -> bool:
        return self.keyframe is not None

    @property
    def starts_on_keyframe(self) -> bool:
        """The very first packet belonged to the first complete frame, a keyframe, and nothing was
        abandoned before it: no delta frame, or part of one, came first."""
        return self.keyframe is True and self.frame_ts == self.first_packet_ts and self.abandoned == 0


class _Frame:
    __slots__ = ("end", "parts", "start")

    def __init__(self) -> None:
        self.parts: dict[int, bytes] = {}
        self.start: int | None = None
        self.end: int | None = None


class FrameAssembler:
    """Drop-in for aiortc's ``JitterBuffer``: assembles frames, records :class:`TrackStats`."""

    def __init__(
        self,
        kind: str,
        codecs: Mapping[int, Any] | None = None,
        *,
        decode: bool = False,
        on_frame: Callable[[TrackStats], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = TrackStats(kind=kind)
        self._codecs = codecs if codecs is not None else {}
        self._decode = decode
        self._decoder: Any = None
        self._on_frame = on_frame
        self._clock = clock
        self._pending: dict[int, _Frame] = {}  # RTP timestamp -> frame being assembled
        self._done: deque[int] = deque(maxlen=32)  # recently completed timestamps
        self._marker_seqs: deque[int] = deque(maxlen=32)
        self._watches: list[NextFrame] = []  # not done yet

    def watch_next_frame(self) -> NextFrame:
        """Observe the next packet and the next complete frame (video), from now on."""
        watch = NextFrame()
        self._watches.append(watch)
        return watch

    # aiortc's JitterBuffer interface
    def add(self, packet: Any) -> tuple[bool, None]:
        stats = self.stats
        now = self._clock()
        stats.packets += 1
        stats.bytes += len(packet.payload)
        if stats.first_packet_at is None:
            stats.first_packet_at = now
        codec = self._codecs.get(packet.payload_type)
        name = codec.name if codec is not None else None
        if name is not None and stats.codec != name:
            stats.codec = name

        if stats.kind == "audio":  # one packet per frame (Opus)
            self._complete(name, packet._data, now, packet.timestamp)
            return False, None

        ts = packet.timestamp
        for watch in self._watches:
            if watch.first_packet_ts is None:
                watch.first_packet_ts = ts
        if ts in self._done:  # a late duplicate or retransmission
            return False, None
        frame = self._pending.get(ts)
        if frame is None:
            frame = self._pending[ts] = _Frame()
            if len(self._pending) > MAX_PENDING_FRAMES:
                del self._pending[next(iter(self._pending))]
                stats.frames_incomplete += 1
                for watch in self._watches:
                    watch.abandoned += 1
        seq = packet.sequence_number
        frame.parts[seq] = packet._data
        if name == "VP8":
            if _vp8_starts_frame(packet.payload):
                frame.start = seq
        elif (seq - 1) & 0xFFFF in self._marker_seqs:
            # Without a start flag (H264), a frame starts right after the previous marker...
            frame.start = seq
        elif (
            not self._marker_seqs
            and _h264_starts_nal(packet.payload)
            and (frame.start is None or _seq_diff(seq, frame.start) < 0)
        ):
            # ...or, before any marker was seen, at its lowest packet that starts a NAL unit.
            frame.start = seq
        if packet.marker:
            frame.end = seq
            self._marker_seqs.append(seq)

        if frame.start is not None and frame.end is not None:
            count = _seq_diff(frame.end, frame.start) + 1
            if count == len(frame.parts) or all(
                (frame.start + i) & 0xFFFF in frame.parts for i in range(count)
            ):
                data = b"".join(frame.parts[(frame.start + i) & 0xFFFF] for i in range(count))
                del self._pending[ts]
                self._done.append(ts)
                self._drop_older(frame.start)
                self._complete(name, data, now, ts)
        return False, None

    def remove(self, count: int) -> None:  # JitterBuffer API, unused by the receiver path
        self._pending.clear()

    def _drop_older(self, start: int) -> None:
        stale = [
            ts for ts, f in self._pending.items() if f.parts and all(_seq_diff(s, start) < 0 for s in f.parts)
        ]
        for ts in stale:
            del self._pending[ts]
            self.stats.frames_incomplete += 1
            for watch in self._watches:
                watch.abandoned += 1

    def _complete(self, codec: str | None, data: bytes, now: float, ts: int) -> None:
        stats = self.stats
        stats.frames_complete += 1
        if stats.first_frame_at is None:
            stats.first_frame_at = now
        if stats.kind == "video" and codec is not None:
            key = is_keyframe(codec, data)
            if self._watches:
                for watch in self._watches:
                    watch.frame_ts, watch.keyframe = ts, key
                self._watches = []
            if stats.first_frame_keyframe is None:
                stats.first_frame_keyframe = key
            if key:
                stats.keyframes += 1
                if stats.first_keyframe_at is None:
                    stats.first_keyframe_at = now
            if self._decode:
                self._decode_frame(codec, data)
        if self._on_frame is not None:
            self._on_frame(stats)

    def _decode_frame(self, codec: str, data: bytes) -> None:
        if codec not in _DECODERS:
            return
        if self._decoder is None:
            self._decoder = av.CodecContext.create(_DECODERS[codec], "r")
        try:
            self._decoder.decode(av.Packet(data))
        except av.FFmpegError:
            self.stats.decode_failed += 1
        else:
            self.stats.decoded_ok += 1


def install_frame_assembler(
    receiver: Any,
    kind: str,
    *,
    decode: bool = False,
    on_frame: Callable[[TrackStats], None] | None = None,
) -> FrameAssembler:
    """Replace ``receiver``'s jitter buffer (aiortc 1.16 private attribute) with an assembler.

    Call it before media flows, e.g. right after ``setRemoteDescription``. The receiver's codec
    table (filled later by ``receive()``, same dict object) names the codec of each payload type.
    """
    if not hasattr(receiver, _JITTER_BUFFER_ATTR) or not hasattr(receiver, _CODECS_ATTR):
        raise RuntimeError("aiortc RTCRtpReceiver has no __jitter_buffer/__codecs: re-read rtcrtpreceiver.py")
    assembler = FrameAssembler(kind, getattr(receiver, _CODECS_ATTR), decode=decode, on_frame=on_frame)
    setattr(receiver, _JITTER_BUFFER_ATTR, assembler)
    return assembler
