"""Transport-wide congestion control feedback for padding probes: a delay signal that ends a probe
before the viewer's link queue fills (docs/architecture.md, "Bandwidth estimate").

A probe's padding (media/bwe.py ``Probe``) goes through the same bottleneck queue as the viewer's
media. Loss and NACKs come only once that queue overflows: a rate cap with a deep queue (the bench's
tbf holds ≈ 1.3 s of 300 kbit/s) then delays every frame by the queue's length before anything says
"too much", and the viewer freezes. Arrival times say it within ~100 ms: a probe over the link's
rate makes each padding packet wait a little longer than the one before.

Only the padding carries the transport-wide sequence number
(draft-holmer-rmcat-transport-wide-cc-extensions-01): Chromium sends transport feedback for the
packets that carry it and keeps estimating REMB from the media that does not (libwebrtc's
ReceiveSideCongestionController picks per packet), so the media path is unchanged and pays nothing.

Sans-I/O: ``add_to_offer`` and ``accepted`` rewrite / read SDP text, ``parse_feedback`` reads one
RTCP transport feedback message, ``ProbeDelay`` turns send times and feedback into the signal.
"""

from __future__ import annotations

import re
import struct

URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
EXTENSION_ID = 5  # aiortc's offer uses 1-3 (mid, audio level, abs-send-time); RID 10/11 publishers only
FMT = 15  # RTPFB FMT of transport feedback

MAX_STATUS_COUNT = 4096  # statuses read from one feedback: more than a probe sends between two of them
_SEND_LOG = 4096  # padding packets remembered (a power of two)
_SEND_MASK = _SEND_LOG - 1
_DELTA_S = 250e-6  # receive delta unit
_REFERENCE_S = 0.064  # reference time unit
_REFERENCE_WRAP = 1 << 24

_FEEDBACK_HEAD = struct.Struct("!HHI").unpack_from  # base seq, status count, reference time | fb count
_CHUNK = struct.Struct("!H").unpack_from
_LARGE_DELTA = struct.Struct("!h").unpack_from

_EXTMAP = f"a=extmap:{EXTENSION_ID} {URI}"
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/]+)/", re.IGNORECASE)


def add_to_offer(sdp: str) -> str:
    """Our offer to a viewer with the transport-wide sequence number in every video section and
    ``transport-cc`` feedback for each of its codecs but RTX (libwebrtc turns send-side feedback
    on for a receive stream from its codecs' feedback, and only with the extension negotiated)."""
    out: list[str] = []
    video = False
    for line in sdp.splitlines():
        if line.startswith("m="):
            video = line.startswith("m=video ")
            out.append(line)
            continue
        out.append(line)
        if not video:
            continue
        if line.startswith("a=mid:"):
            out.append(_EXTMAP)
        else:
            match = _RTPMAP.match(line)
            if match and match.group(2).lower() != "rtx":
                out.append(f"a=rtcp-fb:{match.group(1)} transport-cc")
    return "\r\n".join(out) + "\r\n"


def accepted(answer_sdp: str) -> bool:
    """Whether the viewer's answer kept the extension in a video section (under our id: an answer
    cannot renumber an offered extension, RFC 8285 §6)."""
    video = False
    for line in answer_sdp.splitlines():
        if line.startswith("m="):
            video = line.startswith("m=video ")
        elif video and line.strip() == _EXTMAP:
            return True
    return False


def parse_feedback(data: bytes, start: int, end: int) -> list[tuple[int, float]]:
    """The packets a transport feedback FCI at ``data[start:end]`` reports as received: (16-bit
    transport sequence number, arrival time in seconds on the receiver's clock). Packets reported as
    not received are left out. A truncated or malformed message yields what was read before the
    fault (statuses without their delta are dropped); at most ``MAX_STATUS_COUNT`` statuses."""
    if end - start < 8:
        return []
    base, count, reference = _FEEDBACK_HEAD(data, start)
    reference >>= 8  # the low byte is the feedback packet count
    if reference & 0x800000:  # 24-bit signed
        reference -= _REFERENCE_WRAP
    count = min(count, MAX_STATUS_COUNT)
    symbols: list[int] = []
    at = start + 8
    while len(symbols) < count:
        if at + 2 > end:
            return []  # the statuses do not fit: nothing to trust
        chunk = _CHUNK(data, at)[0]
        at += 2
        if chunk & 0x8000 == 0:  # run length: symbol (2 bits), length (13 bits)
            symbol, run = (chunk >> 13) & 0x3, chunk & 0x1FFF
            symbols.extend([symbol] * min(run, count - len(symbols)))
        elif chunk & 0x4000 == 0:  # status vector of 14 one-bit symbols
            symbols.extend((chunk >> (13 - i)) & 0x1 for i in range(14))
        else:  # status vector of 7 two-bit symbols
            symbols.extend((chunk >> (12 - 2 * i)) & 0x3 for i in range(7))
    del symbols[count:]
    received: list[tuple[int, float]] = []
    arrival = reference * _REFERENCE_S
    for index, symbol in enumerate(symbols):
        if symbol == 1:
            if at + 1 > end:
                break
            arrival += data[at] * _DELTA_S
            at += 1
        elif symbol == 2:
            if at + 2 > end:
                break
            arrival += _LARGE_DELTA(data, at)[0] * _DELTA_S
            at += 2
        else:
            continue  # not received (0) or reserved (3)
        received.append(((base + index) & 0xFFFF, arrival))
    return received


class ProbeDelay:
    """How much longer the padding of the running probe takes to reach the viewer than it did at
    the probe's start: the queueing the probe adds at the bottleneck.

    One-way delay is arrival (viewer's clock) minus send time (ours): an unknown offset that cancels
    out against the smallest delay seen since ``start``. A feedback says "queue filling" when every
    padding packet it reports arrived ``rise_s`` or more later than that: a queue that grows delays
    them all, while a receiver that stalls for a moment (a busy CPU) stamps the packets queued during
    the stall late but those sent after it on time."""

    __slots__ = ("base", "min_packets", "next_seq", "rise_s", "sent")

    def __init__(self, rise_s: float = 0.03, min_packets: int = 2) -> None:
        self.rise_s = rise_s
        self.min_packets = min_packets
        self.next_seq = 0
        self.sent: list[float] = [-1.0] * _SEND_LOG  # send time per sequence number (ring)
        self.base: float | None = None  # the smallest delay since ``start``

    def start(self) -> None:
        """A probe begins: delays are measured from its first padding on."""
        self.base = None
        self.sent = [-1.0] * _SEND_LOG

    def take(self, now: float) -> int:
        """The transport sequence number of a padding packet sent at ``now``."""
        seq = self.next_seq
        self.next_seq = (seq + 1) & 0xFFFF
        self.sent[seq & _SEND_MASK] = now
        return seq

    def feedback(self, received: list[tuple[int, float]]) -> float | None:
        """Read one feedback's received packets; returns the rise in delay every one of them shows
        (seconds, from the smallest since ``start``), or None when fewer than ``min_packets`` of the
        probe's padding are in it."""
        delays = []
        sent = self.sent
        for seq, arrival in received:
            at = sent[seq & _SEND_MASK]
            if at >= 0.0:
                delays.append(arrival - at)
        if not delays:
            return None
        low = min(delays)
        base = self.base
        if base is None or low < base or low - base > 10.0:  # a reference time wrap: start again
            base = self.base = low
        if len(delays) < self.min_packets:
            return None
        return low - base

    def congested(self, received: list[tuple[int, float]]) -> bool:
        """Whether this feedback shows the probe filling a queue (``feedback`` >= ``rise_s``)."""
        rise = self.feedback(received)
        return rise is not None and rise >= self.rise_s
