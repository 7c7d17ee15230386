"""One published track: frames in from the assembler, RTP out to every subscribed slot.

This is the hot path. Per incoming packet the header is rebuilt once (publisher's extensions dropped,
they name IDs negotiated with the publisher, not the subscriber); per subscriber only the 11 bytes that
differ are patched in place, the packet is SRTP-protected and written to the subscriber's UDP socket.
No decoding, no re-packetization, no coroutine per packet, no allocation beyond the protected bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from media import layergroup, redundancy, stats, temporal, twcc, vp8
from media.assembler import AudioPassthrough, Frame, FrameAssembler
from media.codecs import frame_is_keyframe
from media.keyframes import KeyframePolicy
from media.link import encode_frame_packets
from media.nackguard import RING_SIZE  # forwarded packets kept for retransmission

if TYPE_CHECKING:
    from media.layergroup import LayerGroup
    from media.subscriber import Slot
    from media.workers import LinkTarget

log = logging.getLogger(__name__)

_RING_MASK = RING_SIZE - 1
_HEADER = struct.Struct("!BHII")  # M|PT, sequence number, timestamp, SSRC: bytes 1..11
_pack_header = _HEADER.pack_into
_keys = itertools.count(1)

# RFC 8285 one-byte header extension carrying abs-send-time (webrtc's 6.18 fixed-point seconds, 24
# bits): the id aiortc's offer gives it in every viewer's video sections (a guard test checks it).
# The viewer's REMB then measures our send times, not the publisher's capture times (aiortc viewers
# send none without it; docs/architecture.md, "Bandwidth estimate and layer choice"). The time is
# the frame's forwarding time, once per packet for every viewer.
ABS_SEND_TIME_ID = 3
_ABS_SEND_TIME = struct.Struct("!HHI")  # 0xBEDE, length 1 word, id|len + 24-bit time
_ABS_SEND_TIME_HEAD = 0xBEDE
_ABS_SEND_TIME_ELEMENT = (ABS_SEND_TIME_ID << 4 | 2) << 24
_ABS_AND_TRANSPORT = struct.Struct("!HHII")  # ... + id|len, 16-bit number, 1 byte of padding
_TRANSPORT_ELEMENT = twcc.EXTENSION_ID << 4 | 1


def abs_send_time_extension(now: float, transport: bool = False) -> bytes:
    """The 8 bytes of header extension after the fixed header (the X bit set in byte 0); with
    ``transport``, 12: a transport-wide sequence number element after it (media/twcc.py; its two
    bytes, 21-22 of the packet, are the sender's to fill, then one byte of padding)."""
    time_6_18 = int(now * 262144) & 0xFFFFFF
    if transport:
        return _ABS_AND_TRANSPORT.pack(
            _ABS_SEND_TIME_HEAD, 2, _ABS_SEND_TIME_ELEMENT | time_6_18, _TRANSPORT_ELEMENT << 24
        )
    return _ABS_SEND_TIME.pack(_ABS_SEND_TIME_HEAD, 1, _ABS_SEND_TIME_ELEMENT | time_6_18)


class Fanout:
    """Forwarded packets of one track to the slots attached to it: the per-packet path.

    Shared by the main process's ``Publication`` (packets from a publisher's assembler) and a media
    worker's mirror of it (packets from the forwarding link, ``media/link.py``), so a viewer's
    connection is served by the same code in the node's process or in a worker. Subclasses say how a
    keyframe is asked for (``request_keyframe``).
    """

    def __init__(self, participant_id: str, kind: str, *, renumber: bool) -> None:
        self.participant_id = participant_id
        self.kind = kind
        self.mime = ""  # "audio/opus", "video/vp8", "video/h264" once negotiated
        self.paused = False
        self.closed = False
        self.active: list[Slot] = []
        self.waiting: list[Slot] = []  # attached, but starting only at the next keyframe
        # Frame consumers beside the slots (the recorder): called with every forwarded frame; they
        # must only queue (TrackWriter.write never blocks).
        self.taps: list[Callable[[Frame], None]] = []
        # Forwarded-packet space: video numbers are contiguous over what was forwarded (skipped
        # frames leave no gap a subscriber would NACK); audio keeps the publisher's gaps, which tell
        # the subscriber's NetEq what was lost. A worker's mirror takes the numbers main forwarded
        # (``renumber`` False), so NACKs and sender reports mean the same packets on both sides.
        self.renumber = renumber
        self.ring: list[tuple[int, bytearray, int] | None] = [None] * RING_SIZE
        self.next_seq = 0
        self.last_seq = -1
        self.last_ts = 0
        self.last_arrival = 0.0
        self.received_at = 0.0  # last packet from the source, forwarded or not (layer liveness)
        self.packets = 0  # forwarded packets, the basis of every slot's SR counters
        self.octets = 0
        self.frames = 0  # forwarded frames (a simulcast layer's frame rate: media/layergroup.py)
        # Simulcast (media/layergroup.py): the group of encodings this one belongs to, its place in
        # it (0 = lowest), its rid; a layer of a group of several rewrites VP8 picture ids per slot.
        self.group: LayerGroup | None = None
        self.layer = 0
        self.rid: str | None = None
        self.rewrite_vp8 = False
        self.vp8_ring: list[Any] = []  # beside ``ring``, for a layer of a group of several
        self.last_pic = -1  # original picture id / TL0PICIDX of the last forwarded packet
        self.last_tl0 = 0
        # VP8 temporal layers of a single-encoding video (media/temporal.py): measured when
        # ``temporal`` (a group of one), dropped per slot once more than one was seen.
        self.temporal = False
        self.tl_count = 0  # the highest TID seen + 1
        self.tl_octets = [0] * (temporal.MAX_TID + 1)  # payload bytes per TID
        self.tl_seen = [0.0] * (temporal.MAX_TID + 1)  # last frame of each TID

    def request_keyframe(self) -> None:
        """Ask the track's source for a keyframe (a waiting slot, a viewer's PLI)."""
        raise NotImplementedError

    def _keyframe_arrived(self) -> None:
        """A keyframe is being forwarded (the publication's policy forgets its pending request)."""

    def _forward(self, frame: Frame, now: float) -> None:
        if self.paused or self.closed:
            return
        self.frames += 1
        if frame.keyframe:
            self._keyframe_arrived()
            if self.waiting:
                self._activate_waiting(frame)
        for tap in self.taps:
            tap(frame)
        active = self.active
        octets = self.octets
        extension = abs_send_time_extension(now) if self.kind == "video" else None
        layer = None
        if self.temporal and self.mime == "video/vp8":
            layer = self._measure_temporal(frame, now)
        sent_to = active
        if self.mime == "video/vp8" and (self.rewrite_vp8 or self.tl_count > 1):
            sent_to = layergroup.forward_rewriting(self, frame, active, _pack_header, extension, layer)
        else:
            buffer = self._buffer
            for packet in frame.packets:
                buf, seq, ts = buffer(packet, extension)
                mark = 0x80 if packet.marker else 0
                for slot in active:
                    _pack_header(
                        buf,
                        1,
                        mark | slot.pt,
                        (seq + slot.seq_off) & 0xFFFF,
                        (ts + slot.ts_off) & 0xFFFFFFFF,
                        slot.ssrc,
                    )
                    try:
                        slot.sendto(slot.protect(buf), slot.addr)
                    except Exception as exc:
                        slot.fail(exc)
            stats.rtp_packets_sent += len(active) * len(frame.packets)
        # Bytes forwarded, once per frame rather than per packet or per subscriber: every slot gets
        # the same 12-byte header + payload (SRTP's tag not counted), and the slots a frame goes to do
        # not change during the frame, so the frame's bytes times its subscribers is exact, at no
        # cost per packet.
        header = 12 if extension is None else 20
        stats.rtp_sent_bytes += (self.octets - octets + header * len(frame.packets)) * len(sent_to)
        # A frame's last packet (a worker's mirror forwards packet by packet: the marker says it).
        if redundancy.slots and frame.packets and frame.packets[-1].marker:
            redundancy.copy_later(self, sent_to, self.last_seq)
        self.last_arrival = now
        if any(s.failed for s in active):
            self.active = [s for s in active if not s.failed]

    def _buffer(self, packet: Any, extension: bytes | None) -> tuple[bytearray, int, int]:
        """A forwarded packet's bytes (a fixed header the slots patch, the extension, the payload),
        its number in the forwarded space and its timestamp; kept in the ring and counted. Every
        forwarding loop starts each packet here (the per-slot loops differ)."""
        buf = bytearray(12)
        if extension is None:
            buf[0] = 0x80
        else:
            buf[0] = 0x90
            buf += extension
        payload = packet.payload
        buf += payload
        if self.renumber:
            seq = self.next_seq
            self.next_seq = seq + 1
        else:
            seq = packet.ext_seq
        ts = packet.timestamp
        self.ring[seq & _RING_MASK] = (seq, buf, ts)
        self.last_seq = seq
        self.last_ts = ts
        self.packets += 1
        self.octets += len(payload)
        return buf, seq, ts

    def _measure_temporal(self, frame: Frame, now: float) -> tuple[int, bool, bool, bool] | None:
        """The frame's temporal layer (``vp8.temporal_layer``), counted into that layer's bytes and
        liveness (media/layergroup.py turns them into layers to choose from). A worker's mirror
        forwards one packet at a time: there a "frame" is a packet, and only some start a frame."""
        layer = vp8.temporal_layer(frame.packets[0].payload) if frame.packets else None
        if layer is not None:
            tid = layer[0]
            self.tl_octets[tid] += sum(len(p.payload) for p in frame.packets)
            self.tl_seen[tid] = now
            if tid >= self.tl_count:
                self.tl_count = tid + 1
        return layer

    def _activate_waiting(self, frame: Frame) -> None:
        """Waiting slots start with this keyframe; one that cannot take this codec keeps waiting
        (and a keyframe is asked for again) without holding up the frame for anyone else."""
        first = frame.packets[0]
        first_seq = self.next_seq if self.renumber else first.ext_seq
        still_waiting = []
        for slot in self.waiting:
            if slot.held:
                continue  # its video stopped while it waited (media/viewers.py): it waits no more
            if slot.supports(self.mime):
                previous = slot.publication
                # A layer switch: the slot was forwarding another layer of the group until now.
                seen = None
                if previous is not None and previous is not self:
                    seen = layergroup.leave(slot, previous, self)
                slot.start(self, first_seq, frame.timestamp)
                if seen is not None:
                    layergroup.continue_pictures(slot, frame, seen)
                self.active.append(slot)
            else:
                still_waiting.append(slot)
        self.waiting = still_waiting
        if still_waiting:
            self.request_keyframe()

    # --- subscribers -------------------------------------------------------------------------

    def attach(self, slot: Slot) -> None:
        """Start forwarding to ``slot`` from the next keyframe (audio: the next packet)."""
        if slot in self.active or slot in self.waiting:
            return
        self.waiting.append(slot)
        if self.kind == "video":
            self.request_keyframe()

    def detach(self, slot: Slot) -> None:
        if slot in self.active:
            self.active.remove(slot)
        if slot in self.waiting:
            self.waiting.remove(slot)

    def set_paused(self, paused: bool) -> None:
        """A muted track is not forwarded; on unmute every subscriber restarts at a keyframe."""
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            for slot in self.active:
                slot.stop()
            self.waiting.extend(self.active)
            self.active = []
            if self.waiting:
                self.request_keyframe()

    def packet_for_retransmission(self, seq: int) -> tuple[bytearray, int] | None:
        """The forwarded packet ``seq`` (its header as last patched) and its source timestamp."""
        entry = self.ring[seq & _RING_MASK]
        if entry is not None and entry[0] == seq:
            return entry[1], entry[2]
        return None

    def close(self) -> list[Slot]:
        """Stop forwarding at once; returns the slots that were attached."""
        self.closed = True
        slots = self.active + self.waiting
        for slot in self.active:
            slot.stop()
        self.active = []
        self.waiting = []
        return slots


class Publication(Fanout):
    """A participant's audio or video track as the SFU sees it: the assembler's frames, the
    keyframe policy towards the publisher, the taps, and the forwarding of ``Fanout``."""

    def __init__(
        self,
        participant_id: str,
        kind: str,
        *,
        request_keyframe: Callable[[], None],
        loss_timeout: float = 0.15,
        pli_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        source: str = "camera",
    ) -> None:
        super().__init__(participant_id, kind, renumber=kind == "video")
        self.source = source  # "camera" or "screen": which of the participant's publishers
        self.key = next(_keys)  # names it on the forwarding link (media/link.py)
        # Media workers with viewers of this publication (media/workers.py): each gets every
        # forwarded packet once, as a datagram, whatever number of viewers it serves.
        self.links: list[LinkTarget] = []
        self.fmtp: dict[str, Any] = {}
        self.clock_rate = 48000 if kind == "audio" else 90000
        self.assembler: FrameAssembler | AudioPassthrough
        if kind == "audio":
            self.assembler = AudioPassthrough()
        else:
            self.assembler = FrameAssembler(
                lambda packets: frame_is_keyframe(self.mime, packets), loss_timeout=loss_timeout
            )
        self.keyframes = KeyframePolicy(pli_interval)
        self._send_pli = request_keyframe
        self._clock = clock
        self._pli_timer: asyncio.TimerHandle | None = None

    # --- input -------------------------------------------------------------------------------

    def on_packet(self, packet: Any) -> bool:
        """From aiortc's receive path (see aiortc_hooks.install_packet_sink). Never raises."""
        try:
            now = self.received_at = self._clock()
            frames, lost = self.assembler.add(packet, now)
            for frame in frames:
                self._forward(frame, now)
            if lost or (self.assembler.is_video and self.assembler.need_keyframe):
                self.request_keyframe()
        except Exception:  # the receive loop must survive a bug here
            log.exception("forwarding failed", extra={"participant": self.participant_id})
        return False  # PLIs go through our policy, not through aiortc's flag

    def _keyframe_arrived(self) -> None:
        self.keyframes.keyframe_received()

    def _forward(self, frame: Frame, now: float) -> None:
        first_seq = self.next_seq
        super()._forward(frame, now)
        if self.links and not (self.paused or self.closed):
            datagrams = encode_frame_packets(
                self.key,
                self.kind == "video",
                self.mime,
                frame.keyframe,
                frame.packets,
                first_seq if self.renumber else None,
            )
            for target in self.links:
                target.send(datagrams)

    def set_paused(self, paused: bool) -> None:
        if paused != self.paused:
            for target in self.links:
                target.set_paused(self.key, paused)
        super().set_paused(paused)

    # --- keyframes ---------------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Coalesced and rate-limited; repeated by a timer until a keyframe arrives."""
        if self.kind != "video" or self.closed:
            return
        if self.keyframes.request(self._clock()):
            self._send_pli()
        self._arm_pli_timer()

    def _arm_pli_timer(self) -> None:
        delay = self.keyframes.next_due(self._clock())
        if delay is None or (self._pli_timer is not None and not self._pli_timer.cancelled()):
            return
        self._pli_timer = asyncio.get_running_loop().call_later(max(delay, 0.05), self._on_pli_timer)

    def _on_pli_timer(self) -> None:
        self._pli_timer = None
        if self.closed:
            return
        if self.keyframes.due(self._clock()):
            self._send_pli()
        self._arm_pli_timer()

    def add_tap(self, tap: Callable[[Frame], None]) -> None:
        """Start feeding ``tap``; for video, from the next keyframe (asked for now)."""
        self.taps.append(tap)
        if self.kind == "video":
            self.request_keyframe()

    def remove_tap(self, tap: Callable[[Frame], None]) -> None:
        if tap in self.taps:
            self.taps.remove(tap)

    def close(self) -> list[Slot]:
        if self._pli_timer is not None:
            self._pli_timer.cancel()
            self._pli_timer = None
        return super().close()
