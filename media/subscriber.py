"""One viewer: a send-only peer connection with pre-allocated slots.

The connection is negotiated once, with ``n`` pairs of audio+video transceivers. A publication is
assigned to a pair; forwarding starts at its next keyframe and stops the moment it is released.
No renegotiation ever happens, so speakers can come and go without offer/answer glare.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiortc import RTCPeerConnection, RTCRtpSender
from aiortc.clock import current_ntp_time
from aiortc.rtcrtpparameters import RTCRtpSendParameters
from aiortc.rtp import RtcpSdesPacket, RtcpSenderInfo, RtcpSourceInfo, RtcpSrPacket

from media import aiortc_hooks as hooks
from media import (
    description_hooks,
    ice_hooks,
    layergroup,
    padding,
    redundancy,
    stats,
    temporal,
    transceiver_hooks,
    twcc,
)
from media.bwe import ViewerLayers
from media.codecs import SLOT_CODECS
from media.nackguard import ResendGuard, ResendLimits
from media.padding import PaddingBursts
from media.quality import RateMeter, SentReports
from media.reportticker import reports
from media.rtcpin import ViewerRtcp
from media.twcc import ProbeDelay

if TYPE_CHECKING:
    from media.publication import Fanout

log = logging.getLogger(__name__)



class Slot(hooks.SenderHandler):
    """One send-only transceiver: takes the RTP of whichever publication is attached to it."""

    __slots__ = (
        "addr",
        "clock_rate",
        "cname",
        "cumulative_lost",
        "failed",
        "fraction_lost",
        "held",
        "index",
        "jitter",
        "kind",
        "last_out_ts",
        "last_sent_at",
        "meter",
        "mid",
        "negotiated",
        "next_seq",
        "octet_base",
        "packet_base",
        "pic_off",
        "protect",
        "pt",
        "pts",
        "publication",
        "redundant",
        "resends",
        "rr_at",
        "rtt",
        "rtx_pts",
        "rtx_seq",
        "rtx_ssrc",
        "sender",
        "sendto",
        "sent_reports",
        "seq_off",
        "ssrc",
        "subscriber",
        "tl0_off",
        "tl_cur",
        "tl_gap",
        "tl_marks",
        "tl_skipped",
        "tl_target",
        "ts_off",
    )

    def __init__(
        self,
        subscriber: Subscriber,
        index: int,
        kind: str,
        sender: RTCRtpSender,
        resend_limits: ResendLimits | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.index = index
        self.kind = kind
        self.sender = sender
        self.ssrc, self.rtx_ssrc = hooks.sender_ssrcs(sender)
        self.mid: str | None = None
        self.cname = ""
        self.pts: dict[str, int] = {}  # negotiated payload type per codec ("video/vp8" -> 96)
        self.rtx_pts: dict[int, int] = {}  # media payload type -> its RTX payload type
        self.pt = 0
        self.publication: Fanout | None = None
        self.failed = False
        self.protect: Any = None
        self.sendto: Any = None
        self.addr: Any = None
        # Outgoing sequence and timestamp spaces continue across publications.
        self.next_seq = random.getrandbits(16)
        self.seq_off = 0
        self.ts_off = 0
        # VP8 picture id / TL0PICIDX offsets, continued across simulcast layers (media/layergroup.py)
        self.pic_off = 0
        self.tl0_off = 0
        # VP8 temporal layers forwarded (media/temporal.py): now, wanted, and the offsets' history
        self.tl_cur = self.tl_target = temporal.TL_ALL
        self.tl_gap = False
        self.tl_marks: list[tuple[int, int, int]] = []
        self.tl_skipped = 0  # bytes (RTP headers and payloads) of the frames not sent to this slot
        self.last_out_ts = random.getrandbits(32)
        self.last_sent_at: float | None = None
        self.clock_rate = 48000 if kind == "audio" else 90000
        self.packet_base = 0
        self.octet_base = 0
        self.rtx_seq = random.getrandbits(16)
        self.fraction_lost = 0  # from the subscriber's last receiver report (x/256)
        self.jitter = 0
        self.redundant = False  # copies of each frame's last packet (media/redundancy.py)
        self.held = False  # video the viewer does not want (layer preference "audio"): not forwarded
        # Connection quality (media/quality.py, media/figures.py): the viewer's last report block.
        self.cumulative_lost = 0
        self.rr_at: float | None = None  # monotonic
        self.rtt: float | None = None  # seconds, from the last block naming one of our SRs
        self.sent_reports = SentReports()
        self.meter = RateMeter()
        self.negotiated: tuple[list[str], list[str]] = ([], [])  # header extension URIs, RTCP feedback
        self.resends = ResendGuard(resend_limits or ResendLimits())
        hooks.take_over_sender(sender, self)

    # --- negotiation (SenderHandler) ---------------------------------------------------------

    def on_send_parameters(self, parameters: RTCRtpSendParameters) -> None:
        self.cname = parameters.rtcp.cname or ""
        self.mid = parameters.muxId
        feedback = {
            f"{fb.type} {fb.parameter or ''}".strip() for c in parameters.codecs for fb in c.rtcpFeedback
        }
        self.negotiated = ([e.uri for e in parameters.headerExtensions], sorted(feedback))
        for codec in parameters.codecs:
            name = codec.mimeType.lower()
            if codec.payloadType is None:
                continue
            if name.endswith("/rtx"):
                apt = codec.parameters.get("apt")
                if isinstance(apt, int):
                    self.rtx_pts[apt] = codec.payloadType
            elif name == "video/h264":
                # Only packetization-mode 1 carries the FU-A packets browsers send.
                if str(codec.parameters.get("packetization-mode", "0")) == "1":
                    self.pts.setdefault(name, codec.payloadType)
            else:
                self.pts.setdefault(name, codec.payloadType)

    def on_keyframe_request(self) -> None:
        """The subscriber sent PLI or FIR: forward it upstream through the publication's policy."""
        stats.keyframe_requests_downstream += 1
        if self.publication is not None:
            self.publication.request_keyframe()

    def retransmit(self, sequence_number: int) -> None:
        """NACK from the subscriber: resend from the publication's ring, as RTX when negotiated."""
        pub = self.publication
        if pub is None or self.protect is None or self.failed:
            return
        self.subscriber.layers.on_nack(time.monotonic())  # a loss: a padding probe now has failed
        # Map the 16-bit outgoing number back into the publication's packet space (temporal layers
        # dropped for this viewer moved its offsets: each packet's own).
        mapped = temporal.source(self, pub.last_seq, sequence_number)
        if mapped is None:
            return
        seq, pic_off = mapped
        found = pub.packet_for_retransmission(seq)
        if found is None:
            return
        if not self.resends.allow(seq, time.monotonic(), pub.packets):
            stats.retransmissions_suppressed += 1
            return
        stats.retransmissions += 1
        self._resend(pub, seq, sequence_number, pic_off, found)

    def send_copy(self, pub: Fanout, seq: int, sequence_number: int, pic_off: int) -> None:
        """A copy of the packet ``seq`` of ``pub`` sent as ``sequence_number`` (media/redundancy.py):
        nothing if the slot has moved to another publication since."""
        if pub is not self.publication or self.protect is None or self.failed or not self.redundant:
            return
        found = pub.packet_for_retransmission(seq)
        if found is None:
            return
        stats.redundant_copies += 1
        self.subscriber.padding_octets += self._resend(pub, seq, sequence_number, pic_off, found)

    def _resend(
        self, pub: Fanout, seq: int, sequence_number: int, pic_off: int, found: tuple[bytearray, int]
    ) -> int:
        """Send the ring's packet ``seq`` again as ``sequence_number`` (RTX when negotiated); the
        bytes sent."""
        buf, source_ts = found
        if pub.vp8_ring:
            layergroup.patch_retransmission(self, pub, seq, buf, pic_off)
        ts = (source_ts + self.ts_off) & 0xFFFFFFFF
        marker = buf[1] & 0x80
        rtx_pt = self.rtx_pts.get(self.pt)
        if rtx_pt is None:
            struct.pack_into("!BHII", buf, 1, marker | self.pt, sequence_number, ts, self.ssrc)
            data = bytes(buf)
        else:
            # RFC 4588 §4: RTX payload = original sequence number + original payload.
            header = bytearray(14)
            padding.RTX_HEADER.pack_into(header, 0, 0x80, marker | rtx_pt, self.rtx_seq, ts, self.rtx_ssrc)
            struct.pack_into("!H", header, 12, sequence_number)
            self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
            start = 12 + (4 + 4 * ((buf[14] << 8) | buf[15]) if buf[0] & 0x10 else 0)  # after extensions
            data = bytes(header) + bytes(buf[start:])
        try:
            self.sendto(self.protect(data), self.addr)
        except Exception as exc:
            self.fail(exc)
            return 0
        return len(data)

    def on_receiver_report(
        self, fraction_lost: int, jitter: int, lost: int = 0, lsr: int = 0, dlsr: int = 0
    ) -> None:
        self.fraction_lost = fraction_lost
        self.jitter = jitter
        self.cumulative_lost = lost
        self.rr_at = now = time.monotonic()
        rtt = self.sent_reports.rtt(lsr, dlsr, now)
        if rtt is not None:
            self.rtt = rtt
        if self.kind == "video" and self.publication is not None and not self.held:
            self.subscriber.on_loss(fraction_lost, now)

    def on_remb(self, bitrate_bps: int, ssrcs: list[int]) -> None:
        self.subscriber.on_remb(bitrate_bps)

    def sender_report(self, ntp: int, now: float) -> RtcpSrPacket | None:
        """RFC 3550 §6.4.1 SR: our timestamp space mapped to wall-clock time ``ntp``."""
        pub = self.publication
        if pub is None or self.last_sent_at is None or self.failed or pub.paused or self.held:
            return None
        elapsed = max(0.0, now - pub.last_arrival)
        rtp_ts = (pub.last_ts + self.ts_off + int(elapsed * self.clock_rate)) & 0xFFFFFFFF
        self.sent_reports.sent(ntp, now)  # its LSR in the viewer's next report gives the round trip
        return RtcpSrPacket(
            ssrc=self.ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp,
                rtp_timestamp=rtp_ts,
                packet_count=(pub.packets - self.packet_base) & 0xFFFFFFFF,
                octet_count=(pub.octets - self.octet_base) & 0xFFFFFFFF,
            ),
        )

    # --- forwarding state --------------------------------------------------------------------

    def supports(self, mime: str) -> bool:
        return mime in self.pts

    def can_pad(self) -> bool:
        """Padding can go on this slot's RTX stream (RTX negotiated for its codec, a path)."""
        ready = self.protect is not None and not self.failed
        return ready and bool(self.rtx_ssrc) and self.pt in self.rtx_pts

    def send_padding(self, count: int, now: float) -> int:
        """``count`` padding-only packets on the RTX stream (media/padding.py); the bytes sent."""
        return padding.send_padding(self, count, now)

    def start(self, pub: Fanout, first_seq: int, first_ts: int) -> None:
        """Called by the publication when forwarding begins (at a keyframe for video)."""
        self.pt = self.pts[pub.mime]
        self.seq_off = self.next_seq - first_seq
        now = time.monotonic()
        # Continue our timestamp line: whatever played before, the new media starts "now".
        gap = 0 if self.last_sent_at is None else int((now - self.last_sent_at) * self.clock_rate)
        self.ts_off = (self.last_out_ts + max(gap, 1) - first_ts) & 0xFFFFFFFF
        self.packet_base = pub.packets
        self.octet_base = pub.octets
        self.resends.restart(pub.packets)
        temporal.reset(self)
        self.last_sent_at = now

    def stop(self) -> None:
        """Forwarding ends: remember where our sequence and timestamp lines are."""
        pub = self.publication
        if pub is not None and self.last_sent_at is not None:
            self.next_seq = (pub.last_seq + self.seq_off + 1) & 0xFFFF
            self.last_out_ts = (pub.last_ts + self.ts_off) & 0xFFFFFFFF
            self.last_sent_at = time.monotonic()

    def fail(self, exc: BaseException) -> None:
        """Stop sending to this slot; logged once (the hot path must not log per packet)."""
        if not self.failed:
            log.warning(
                "sending to a subscriber failed",
                exc_info=exc,
                extra={"participant": self.subscriber.participant_id, "mid": self.mid},
            )
        self.failed = True
        stats.send_errors += 1

    def connect(self, path: hooks.UdpPath) -> None:
        self.protect = path.protect
        self.sendto = path.sendto
        self.addr = path.addr
        self.failed = False


@dataclass(slots=True)
class SlotPair:
    index: int
    stream: str
    audio: Slot
    video: Slot
    participant_id: str | None = None

    def slot(self, kind: str) -> Slot:
        return self.audio if kind == "audio" else self.video


class Subscriber:
    """A participant's receiving connection and its slot pairs."""

    def __init__(
        self,
        participant_id: str,
        pc: RTCPeerConnection,
        n_slots: int,
        resend_limits: ResendLimits | None = None,
    ) -> None:
        self.participant_id = participant_id
        self.pc = pc
        self.pairs: list[SlotPair] = []
        self.path: hooks.UdpPath | None = None
        self.closed = False
        self._dtls: Any = None
        # The viewer's bandwidth estimate, its layer preferences and decisions (media/bwe.py).
        self.layers = ViewerLayers()
        self._sent_marks: dict[int, tuple[Any, int]] = {}  # slot SSRC -> (publication, its octets)
        self._sent_at: float | None = None
        # Padding probes (media/padding.py): the bursts while a probe runs, the bytes sent.
        self.padding = PaddingBursts(self)
        self.padding_octets = 0
        self._padding_mark = 0
        # The probes' padding delay (media/twcc.py), once the viewer's answer took the extension.
        self.probe_delay: ProbeDelay | None = None

        def add_pairs() -> None:
            for i in range(n_slots):
                stream = f"slot-{i}"
                slots = {}
                for kind in ("audio", "video"):
                    transceiver = pc.addTransceiver(kind, direction="sendonly")
                    transceiver.setCodecPreferences(SLOT_CODECS[kind])
                    hooks.set_stream_id(transceiver.sender, stream)
                    slots[kind] = Slot(self, i, kind, transceiver.sender, resend_limits)
                self.pairs.append(SlotPair(i, stream, slots["audio"], slots["video"]))

        # Send-only, senders taken over by the slots: aiortc's receivers would never receive and its
        # senders never run (media/transceiver_hooks.py); lean ones save ≈ 0.3 ms and 95 KB per
        # video slot, and the senders' unused events and tables.
        transceiver_hooks.with_lean_transceivers(add_pairs)
        ice_hooks.use_mux(pc)  # its host candidate is the process's shared socket (when installed)

    @property
    def connected(self) -> bool:
        return self.path is not None

    def pair_of(self, participant_id: str) -> SlotPair | None:
        return next((p for p in self.pairs if p.participant_id == participant_id), None)

    def free_pair(self) -> SlotPair | None:
        return next((p for p in self.pairs if p.participant_id is None), None)

    def on_connected(self, require_all: bool = True) -> bool:
        """True once media can flow: the UDP path is up and every slot knows its payload types.

        aiortc reports "connected" as soon as DTLS is up, then configures the senders one by one
        (rtcpeerconnection.py 1077-1093, awaiting in between): a slot started before its
        ``send()`` would not know which payload type to write.
        """
        if self.path is not None:
            return True
        sender = self.pairs[0].audio.sender if self.pairs else None
        if sender is None or self.closed:
            return False
        path = ice_hooks.udp_path(sender.transport)
        slots = [s for pair in self.pairs for s in (pair.audio, pair.video)]
        if path is None or (require_all and not all(s.pts for s in slots)):
            return False
        self.path = path
        for slot in slots:
            slot.connect(path)
        # On the shared socket, the viewer's RTCP comes straight to its slots (media/rtcpin.py).
        rtcp = ViewerRtcp({s.ssrc: s for s in slots}, self.on_transport_feedback)
        ice_hooks.take_rtcp(sender.transport, rtcp)
        self._dtls = sender.transport
        reports.add(self)
        # Negotiated once for good: aiortc's parsed offer and answer are ≈ 128 KB nobody reads again.
        description_hooks.forget_descriptions(self.pc)
        return True

    # --- bandwidth estimate (media/bwe.py) ----------------------------------------------------

    def on_remb(self, bitrate_bps: int, now: float | None = None) -> None:
        """The viewer's REMB: what it sent us lately first (a REMB at Chromium's ceiling over it is
        not a cap, media/bwe.py)."""
        stats.remb_received += 1
        now = time.monotonic() if now is None else now
        estimate = self.layers.bandwidth.estimate
        sent = self._sent_bps(now)
        if sent is not None:
            estimate.on_sent(*sent)
        estimate.on_remb(bitrate_bps, now)
        self._copies(estimate.copies(now))

    def on_transport_feedback(self, data: bytes, start: int, end: int) -> None:
        """Transport feedback on a probe's padding: a probe that fills the link's queue ends now,
        before anything is lost (media/twcc.py)."""
        delay = self.probe_delay
        if delay is None or self.layers.probe is None:
            return
        stats.transport_feedback += 1
        if delay.congested(twcc.parse_feedback(data, start, end)):
            stats.probes_ended_by_delay += 1
            self.layers.on_delay(time.monotonic())

    def on_loss(self, fraction_lost: int, now: float | None = None) -> None:
        """A video slot's receiver report: ``fraction_lost`` in 1/256."""
        now = time.monotonic() if now is None else now
        estimate = self.layers.bandwidth.estimate
        estimate.on_loss(fraction_lost / 256, now)
        self._copies(estimate.copies(now))

    def _copies(self, on: bool) -> None:
        for pair in self.pairs:
            redundancy.set_redundant(pair.video, on and not self.closed)

    def _sent_bps(self, now: float) -> tuple[float, float] | None:
        """Bits per second forwarded to this viewer since the last call (RTP headers and payloads),
        all of it and the media alone (no padding, no copies); None for the first call and within
        0.1 s of the last (aiortc hands a REMB to every slot it names: the repeats measure nothing)."""
        if self._sent_at is not None and now - self._sent_at < 0.1:
            return None
        marks: dict[int, tuple[Any, int]] = {}
        extra = self.padding_octets - self._padding_mark
        self._padding_mark = self.padding_octets
        sent = 0
        for pair in self.pairs:
            for slot in (pair.audio, pair.video):
                pub = slot.publication
                if pub is None or slot.held or slot.last_sent_at is None:
                    continue
                # (+ 8 of abs-send-time per video packet: not counted; temporal layers dropped: not sent)
                octets = pub.octets + 12 * pub.packets - slot.tl_skipped
                before = self._sent_marks.get(slot.ssrc)
                if before is not None and before[0] is pub:
                    sent += octets - before[1]
                marks[slot.ssrc] = (pub, octets)
        self._sent_marks = marks
        elapsed = None if self._sent_at is None else now - self._sent_at
        self._sent_at = now
        return None if elapsed is None else (8 * (sent + extra) / elapsed, 8 * sent / elapsed)

    def choose(
        self,
        participant_id: str,
        layer_bitrates_bps: list[float],
        live: list[bool],
        current: int | None,
        now: float,
    ) -> int | None:
        """The layer of ``participant_id``'s video this viewer should get (lowest first), or None:
        audio only. Its budget is shared by the speakers whose video it receives, audio first."""
        videos = [p.video.publication for p in self.pairs if p.video.publication is not None]
        video = sum(1 for pub in videos if self.layers.wants_video(pub.participant_id))
        audio = sum(1 for p in self.pairs if p.audio.publication is not None)
        slot = self.video_slot(participant_id)
        probes, probes_ok = self.layers.probes, self.layers.probes_ok
        target = self.layers.choose(
            participant_id,
            layer_bitrates_bps,
            live,
            current,
            now,
            audio_tracks=audio,
            video_tracks=max(video, 1),
            can_probe=slot is not None and slot.can_pad(),
        )
        stats.probes_started += self.layers.probes - probes
        stats.probes_succeeded += self.layers.probes_ok - probes_ok
        self.pad_while_probing(now)
        return target

    def pad_while_probing(self, now: float) -> None:
        """Start the padding bursts if a probe runs (they stop by themselves when it ends)."""
        self.padding.start(now)

    def video_slot(self, participant_id: str) -> Slot | None:
        """The video slot that receives ``participant_id``'s video, if any."""
        for pair in self.pairs:
            pub = pair.video.publication
            if pub is not None and pub.participant_id == participant_id:
                return pair.video
        return None

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """The viewer's estimate and preferences (for connection-quality reports)."""
        now = time.monotonic() if now is None else now
        estimate = self.layers.bandwidth.estimate
        return {
            "estimate_bps": round(estimate.value(now)),
            "remb_bps": None if estimate.remb_bps is None else round(estimate.remb_bps),
            "remb_binding": estimate.remb_binding(now),
            "sent_bps": None if estimate.sent_bps is None else round(estimate.sent_bps),
            "loss": estimate.loss,
            "probing": self.layers.probe is not None,
            "probes": self.layers.probes,
            "probes_succeeded": self.layers.probes_ok,
            "preference": str(self.layers.preference),
            "preferences": {k: str(v) for k, v in self.layers.preferences.items()},
        }

    def sender_reports(self, ntp: int, now: float) -> list[Any]:
        """Sender reports of every forwarding slot and their SDES CNAMEs: one compound RTCP packet
        (RFC 3550 §6.1), nothing when no slot forwards."""
        slots = [s for pair in self.pairs for s in (pair.audio, pair.video)]
        srs = [r for s in slots if (r := s.sender_report(ntp, now)) is not None]
        if not srs:
            return []
        cname = next((s.cname for s in slots if s.cname), "")
        chunks = [RtcpSourceInfo(ssrc=r.ssrc, items=[(1, cname.encode())]) for r in srs]
        return [*srs, RtcpSdesPacket(chunks=chunks)]

    async def send_reports(self) -> None:
        packets = self.sender_reports(current_ntp_time(), time.monotonic())
        if packets and self._dtls is not None:
            await hooks.send_rtcp(self._dtls, packets)

    def close(self) -> None:
        # The report ticker drops a closed subscriber when its turn comes.
        self.closed = True
        self._copies(False)
        self.padding.cancel()
