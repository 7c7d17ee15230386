"""A viewer's RTCP, read where it arrives: the feedback a send-only connection needs, nothing else.

Sans-I/O: ``ViewerRtcp`` takes one decrypted compound RTCP packet (RFC 3550 §6, RFC 4585 §6) and calls
the slot its SSRC names: receiver report blocks (loss fraction, jitter), generic NACKs (resend), PLI
and FIR (keyframe), REMB (the viewer's bandwidth estimate, draft-alvestrand-rmcat-remb); transport
feedback (the probes' delay, media/twcc.py) goes to the connection. The shared
socket (media/udpmux.py) hands it a viewer's SRTCP directly, so aiortc's receive task, its queue,
``RtcpPacket.parse`` (an object per report) and its routing are not paid per packet and per viewer. A
viewer's connection is send-only: aiortc's receivers there have nothing to learn from RTCP (SR, SDES,
BYE are for receivers).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Protocol

_HEADER = struct.Struct("!BBH").unpack_from
# SSRC, fraction lost | cumulative lost, highest seq, jitter, LSR, DLSR (RFC 3550 §6.4.1)
_REPORT = struct.Struct("!IIIIII").unpack_from
_SSRC = struct.Struct("!I").unpack_from
_NACK = struct.Struct("!HH").unpack_from

_SR, _RR, _RTPFB, _PSFB = 200, 201, 205, 206
_NACK_FMT, _PLI_FMT, _FIR_FMT, _APP_FMT = 1, 1, 4, 15
_TRANSPORT_FMT = 15  # RTPFB: transport-wide feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01)
_REMB = b"REMB"
MAX_REMB_SSRCS = 64  # more than any viewer connection has slots (2 per pair)


class Feedback(Protocol):
    """What a slot does with its viewer's feedback (media/subscriber.py Slot)."""

    def retransmit(self, sequence_number: int) -> None: ...
    def on_keyframe_request(self) -> None: ...
    def on_receiver_report(
        self, fraction_lost: int, jitter: int, lost: int = 0, lsr: int = 0, dlsr: int = 0
    ) -> None: ...
    def on_remb(self, bitrate_bps: int, ssrcs: list[int]) -> None: ...


def parse_remb(data: bytes, start: int, end: int) -> tuple[int, list[int]] | None:
    """The bitrate (bit/s) and SSRCs of a REMB FCI at ``data[start:end]`` (draft-alvestrand-rmcat-remb
    §2.2: "REMB", number of SSRCs, 6-bit exponent and 18-bit mantissa, the SSRCs), or None when it is
    not one. A count larger than the SSRCs present (or than ``MAX_REMB_SSRCS``) reads what is there."""
    if end - start < 8 or data[start : start + 4] != _REMB:
        return None
    count = data[start + 4]
    exponent = data[start + 5] >> 2
    mantissa = ((data[start + 5] & 0x03) << 16) | (data[start + 6] << 8) | data[start + 7]
    at = start + 8
    count = min(count, (end - at) // 4, MAX_REMB_SSRCS)
    return mantissa << exponent, [_SSRC(data, at + 4 * i)[0] for i in range(count)]


class ViewerRtcp:
    """One viewer connection's slots by their SSRC; called with each decrypted compound packet.
    ``transport``: called with a transport feedback message (media/twcc.py) as ``(data, start,
    end)`` of its FCI; it names no slot (the numbers are the connection's)."""

    __slots__ = ("slots", "transport")

    def __init__(
        self, slots: dict[int, Feedback], transport: Callable[[bytes, int, int], None] | None = None
    ) -> None:
        self.slots = slots
        self.transport = transport

    def __call__(self, data: bytes) -> None:
        """Act on every packet of the compound; a malformed one ends the walk (what came before
        stands)."""
        slots = self.slots
        pos, size = 0, len(data)
        while pos + 8 <= size:
            first, kind, length = _HEADER(data, pos)
            end = pos + 4 * (length + 1)
            if first >> 6 != 2 or end > size:
                return
            count = first & 0x1F
            if kind == _RR or kind == _SR:
                at = pos + (28 if kind == _SR else 8)
                for _ in range(count):
                    if at + 24 > end:
                        return
                    ssrc, lost, _highest, jitter, lsr, dlsr = _REPORT(data, at)
                    slot = slots.get(ssrc)
                    if slot is not None:
                        cumulative = lost & 0xFFFFFF  # 24-bit signed (duplicates make it negative)
                        if cumulative & 0x800000:
                            cumulative -= 0x1000000
                        slot.on_receiver_report(lost >> 24, jitter, cumulative, lsr, dlsr)
                    at += 24
            elif kind == _RTPFB and count == _NACK_FMT and end - pos >= 12:
                slot = slots.get(_SSRC(data, pos + 8)[0])
                if slot is not None:
                    for at in range(pos + 12, end - 3, 4):
                        pid, blp = _NACK(data, at)
                        slot.retransmit(pid)
                        while blp:  # RFC 4585 §6.2.1: bit i set = pid + i + 1 lost too
                            low = blp & -blp
                            slot.retransmit((pid + low.bit_length()) & 0xFFFF)
                            blp ^= low
            elif kind == _RTPFB and count == _TRANSPORT_FMT and end - pos >= 20:
                if self.transport is not None:
                    self.transport(data, pos + 12, end)
            elif kind == _PSFB and end - pos >= 12:
                if count == _PLI_FMT:
                    slot = slots.get(_SSRC(data, pos + 8)[0])
                    if slot is not None:
                        slot.on_keyframe_request()
                elif count == _APP_FMT:
                    remb = parse_remb(data, pos + 12, end)
                    if remb is not None:
                        # One estimate for the whole connection: the first slot it names takes it.
                        slot = next((s for ssrc in remb[1] if (s := slots.get(ssrc)) is not None), None)
                        if slot is not None:
                            slot.on_remb(*remb)
                elif count == _FIR_FMT:
                    # RFC 5104 §4.3.1: the media SSRC field is 0; each FCI entry names an SSRC.
                    for at in range(pos + 12, end - 7, 8):
                        slot = slots.get(_SSRC(data, at)[0])
                        if slot is not None:
                            slot.on_keyframe_request()
            pos = end
