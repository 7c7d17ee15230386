"""Induced packet loss at an aiortc receiver, before its NACK generator sees the packet.

aiortc 1.16 ``RTCDtlsTransport`` hands each decrypted RTP packet to
``await receiver._handle_rtp_packet(packet, arrival_time_ms=...)`` (rtcdtlstransport.py 622-624),
which unwraps RTX and feeds aiortc's own ``NackGenerator`` (rtcrtpreceiver.py 471-540). Dropping a
packet in front of that method is loss as the receiver sees it: its real NACK generator notices the
gap and asks the sender, and the test watches what comes back.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

_CODECS_ATTR = "_RTCRtpReceiver__codecs"


@dataclass
class InducedLoss:
    """Drops every ``every``-th media packet once (never a retransmission) while ``active``."""

    every: int
    skip_first: int = 20  # the NACK generator needs a sequence number to count from
    active: bool = True
    seen: int = 0  # media packets that arrived (dropped ones included)
    dropped: dict[int, bytes] = field(default_factory=dict)  # sequence number -> payload
    recovered: dict[int, bytes] = field(default_factory=dict)  # the same, as retransmitted
    delays: list[float] = field(default_factory=list)  # seconds from a drop to its retransmission
    rtx_packets: int = 0
    _dropped_at: dict[int, float] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        """Every dropped packet came back, byte for byte."""
        return self.recovered == self.dropped

    def _is_rtx(self, codec: Any) -> bool:
        return codec is not None and str(codec.mimeType).lower().endswith("/rtx")

    def _arrived(self, packet: Any, codec: Any) -> bool:
        """Record ``packet``; False when it is to be dropped."""
        if self._is_rtx(codec):
            self.rtx_packets += 1
            if len(packet.payload) >= 2:  # RFC 4588 §4: original sequence number, then payload
                seq = int.from_bytes(packet.payload[:2], "big")
                if seq in self.dropped:
                    self._recovered(seq, bytes(packet.payload[2:]))
            return True
        seq = packet.sequence_number
        if seq in self.dropped:  # resent as is (no RTX negotiated)
            self._recovered(seq, bytes(packet.payload))
            return True
        self.seen += 1
        if self.active and self.seen > self.skip_first and self.seen % self.every == 0:
            self.dropped[seq] = bytes(packet.payload)
            self._dropped_at[seq] = time.monotonic()
            return False
        return True

    def _recovered(self, seq: int, payload: bytes) -> None:
        if seq not in self.recovered:
            self.delays.append(time.monotonic() - self._dropped_at[seq])
        self.recovered[seq] = payload


def drop_incoming(receiver: Any, *, every: int) -> InducedLoss:
    """Make ``receiver`` lose every ``every``-th media packet (once each) from now on."""
    codecs = getattr(receiver, _CODECS_ATTR, None)
    original: Callable[..., Awaitable[None]] | None = getattr(receiver, "_handle_rtp_packet", None)
    if codecs is None or original is None:
        raise RuntimeError("aiortc RTCRtpReceiver changed (__codecs, _handle_rtp_packet): re-read it")
    loss = InducedLoss(every)

    async def handle(packet: Any, arrival_time_ms: int) -> None:
        if loss._arrived(packet, codecs.get(packet.payload_type)):
            await original(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = handle
    return loss


@dataclass
class IncomingLog:
    """What reached an aiortc receiver: media sequence numbers, and RTX counted per original one."""

    media: list[int] = field(default_factory=list)
    ssrc: int | None = None  # the sender's media SSRC, which a NACK names
    rtx: dict[int, int] = field(default_factory=dict)  # original sequence number -> RTX copies

    @property
    def rtx_packets(self) -> int:
        return sum(self.rtx.values())


def log_incoming(receiver: Any) -> IncomingLog:
    """Record what ``receiver`` gets from now on (nothing is dropped)."""
    codecs = getattr(receiver, _CODECS_ATTR, None)
    original: Callable[..., Awaitable[None]] | None = getattr(receiver, "_handle_rtp_packet", None)
    if codecs is None or original is None:
        raise RuntimeError("aiortc RTCRtpReceiver changed (__codecs, _handle_rtp_packet): re-read it")
    seen = IncomingLog()

    async def handle(packet: Any, arrival_time_ms: int) -> None:
        codec = codecs.get(packet.payload_type)
        if codec is not None and str(codec.mimeType).lower().endswith("/rtx"):
            if len(packet.payload) >= 2:
                seq = int.from_bytes(packet.payload[:2], "big")
                seen.rtx[seq] = seen.rtx.get(seq, 0) + 1
        else:
            seen.media.append(packet.sequence_number)
            seen.ssrc = packet.ssrc
        await original(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = handle
    return seen


async def send_nack(receiver: Any, media_ssrc: int, lost: list[int]) -> None:
    """A real RTCP NACK (RFC 4585 §6.2.1) from ``receiver``'s RTCP SSRC, over its SRTCP session.

    ``lost`` must be ascending without wrapping: aiortc packs it into PID+BLP pairs as given.
    """
    send: Callable[..., Awaitable[None]] | None = getattr(receiver, "_send_rtcp_nack", None)
    if send is None:
        raise RuntimeError("aiortc RTCRtpReceiver changed (_send_rtcp_nack): re-read it")
    await send(media_ssrc, lost)
