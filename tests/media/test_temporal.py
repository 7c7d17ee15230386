"""VP8 temporal layers (media/temporal.py, media/layergroup.py): an L1T3 publisher's synthetic packets
through a single Publication into real subscriber Slots. A viewer on a lower temporal layer gets only
the frames of that layer and below, with gap-free sequence numbers and picture ids and a consistent
TL0PICIDX; it moves down at any frame and up only at a keyframe or a sync frame of the next layer,
never asking for a keyframe; its NACKs are answered with the packet and picture id it was sent."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCCertificate, RTCDtlsTransport, RTCPeerConnection, RTCRtpSender
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtp import RtpPacket

from media import aiortc_hooks as hooks
from media import figures, link, temporal, vp8
from media.bwe import ViewerLayers
from media.layerchoice import LayerState, choose
from media.layergroup import LayerGroup
from media.publication import Publication
from media.subscriber import Slot, Subscriber
from tests.media.test_layers import Sink
from tests.media.test_vp8 import DELTA, KEY, descriptor

PATTERN = (0, 2, 1, 2)  # L1T3's temporal layer of each frame, as libvpx encodes it for Chromium


def test_the_temporal_layer_of_a_frame_is_read_from_its_first_packet() -> None:
    assert vp8.temporal_layer(descriptor(pid=9, tl0=3, tid=2, y=True) + DELTA) == (2, True, True, True)
    assert vp8.temporal_layer(descriptor(tl0=3, tid=1) + DELTA) == (1, False, False, True)
    later = descriptor(start=False, pid=9, tl0=3, tid=1) + DELTA  # a frame's second packet
    assert vp8.temporal_layer(later) == (1, False, True, False)
    assert vp8.temporal_layer(descriptor(pid=9, tl0=3) + DELTA) is None  # no T bit: no layers
    assert vp8.temporal_layer(descriptor(pid=9, keyidx=4) + DELTA) is None  # K without T
    assert vp8.temporal_layer(descriptor(pid=9, tl0=3, tid=1)[:-1]) is None  # truncated
    assert vp8.temporal_layer(b"") is None


@dataclass
class Sent:
    seq: int
    ts: int
    marker: bool
    pid: int
    tl0: int
    tid: int  # -1: no T bit
    sync: bool
    keyframe: bool
    frame: int  # the source frame's number (a mark in the payload)


@dataclass
class Viewer:
    slot: Slot
    sent: list[Sent] = field(default_factory=list)

    def sendto(self, data: bytes, addr: Any) -> None:
        start = 12 + (4 + 4 * struct.unpack_from("!H", data, 14)[0] if data[0] & 0x10 else 0)
        d = vp8.parse(data[start:])
        assert d is not None and d.picture_id is not None and d.tl0picidx is not None
        self.sent.append(
            Sent(
                seq=struct.unpack_from("!H", data, 2)[0],
                ts=struct.unpack_from("!I", data, 4)[0],
                marker=bool(data[1] & 0x80),
                pid=d.picture_id,
                tl0=d.tl0picidx,
                tid=-1 if d.tid is None else d.tid,
                sync=d.layer_sync,
                keyframe=vp8.is_keyframe(data[start:]),
                frame=struct.unpack_from("!H", data, start + d.size + len(KEY))[0],
            )
        )

    def frames(self, since: int = 0) -> list[Sent]:
        """The first packet of each frame sent since ``since``."""
        return [s for i, s in enumerate(self.sent[since:], since) if i == 0 or self.sent[i - 1].marker]


class FakeSubscriber:
    participant_id = "viewer"
    layers = ViewerLayers()  # a NACK tells its padding probe (media/bwe.py)


class Source:
    """An L1T3 encoder's RTP: TIDs 0, 2, 1, 2, ...; the first TID 2 and TID 1 frames of every other
    cycle carry Y (they reference the base layer only), the others do not."""

    def __init__(self, feed: Any, seq: int = 65530, ts: int = 4_294_960_000, pid: int = 0x7FFD) -> None:
        self.feed = feed
        self.seq, self.ts, self.pid, self.tl0 = seq, ts, pid, 254
        self.n = 0  # frames in the pattern since the last keyframe
        self.count = 0  # frames sent

    def next_tid(self) -> int:
        return PATTERN[self.n % 4]

    def frame(self, keyframe: bool = False, packets: int = 2) -> None:
        if self.count == 0:  # the publication's assembler syncs on a first marker, then forwards
            self.count = 1
            self._send(0, False, False, 1)
        if keyframe:
            self.n = 0
        tid = self.next_tid()
        sync = tid > 0 and self.n % 8 in (1, 2)
        self.n += 1
        self.ts = (self.ts + 3000) & 0xFFFFFFFF
        self.pid = (self.pid + 1) & 0x7FFF
        if tid == 0:
            self.tl0 = (self.tl0 + 1) & 0xFF
        self._send(tid, sync, keyframe, packets)

    def _send(self, tid: int, sync: bool, keyframe: bool, packets: int) -> None:
        self.count += 1
        for i in range(packets):
            body = (KEY if keyframe else DELTA.ljust(len(KEY), b"\0")) + struct.pack("!H", self.count)
            payload = descriptor(start=i == 0, pid=self.pid, tl0=self.tl0, tid=tid, y=sync) + body
            packet = RtpPacket(
                payload_type=96,
                marker=int(i == packets - 1),
                sequence_number=self.seq,
                timestamp=self.ts,
                ssrc=1000,
                payload=payload,
            )
            packet._data = body if i == 0 else b"\x00"  # type: ignore[attr-defined]  # depayloaded
            self.seq = (self.seq + 1) & 0xFFFF
            self.feed(packet)


class Rig:
    def __init__(self) -> None:
        self.now = 1000.0
        self.plis = 0
        self.pub = Publication("speaker", "video", request_keyframe=self._pli, clock=lambda: self.now)
        self.pub.mime = "video/vp8"
        self.group = LayerGroup("speaker", [self.pub])
        self.source = Source(self.pub.on_packet)
        ice = RTCIceTransport(RTCIceGatherer(iceServers=[]))
        self.dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])

    def _pli(self) -> None:
        self.plis += 1

    def viewer(self) -> Viewer:
        slot = Slot(FakeSubscriber(), 0, "video", RTCRtpSender("video", self.dtls))  # type: ignore[arg-type]
        slot.pts = {"video/vp8": 96}
        viewer = Viewer(slot)
        slot.connect(hooks.UdpPath(bytes, viewer.sendto, ("192.0.2.1", 9)))
        slot.publication = self.pub
        self.pub.attach(slot)
        return viewer

    def frames(self, n: int, keyframe: bool = False) -> None:
        for i in range(n):
            self.now += 1 / 30
            self.source.frame(keyframe=keyframe and i == 0)

    def until(self, tid: int, sync: bool | None = None) -> None:
        """Send frames until the next one is of ``tid`` (and has Y, or not)."""
        for _ in range(16):
            n = self.source.n
            next_sync = tid > 0 and n % 8 in (1, 2)
            if self.source.next_tid() == tid and (sync is None or sync == next_sync):
                return
            self.frames(1)
        raise AssertionError("pattern never reached")

    def cap(self, viewer: Viewer, cap: int | None) -> None:
        self.group.state(viewer.slot).cap = cap
        self.group.evaluate(self.now)


def assert_continuous(sent: list[Sent]) -> None:
    """Gap-free sequence numbers; per frame a later timestamp, the next picture id, and TL0PICIDX
    one up exactly at each TID 0 frame."""
    for a, b in itertools.pairwise(sent):
        assert b.seq == (a.seq + 1) & 0xFFFF, (a, b)
        if a.marker:
            assert 0 < (b.ts - a.ts) & 0xFFFFFFFF < 90000, (a, b)
            assert b.pid == (a.pid + 1) & 0x7FFF, (a, b)
            assert (b.tl0 - a.tl0) & 0xFF == (1 if b.tid == 0 else 0), (a, b)
        else:
            assert (b.ts, b.pid, b.tl0, b.frame) == (a.ts, a.pid, a.tl0, a.frame), (a, b)


async def test_a_single_encoding_with_temporal_layers_is_three_layers_to_choose_from() -> None:
    rig = Rig()
    assert rig.group.count == 1 and not rig.group.layered  # nothing seen yet
    v = rig.viewer()
    rig.frames(1, keyframe=True)
    rig.group.sample(rig.now)
    rig.frames(60)
    rig.group.sample(rig.now)
    assert rig.group.count == 3 and rig.group.layered
    assert [rig.group.live(i, rig.now) for i in range(3)] == [True, True, True]
    rates = [rig.group.bitrate(i) for i in range(3)]
    # Each layer is its frames and those below: a quarter, a half, all of them.
    assert 0 < rates[0] < rates[1] < rates[2], rates
    assert abs(rates[0] / rates[2] - 0.25) < 0.05 and abs(rates[1] / rates[2] - 0.5) < 0.05, rates
    assert choose(LayerState(), rig.group, rig.now) == 2
    assert rig.group.current(v.slot) == 2

    plis = rig.plis
    rig.cap(v, 0)
    assert v.slot.tl_target == 0 and rig.group.current(v.slot) == 0 and rig.group.switches == 1
    assert rig.plis == plis, "a temporal layer needs no keyframe"
    # A layer the publisher stopped sending is not live (e.g. its frame rate dropped).
    rig.now += 2
    assert not any(rig.group.live(i, rig.now) for i in range(3))


async def test_a_viewer_on_the_base_layer_gets_every_fourth_frame_numbered_without_gaps() -> None:
    rig = Rig()
    full, low, half = rig.viewer(), rig.viewer(), rig.viewer()
    rig.frames(1, keyframe=True)
    rig.frames(8)
    rig.cap(low, 0)
    rig.cap(half, 1)
    n_low, n_half, n_full = len(low.sent), len(half.sent), len(full.sent)
    rig.frames(40)
    assert {s.tid for s in low.sent[n_low:]} == {0}
    assert {s.tid for s in half.sent[n_half:]} == {0, 1}
    assert {s.tid for s in full.sent[n_full:]} == {0, 1, 2}
    assert len(low.frames(n_low)) == 10 and len(half.frames(n_half)) == 20
    assert len(full.frames(n_full)) == 40
    for v in (full, low, half):
        assert v.sent[0].keyframe
        assert_continuous(v.sent)
        # Its sender reports count what it was sent, not what the publication forwarded.
        report = v.slot.sender_report(0, rig.now)
        assert report is not None and report.sender_info.packet_count == len(v.sent)
    assert full.slot.tl_skipped == 0 < half.slot.tl_skipped < low.slot.tl_skipped
    assert rig.plis == 1  # the viewers' first keyframe, nothing more


async def test_up_only_at_a_sync_frame_of_the_next_layer_down_at_once() -> None:
    rig = Rig()
    v = rig.viewer()
    rig.frames(1, keyframe=True)
    rig.frames(3)
    rig.cap(v, 0)
    rig.frames(9)
    plis = rig.plis
    # Up to every layer: the TID 1 frames without Y are not decodable yet; the first TID 1 with Y is.
    rig.until(1, sync=False)
    rig.cap(v, None)
    assert v.slot.tl_target == temporal.TL_ALL
    n = len(v.sent)
    rig.until(1, sync=True)
    assert {s.tid for s in v.sent[n:]} == {0}, "up before a sync frame"
    rig.frames(1)
    assert v.sent[-1].tid == 1 and v.sent[-1].sync and v.slot.tl_cur == 1
    # TID 2 waits for its own sync frame (a TID 2 frame may reference the TID 1 frames it missed).
    n = len(v.sent)
    rig.until(2, sync=True)
    assert {s.tid for s in v.sent[n:]} <= {0, 1}
    rig.frames(1)
    assert v.sent[-1].tid == 2 and v.sent[-1].sync and v.slot.tl_cur == 2
    n = len(v.sent)
    rig.frames(8)
    assert len(v.frames(n)) == 8
    # Down at the next frame, whatever it is.
    rig.until(2)
    rig.cap(v, 0)
    n = len(v.sent)
    rig.frames(8)
    assert {s.tid for s in v.sent[n:]} == {0} and len(v.frames(n)) == 2
    assert rig.plis == plis
    assert_continuous(v.sent)


async def test_a_keyframe_takes_a_viewer_up_to_its_layer_at_once() -> None:
    rig = Rig()
    v = rig.viewer()
    rig.frames(1, keyframe=True)
    rig.cap(v, 0)
    rig.frames(6)
    rig.until(2, sync=False)
    rig.cap(v, None)
    n = len(v.sent)
    rig.frames(1, keyframe=True)
    rig.frames(3)
    assert [s.tid for s in v.frames(n)] == [0, 2, 1, 2] and v.sent[n].keyframe
    assert_continuous(v.sent)


async def test_a_nack_is_answered_with_the_packet_and_picture_id_the_viewer_was_sent() -> None:
    rig = Rig()
    low, full = rig.viewer(), rig.viewer()
    rig.frames(1, keyframe=True)
    rig.frames(3)
    rig.cap(low, 0)
    rig.frames(12)
    rig.cap(low, None)
    rig.frames(16)
    low.slot.rtx_pts = {}
    sent = list(low.sent)
    # Before any drop, between drops, after the way up; each answered as first sent.
    for original in (sent[1], sent[len(sent) // 2], sent[-3], sent[-1]):
        low.slot.retransmit(original.seq)
        again = low.sent[-1]
        assert (again.seq, again.pid, again.tl0, again.frame, again.ts) == (
            original.seq,
            original.pid,
            original.tl0,
            original.frame,
            original.ts,
        )
    assert len(low.sent) == len(sent) + 4
    low.slot.retransmit((sent[-1].seq + 1) & 0xFFFF)  # never sent
    assert len(low.sent) == len(sent) + 4
    # The other viewer's numbering is its own.
    full.slot.rtx_pts = {}
    original = full.sent[-5]
    full.slot.retransmit(original.seq)
    assert (full.sent[-1].seq, full.sent[-1].pid) == (original.seq, original.pid)


def test_offset_marks_map_back_and_stay_bounded() -> None:
    class State:
        seq_off = 100
        pic_off = 0
        packet_base = octet_base = tl_skipped = 0
        tl_marks: list[tuple[int, int, int]] = []
        tl_gap = False

    slot: Any = State()
    slot.tl_marks = []
    assert temporal.source(slot, 50, 150) == (50, 0)  # never dropped: one offset
    assert temporal.source(slot, 50, 151) is None  # not sent yet
    temporal.drop(slot, 51, 3, 3000, True)  # source packets 51-53 dropped
    assert (slot.seq_off, slot.pic_off, slot.tl_gap) == (97, vp8.PICTURE_ID_MOD - 1, True)
    assert (slot.packet_base, slot.octet_base, slot.tl_skipped) == (3, 3000, 3036)
    assert temporal.source(slot, 53, 150) == (50, 0)
    assert temporal.source(slot, 53, 151) is None  # 51 was never sent
    temporal.resume(slot, 54)
    assert temporal.source(slot, 54, 151) == (54, vp8.PICTURE_ID_MOD - 1)
    assert temporal.source(slot, 54, 150) == (50, 0)
    for i in range(temporal.MAX_MARKS + 5):
        temporal.drop(slot, 59 + 2 * i, 1, 1000, False)
        temporal.resume(slot, 60 + 2 * i)
    assert len(slot.tl_marks) == temporal.MAX_MARKS
    temporal.reset(slot)
    assert slot.tl_marks == [] and not slot.tl_gap


# --- in a media worker -------------------------------------------------------------------------


async def test_a_worker_groups_a_single_encoding_and_its_low_viewer_gets_the_base_layer() -> None:
    from media.peer import MediaConfig
    from media.viewers import LocalViewers
    from media.worker import Worker
    from media.workers import WorkerLink

    # Main names the single encoding as the group's one layer.
    class Socket:
        def sendto(self, data: bytes, addr: Any) -> None: ...

    main_sink = Sink()
    hello = link.Hello(worker=0, token="", pid=1, media_host="127.0.0.1", media_port=9)
    main = WorkerLink(0, None, main_sink, hello, Socket())  # type: ignore[arg-type]
    pub = Publication("p", "video", request_keyframe=lambda: None)
    LayerGroup("p", [pub])
    main.assign(1, 0, pub)
    assign = main_sink.told[-1]
    assert isinstance(assign, link.Assign) and assign.layers == (pub.key,)

    sink = Sink()
    worker = Worker(0, sink)  # type: ignore[arg-type]
    worker._source = ("127.0.0.1", 5000)
    worker.viewers = viewers = LocalViewers(MediaConfig())
    sub = Subscriber("viewer", RTCPeerConnection(), 1)
    slot = sub.pairs[0].video
    slot.pts = {"video/vp8": 96}
    v = Viewer(slot)
    path = hooks.UdpPath(bytes, v.sendto, ("192.0.2.1", 9))
    slot.connect(path)
    sub.path = path
    viewers.subscribers[1] = sub
    worker.on_message(assign)
    mirror = worker.mirrors[pub.key]
    group = mirror.group
    assert group is not None and group.layers == [mirror] and slot.publication is mirror

    number = itertools.count(7000)

    def feed(packet: Any) -> None:  # main's forwarded packets, as datagrams, main's numbering
        class Forwarded:
            marker = packet.marker
            timestamp = packet.timestamp
            payload = packet.payload
            ext_seq = next(number)

        keyframe = vp8.is_keyframe(packet.payload)
        for datagram in link.encode_frame_packets(pub.key, True, "video/vp8", keyframe, [Forwarded()], None):
            worker.datagram_received(datagram, ("127.0.0.1", 5000))

    source = Source(feed)
    # Three packets a frame: the worker forwards them one at a time, deciding at each frame's first.
    source.frame(keyframe=True, packets=3)
    for _ in range(8):
        source.frame(packets=3)
    assert group.count == 3 and len(v.frames()) == 9
    # The viewer's preference "low" (layer.set): the lowest live layer, i.e. the base layer.
    viewers.set_preference(1, "low")
    group.evaluate(time.monotonic())
    assert slot.tl_target == 0
    n = len(v.sent)
    for _ in range(12):
        source.frame(packets=3)
    assert [s.tid for s in v.frames(n)] == [0, 0, 0] and len(v.sent) - n == 9
    [video] = [s for s in figures.viewer(sub).slots if s.kind == "video"]
    assert video.layer == "T0" and video.forwarding  # the connection figures name the layer
    assert_continuous(v.sent)
    assert sum(isinstance(m, link.KeyframeRequest) for m in sink.told) == 1  # the first keyframe
    await asyncio.sleep(0)
    await viewers.close()


async def test_a_frame_without_temporal_layer_goes_to_every_viewer_and_its_numbers_stay_mapped() -> None:
    rig = Rig()
    low = rig.viewer()
    rig.frames(1, keyframe=True)
    rig.frames(3)
    rig.cap(low, 0)
    rig.until(2)
    rig.frames(1)  # dropped for the viewer: it is in a gap
    assert low.slot.tl_gap
    n = len(low.sent)
    source = rig.source
    source.ts = (source.ts + 3000) & 0xFFFFFFFF
    source.pid = (source.pid + 1) & 0x7FFF
    source.count += 1
    body = DELTA.ljust(len(KEY), b"\0") + struct.pack("!H", source.count)
    packet = RtpPacket(
        payload_type=96,
        marker=1,
        sequence_number=source.seq,
        timestamp=source.ts,
        ssrc=1000,
        payload=descriptor(pid=source.pid, tl0=source.tl0) + body,  # no T bit
    )
    packet._data = body  # type: ignore[attr-defined]
    source.seq = (source.seq + 1) & 0xFFFF
    rig.pub.on_packet(packet)
    assert len(low.sent) == n + 1 and not low.slot.tl_gap
    low.slot.rtx_pts = {}
    original = low.sent[-1]
    low.slot.retransmit(original.seq)
    assert (low.sent[-1].seq, low.sent[-1].pid, low.sent[-1].frame) == (
        original.seq,
        original.pid,
        original.frame,
    )
