"""The forwarding link: how a publication's packets and its viewers' connections reach a process that
forwards on the node's behalf (a media worker today, another node's forwarder tomorrow).

Two channels, nothing in them assumes the same machine:

- **control**: a stream socket carrying length-prefixed msgpack frames (``encode_frame`` /
  ``FrameReader``), one tagged struct each (below). Main asks (``Subscribe``, ``Answer``,
  ``Candidate``: each with a request id ``rid``, answered by one ``Reply``) and tells (``Assign``,
  ``Release``, ``Pause``, ``Unpublish``, ``Remove``, ``Preference``); the forwarder tells main what
  main must act on (``Connected``, ``Failed``, ``KeyframeRequest``, ``Counters``, ``Quality``).
- **media**: one UDP datagram per forwarded RTP packet per forwarder, whatever number of viewers it
  serves there: a 14-byte header (``DATAGRAM``: flags, codec, publication key, the sequence number and
  timestamp main forwarded it with) and the RTP payload as the publisher sent it. The forwarder keeps
  main's numbering, so a NACK, an RTX answer and a sender report mean the same packets on both sides;
  a datagram lost on the link is a gap the viewer NACKs like any other.

Sans-I/O: this module encodes and decodes; ``media/workers.py`` (main) and ``media/worker.py`` (the
worker process) move the bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec

from media.figures import ConnectionDirection
from media.messages import SubscriberOffer
from media.peer import MediaConfig
from media.simulcast import MAX_LAYERS

# --- media channel -------------------------------------------------------------------------------

DATAGRAM = struct.Struct("!BBIII")  # flags, codec, publication key, forwarded seq, timestamp
HEADER_SIZE = DATAGRAM.size
MARKER = 0x80
KEYFRAME_START = 0x40  # first packet of a keyframe: waiting slots start here
VIDEO = 0x20
CODECS = ("", "audio/opus", "video/vp8", "video/h264")  # index = the codec byte
CODEC_BYTE = {mime: i for i, mime in enumerate(CODECS)}
MAX_DATAGRAM = 1500 + HEADER_SIZE


def encode_frame_packets(
    key: int, video: bool, mime: str, keyframe: bool, packets: Any, first_seq: int | None
) -> list[bytes]:
    """The datagrams of one forwarded frame. ``first_seq``: the forwarded number of its first packet
    when the publication renumbers (video), else None (each packet keeps its extended number)."""
    base = (VIDEO if video else 0) | (KEYFRAME_START if keyframe else 0)
    codec = CODEC_BYTE.get(mime, 0)
    out = []
    pack = DATAGRAM.pack
    for i, packet in enumerate(packets):
        seq = first_seq + i if first_seq is not None else packet.ext_seq
        flags = base | (MARKER if packet.marker else 0)
        out.append(pack(flags, codec, key, seq & 0xFFFFFFFF, packet.timestamp) + packet.payload)
        base &= ~KEYFRAME_START
    return out


class LinkPacket:
    """One datagram read back: what ``Fanout._forward`` reads of an RTP packet."""

    __slots__ = ("ext_seq", "marker", "payload", "timestamp")

    def __init__(self, ext_seq: int, marker: bool, timestamp: int, payload: bytes) -> None:
        self.ext_seq = ext_seq
        self.marker = marker
        self.timestamp = timestamp
        self.payload = payload


class LinkFrame:
    """A one-packet "frame" for ``Fanout._forward``: a keyframe when it is a keyframe's first packet."""

    __slots__ = ("keyframe", "packets", "timestamp")

    def __init__(self, packet: LinkPacket, keyframe: bool) -> None:
        self.packets = (packet,)
        self.keyframe = keyframe
        self.timestamp = packet.timestamp


def decode_datagram(data: bytes) -> tuple[int, int, str, LinkFrame] | None:
    """(publication key, flags, mime, frame), or None for a datagram that is not ours."""
    if len(data) < HEADER_SIZE:
        return None
    flags, codec, key, seq, ts = DATAGRAM.unpack_from(data)
    if codec >= len(CODECS):
        return None
    packet = LinkPacket(seq, bool(flags & MARKER), ts, data[HEADER_SIZE:])
    return key, flags, CODECS[codec], LinkFrame(packet, bool(flags & KEYFRAME_START))


# --- control channel -----------------------------------------------------------------------------


class Control(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every control frame."""


class Setup(Control, frozen=True, kw_only=True, tag="setup"):
    """Main → forwarder, first: how to build viewers' connections, and the one address its media
    datagrams come from (any other sender's are dropped: nobody else may inject media)."""

    config: MediaConfig
    source_host: str
    source_port: int


class Hello(Control, frozen=True, kw_only=True, tag="hello"):
    """Forwarder → main, first: who it is and where its media channel listens."""

    worker: int
    token: str  # the secret main gave the process it started (a stranger cannot pose as a worker)
    pid: int
    media_host: str
    media_port: int


class Subscribe(Control, frozen=True, kw_only=True, tag="subscribe"):
    rid: int
    vid: int  # a viewer id, unique on main


class Answer(Control, frozen=True, kw_only=True, tag="answer"):
    rid: int
    vid: int
    sdp: str


class Candidate(Control, frozen=True, kw_only=True, tag="candidate"):
    rid: int
    vid: int
    candidate: str  # the SDP candidate line without "candidate:"
    sdp_mid: str | None
    sdp_mline_index: int | None


class Assign(Control, frozen=True, kw_only=True, tag="assign"):
    vid: int
    pair: int
    kind: str
    pub: int  # publication key, as in the datagrams
    participant_id: str
    paused: bool
    # A simulcast video (media/layergroup.py): the keys of its encodings, lowest first, ``pub`` among
    # them; main forwards each of them to this worker, which switches the viewer's slot between them.
    layers: Annotated[tuple[int, ...], msgspec.Meta(max_length=MAX_LAYERS)] = ()


class Release(Control, frozen=True, kw_only=True, tag="release"):
    vid: int
    pair: int
    kind: str


class Pause(Control, frozen=True, kw_only=True, tag="pause"):
    pub: int
    paused: bool


class Unpublish(Control, frozen=True, kw_only=True, tag="unpublish"):
    """No viewer of this publication is left on the forwarder: drop its mirror."""

    pub: int


class Remove(Control, frozen=True, kw_only=True, tag="remove"):
    vid: int


class Preference(Control, frozen=True, kw_only=True, tag="preference"):
    """The viewer's layer preference (``layer.set``), for every speaker or one (``participant_id``)."""

    vid: int
    preference: str  # "auto", "high", "low", "audio": checked by the server's wire schema
    participant_id: str | None = None


class CountersNow(Control, frozen=True, kw_only=True, tag="counters_now"):
    """Main → forwarder: send ``Counters`` now (a scrape), then a ``Reply``."""

    rid: int


class Reply(Control, frozen=True, kw_only=True, tag="reply"):
    rid: int
    code: str = ""  # empty: success; else a MediaError code, ``message`` for people
    message: str = ""
    offer: SubscriberOffer | None = None


class Connected(Control, frozen=True, kw_only=True, tag="connected"):
    vid: int


class Failed(Control, frozen=True, kw_only=True, tag="failed"):
    vid: int


class KeyframeRequest(Control, frozen=True, kw_only=True, tag="keyframe_request"):
    pub: int


class Counters(Control, frozen=True, kw_only=True, tag="counters"):
    """The forwarder's ``media.stats`` counters since it started (main adds them up for /metrics)."""

    values: dict[str, int]
    gauges: dict[str, int] = {}  # now: "active_slots", the slots forwarding a track


class Quality(Control, frozen=True, kw_only=True, tag="quality"):
    """Forwarder → main, every few seconds per connected viewer: its down figures (media/figures.py),
    sampled where its connection lives; main keeps the last one (the stage's quality monitor)."""

    vid: int
    down: ConnectionDirection


ControlMessage = (
    Setup
    | Hello
    | Subscribe
    | Answer
    | Candidate
    | Assign
    | Release
    | Pause
    | Unpublish
    | Remove
    | Preference
    | CountersNow
    | Reply
    | Connected
    | Failed
    | KeyframeRequest
    | Counters
    | Quality
)

_LENGTH = struct.Struct("!I")
MAX_FRAME = 1 << 20  # an SDP offer with 16 slot pairs is ~20 kB
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ControlMessage)


class LinkError(Exception):
    """The peer broke the control protocol: the link is closed."""


def encode_frame(message: Control) -> bytes:
    body = _encoder.encode(message)
    return _LENGTH.pack(len(body)) + body


class FrameReader:
    """Bytes of the control stream in, messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[ControlMessage]:
        self._buffer += data
        while len(self._buffer) >= 4:
            (n,) = _LENGTH.unpack_from(self._buffer)
            if n > MAX_FRAME:
                raise LinkError(f"control frame of {n} bytes")
            if len(self._buffer) < 4 + n:
                return
            body = bytes(self._buffer[4 : 4 + n])
            del self._buffer[: 4 + n]
            try:
                yield _decoder.decode(body)
            except msgspec.DecodeError as exc:
                raise LinkError(f"bad control frame: {exc}") from None
