"""Padding probes on the wire (media/bwe.py ``Probe`` decides; this sends): padding-only RTP packets
on a viewer's video slot's RTX stream, in bursts every ``PADDING_TICK_S`` while a probe runs.

RFC 4588's RTX stream has its own sequence numbers, which no viewer NACKs, and no media a
retransmission could confuse them with. Each packet carries abs-send-time like every video packet,
so that Chromium's remote estimator counts its bytes (payload + padding) in what it receives, and,
when the viewer's answer took it, the transport-wide sequence number whose feedback ends a probe that
fills the link's queue (media/twcc.py).
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import TYPE_CHECKING

from media import stats
from media.publication import abs_send_time_extension

if TYPE_CHECKING:
    from media.subscriber import Slot, Subscriber

PADDING_BYTES = 224  # per packet (the RTP padding count is one octet; libwebrtc sends at most 224)
PADDING_TICK_S = 0.02  # padding goes out in bursts this far apart

RTX_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M|PT, sequence number, timestamp, SSRC
_TRANSPORT_SEQ = struct.Struct("!H").pack_into


def send_padding(slot: Slot, count: int, now: float) -> int:
    """``count`` padding-only packets on ``slot``'s RTX stream, timestamped as the last media sent;
    returns the bytes sent (RTP header and padding, before SRTP)."""
    pub = slot.publication
    if pub is not None and slot in pub.active:
        ts = (pub.last_ts + slot.ts_off) & 0xFFFFFFFF
    else:
        ts = slot.last_out_ts
    delay = slot.subscriber.probe_delay  # transport-wide numbers for its feedback (media/twcc.py)
    if delay is None:
        packet = bytearray(20 + PADDING_BYTES)
        packet[12:20] = abs_send_time_extension(now)
    else:
        packet = bytearray(24 + PADDING_BYTES)
        packet[12:24] = abs_send_time_extension(now, transport=True)
    packet[-1] = PADDING_BYTES
    rtx_pt = slot.rtx_pts[slot.pt]
    for _ in range(count):
        # V=2, P (padding), X (the abs-send-time extension, and the transport-wide number)
        RTX_HEADER.pack_into(packet, 0, 0xB0, rtx_pt, slot.rtx_seq, ts, slot.rtx_ssrc)
        if delay is not None:
            _TRANSPORT_SEQ(packet, 21, delay.take(now))
        slot.rtx_seq = (slot.rtx_seq + 1) & 0xFFFF
        try:
            slot.sendto(slot.protect(bytes(packet)), slot.addr)
        except Exception as exc:
            slot.fail(exc)
            return 0
    stats.padding_packets_sent += count
    return count * len(packet)


class PaddingBursts:
    """One viewer's padding while one of its probes runs: each tick, what the probe's rate owes since
    the last (at most two ticks'), on the probed speaker's video slot. Stops by itself when the
    probe ends (``ViewerLayers.padding_bps`` says None)."""

    __slots__ = ("at", "credit", "subscriber", "timer")

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.timer: asyncio.TimerHandle | None = None
        self.at = 0.0
        self.credit = 0.0

    def start(self, now: float) -> None:
        """Start the bursts if a probe runs and they are not going already."""
        sub = self.subscriber
        if sub.layers.probe is None or self.timer is not None or sub.closed:
            return
        if sub.probe_delay is not None:
            sub.probe_delay.start()  # the probe's delays are measured from its first padding on
        self.at = now
        self.credit = 0.0
        self.timer = asyncio.get_running_loop().call_later(PADDING_TICK_S, self._tick)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _tick(self) -> None:
        self.timer = None
        sub = self.subscriber
        now = time.monotonic()
        wanted = sub.layers.padding_bps(now)
        slot = None if wanted is None or sub.closed else sub.video_slot(wanted[0])
        if wanted is None or slot is None or not slot.can_pad():
            return
        elapsed = min(now - self.at, 2 * PADDING_TICK_S)
        self.at = now
        self.credit += wanted[1] * elapsed / 8
        size = (20 if sub.probe_delay is None else 24) + PADDING_BYTES
        count = int(self.credit // size)
        if count:
            self.credit -= count * size
            sub.padding_octets += send_padding(slot, count, now)
        self.timer = asyncio.get_running_loop().call_later(PADDING_TICK_S, self._tick)
