"""A connection's figures, read from the node's own RTP/RTCP state: per viewer (down: node -> viewer,
from the slots of ``media/subscriber.py`` and the viewer's receiver reports) and per publisher (up:
publisher -> node, from what arrives, ``UpTrack``). The structs travel over the forwarding link (a
media worker's viewers, ``link.Quality``) and into the troubleshooting report (server/api/quality.py).

Called every few seconds per connection, never per packet: each call feeds the bit-rate meters and
closes a loss interval, so only one sampler may call it (the stage's quality monitor, or the worker's
loop); readers take the last result.
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any

import msgspec

from media import ice_hooks
from media.quality import ArrivalStats, QualityFigures, RateMeter

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection
    from aiortc.rtcrtpparameters import RTCRtpParameters

    from media.subscriber import Subscriber


class CandidateEnd(msgspec.Struct, kw_only=True):
    """One end of the chosen ICE candidate pair: never its address (the report may be read by a
    moderator), only what helps: the family, the candidate type and the transport."""

    family: str | None  # "ipv4", "ipv6", or None for a name (mDNS)
    type: str  # host, srflx, prflx, relay
    protocol: str  # udp, tcp


class ConnectionPath(msgspec.Struct, kw_only=True):
    connection: str  # RTCPeerConnection.connectionState
    ice: str  # iceConnectionState
    dtls: str | None
    local: CandidateEnd | None = None
    remote: CandidateEnd | None = None


class NegotiatedCodec(msgspec.Struct, kw_only=True):
    mime: str
    payload_type: int
    rtx_payload_type: int | None = None


class Negotiated(msgspec.Struct, kw_only=True):
    """What one kind of track negotiated (every slot of a kind negotiates the same)."""

    kind: str
    codecs: list[NegotiatedCodec]
    header_extensions: list[str]
    feedback: list[str]  # RTCP feedback: "nack", "nack pli", "goog-remb", "transport-cc", ...
    rtx: bool
    remb: bool


class SlotFigures(msgspec.Struct, kw_only=True):
    """One slot of a viewer (down): what it carries and the viewer's last report about it."""

    slot: int
    kind: str
    mid: str | None
    publisher: str | None  # the participant whose track it carries
    forwarding: bool
    codec: str | None
    loss: float  # fraction lost in the viewer's last report interval (0..1)
    cumulative_lost: int
    jitter_ms: float
    rtt_ms: float | None
    bitrate: float  # bits/s sent, the last few seconds
    layer: str | None  # the simulcast layer forwarded, where the publication has one
    report_age_s: float | None  # since the viewer's last receiver report about this slot


class TrackFigures(msgspec.Struct, kw_only=True):
    """One published track (up), as the node receives it."""

    kind: str
    codec: str
    packets: int
    loss: float  # fraction lost since the previous sample
    cumulative_lost: int
    jitter_ms: float
    bitrate: float  # bits/s received, the last few seconds
    silent_s: float | None  # since the last packet


class ConnectionDirection(msgspec.Struct, kw_only=True):
    """One direction of a participant's media: aggregate figures (the worst track), the path, what
    was negotiated, and each slot (down) or track (up)."""

    figures: QualityFigures
    path: ConnectionPath
    negotiated: list[Negotiated]
    slots: list[SlotFigures] = []
    tracks: list[TrackFigures] = []
    rtt_note: str | None = None


# --- reading aiortc objects ----------------------------------------------------------------------


def _endpoint(candidate: Any) -> CandidateEnd:
    try:
        family: str | None = f"ipv{ipaddress.ip_address(candidate.host).version}"
    except ValueError:
        family = None
    return CandidateEnd(family=family, type=str(candidate.type), protocol=str(candidate.transport).lower())


def path_of(pc: RTCPeerConnection, dtls: Any) -> ConnectionPath:
    pair = ice_hooks.nominated_pair(dtls)
    return ConnectionPath(
        connection=pc.connectionState,
        ice=pc.iceConnectionState,
        dtls=getattr(dtls, "state", None),
        local=_endpoint(pair[0]) if pair else None,
        remote=_endpoint(pair[1]) if pair else None,
    )


def negotiated_of(kind: str, parameters: RTCRtpParameters) -> Negotiated:
    """From aiortc's send or receive parameters."""
    rtx = {
        c.parameters.get("apt"): c.payloadType
        for c in parameters.codecs
        if c.mimeType.lower().endswith("/rtx")
    }
    codecs = [
        NegotiatedCodec(
            mime=c.mimeType.lower(), payload_type=c.payloadType or 0, rtx_payload_type=rtx.get(c.payloadType)
        )
        for c in parameters.codecs
        if not c.mimeType.lower().endswith("/rtx")
    ]
    feedback = sorted(
        {f"{fb.type} {fb.parameter or ''}".strip() for c in parameters.codecs for fb in c.rtcpFeedback}
    )
    return Negotiated(
        kind=kind,
        codecs=codecs,
        header_extensions=[e.uri for e in parameters.headerExtensions],
        feedback=feedback,
        rtx=bool(rtx),
        remb="goog-remb" in feedback,
    )


# --- down: a viewer's slots ----------------------------------------------------------------------


def viewer(sub: Subscriber, now: float | None = None) -> ConnectionDirection:
    """The viewer's figures now (feeds the slots' bit-rate meters: one sampler only)."""
    now = time.monotonic() if now is None else now
    slots: list[SlotFigures] = []
    negotiated: dict[str, Negotiated] = {}
    silent: list[float] = []
    for pair in sub.pairs:
        for slot in (pair.audio, pair.video):
            if slot.kind not in negotiated and slot.pts:
                extensions, feedback = slot.negotiated
                codecs = [
                    NegotiatedCodec(mime=mime, payload_type=pt, rtx_payload_type=slot.rtx_pts.get(pt))
                    for mime, pt in slot.pts.items()
                ]
                negotiated[slot.kind] = Negotiated(
                    kind=slot.kind,
                    codecs=codecs,
                    header_extensions=extensions,
                    feedback=feedback,
                    rtx=bool(slot.rtx_pts),
                    remb="goog-remb" in feedback,
                )
            pub = slot.publication
            if pub is None:
                continue
            # A paused (muted) track sends nothing: its viewers stop reporting on it, which is no loss.
            forwarding = slot in pub.active and not pub.paused
            sent = (pub.packets - slot.packet_base) * 12 + pub.octets - slot.octet_base if forwarding else 0
            bitrate = slot.meter.add(now, sent) if forwarding else 0.0
            if forwarding:
                since = slot.rr_at if slot.rr_at is not None else slot.last_sent_at
                if since is not None:
                    silent.append(now - max(since, slot.last_sent_at or since))
            layer = getattr(pub, "layer", None) or getattr(pub, "rid", None)
            if pub.tl_count > 1:  # temporal layers (media/temporal.py): the highest TID forwarded
                layer = f"T{min(slot.tl_cur, pub.tl_count - 1)}"
            slots.append(
                SlotFigures(
                    slot=slot.index,
                    kind=slot.kind,
                    mid=slot.mid,
                    publisher=pub.participant_id,
                    forwarding=forwarding,
                    codec=pub.mime or None,
                    loss=slot.fraction_lost / 256.0,
                    cumulative_lost=slot.cumulative_lost,
                    jitter_ms=1000.0 * slot.jitter / slot.clock_rate,
                    rtt_ms=None if slot.rtt is None else 1000.0 * slot.rtt,
                    bitrate=bitrate,
                    layer=None if layer is None else str(layer),
                    report_age_s=None if slot.rr_at is None else now - slot.rr_at,
                )
            )
    active = [s for s in slots if s.forwarding]
    rtts = [s.rtt_ms for s in active if s.rtt_ms is not None]
    figures = QualityFigures(
        loss=max((s.loss for s in active), default=None),
        rtt_ms=max(rtts) if rtts else None,
        jitter_ms=max((s.jitter_ms for s in active), default=None),
        bitrate=sum(s.bitrate for s in active) if active else None,
        silent_s=min(silent) if silent else None,
    )
    dtls = sub.pairs[0].audio.sender.transport if sub.pairs else None
    return ConnectionDirection(
        figures=figures, path=path_of(sub.pc, dtls), negotiated=list(negotiated.values()), slots=slots
    )


# --- up: a publisher's tracks --------------------------------------------------------------------


class UpTrack:
    """What arrives of one published track (fed per packet by the publisher's sink)."""

    __slots__ = ("arrivals", "codec", "kind", "meter", "negotiated")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.codec = ""
        self.arrivals = ArrivalStats(48000 if kind == "audio" else 90000)
        self.meter = RateMeter()
        self.negotiated: Negotiated | None = None

    def on_parameters(self, parameters: RTCRtpParameters) -> None:
        self.negotiated = negotiated_of(self.kind, parameters)
        if parameters.codecs:
            self.codec = parameters.codecs[0].mimeType.lower()
            self.arrivals.clock_rate = parameters.codecs[0].clockRate

    def sample(self, now: float) -> TrackFigures:
        a = self.arrivals
        return TrackFigures(
            kind=self.kind,
            codec=self.codec,
            packets=a.received,
            loss=a.interval(),
            cumulative_lost=a.lost,
            jitter_ms=a.jitter_ms,
            bitrate=self.meter.add(now, a.bytes),
            silent_s=None if a.last_arrival is None else now - a.last_arrival,
        )


UP_RTT_NOTE = (
    "null: the node sends a publisher no media, so no receiver report of the publisher's carries an "
    "LSR of ours, and aioice does not time its consent checks"
)


def publisher(
    pc: RTCPeerConnection, tracks: dict[str, UpTrack], muted: set[str], now: float | None = None
) -> ConnectionDirection:
    """The publisher's figures now (closes a loss interval: one sampler only). A muted track is not
    expected to send (browsers keep sending silence or black, but a paused one may not)."""
    now = time.monotonic() if now is None else now
    sampled = [t.sample(now) for t in tracks.values()]
    expected = [t for t in sampled if t.kind not in muted]
    silent = [t.silent_s if t.silent_s is not None else 0.0 for t in expected]
    figures = QualityFigures(
        loss=max((t.loss for t in expected), default=None),
        rtt_ms=None,
        jitter_ms=max((t.jitter_ms for t in expected), default=None),
        bitrate=sum(t.bitrate for t in sampled) if sampled else None,
        silent_s=min(silent) if silent else None,
    )
    dtls = next((t.receiver.transport for t in pc.getTransceivers()), None)
    negotiated = [t.negotiated for t in tracks.values() if t.negotiated is not None]
    return ConnectionDirection(
        figures=figures, path=path_of(pc, dtls), negotiated=negotiated, tracks=sampled, rtt_note=UP_RTT_NOTE
    )
