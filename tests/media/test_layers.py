"""Simulcast switching (media/layergroup.py, media/layerchoice.py): synthetic VP8 packets through three
layer Publications into real subscriber Slots. A switch waits for a keyframe of the target layer, the
first packet after it is that keyframe, and sequence numbers, timestamps, picture ids and TL0PICIDX
continue across it; retransmissions carry the asking viewer's numbering."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiortc import RTCCertificate, RTCDtlsTransport, RTCRtpSender
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtp import RtpPacket

from media import aiortc_hooks as hooks
from media import link, vp8
from media.bwe import ViewerLayers
from media.layerchoice import LayerState, choose
from media.layergroup import LIVE_S, STOPPED_MIN_S, LayerGroup
from media.peer import MediaConfig
from media.publication import Publication
from media.subscriber import Slot
from media.viewers import LocalViewers
from tests.media.peers import new_subscriber
from tests.media.test_vp8 import DELTA, KEY, descriptor


@dataclass
class Sent:
    seq: int
    ts: int
    marker: bool
    layer: int
    keyframe: bool
    pid: int
    tl0: int


@dataclass
class Viewer:
    slot: Slot
    sent: list[Sent] = field(default_factory=list)

    def sendto(self, data: bytes, addr: Any) -> None:
        # Video carries abs-send-time: the payload starts after the header extension.
        start = 12 + (4 + 4 * struct.unpack_from("!H", data, 14)[0] if data[0] & 0x10 else 0)
        d = vp8.parse(data[start:])
        assert d is not None and d.picture_id is not None and d.tl0picidx is not None
        self.sent.append(
            Sent(
                seq=struct.unpack_from("!H", data, 2)[0],
                ts=struct.unpack_from("!I", data, 4)[0],
                marker=bool(data[1] & 0x80),
                layer=data[start + d.size + len(KEY)],  # the layer's mark after the VP8 bytes
                keyframe=vp8.is_keyframe(data[start:]),
                pid=d.picture_id,
                tl0=d.tl0picidx,
            )
        )


class FakeSubscriber:
    participant_id = "viewer"
    layers = ViewerLayers()  # a NACK tells its padding probe (media/bwe.py)


class Layer:
    """One encoding's sender: its own SSRC, sequence numbers, timestamps, picture ids, TL0PICIDX."""

    def __init__(self, index: int, pub: Publication, seq: int, ts: int, pid: int, tl0: int) -> None:
        self.index, self.pub = index, pub
        self.seq, self.ts, self.pid, self.tl0 = seq, ts, pid, tl0
        self.frames = 0

    def frame(self, keyframe: bool = False, packets: int = 2) -> None:
        if self.frames == 0:  # the publication's assembler syncs on a first marker, then forwards
            self.frames = 1
            self.frame(packets=1)
        self.ts = (self.ts + 3000) & 0xFFFFFFFF
        self.pid = (self.pid + 1) & 0x7FFF
        tid = 0 if keyframe or self.frames % 2 == 0 else 1
        if tid == 0:
            self.tl0 = (self.tl0 + 1) & 0xFF
        self.frames += 1
        for i in range(packets):
            body = (KEY if keyframe else DELTA.ljust(len(KEY), b"\0")) + bytes([self.index])
            payload = descriptor(start=i == 0, pid=self.pid, tl0=self.tl0, tid=tid) + body
            packet = RtpPacket(
                payload_type=96,
                marker=int(i == packets - 1),
                sequence_number=self.seq,
                timestamp=self.ts,
                ssrc=1000 + self.index,
                payload=payload,
            )
            packet._data = body if i == 0 else b"\x00"  # type: ignore[attr-defined]  # depayloaded
            self.seq = (self.seq + 1) & 0xFFFF
            self.pub.on_packet(packet)


class Rig:
    def __init__(self) -> None:
        self.now = 1000.0
        self.plis = [0, 0, 0]
        pubs = []
        for i in range(3):
            pub = Publication("speaker", "video", request_keyframe=self._pli(i), clock=lambda: self.now)
            pub.mime = "video/vp8"
            pub.rid = "lmh"[i]
            pubs.append(pub)
        self.group = LayerGroup("speaker", [*pubs])
        starts = [(65000, 4_000_000_000, 32760, 250), (10, 5, 100, 3), (30000, 77, 0x7FF0, 0)]
        self.layers = [Layer(i, p, *starts[i]) for i, p in enumerate(pubs)]
        ice = RTCIceTransport(RTCIceGatherer(iceServers=[]))
        self.dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])

    def _pli(self, i: int) -> Any:
        def send() -> None:
            self.plis[i] += 1

        return send

    def viewer(self) -> Viewer:
        slot = Slot(FakeSubscriber(), 0, "video", RTCRtpSender("video", self.dtls))  # type: ignore[arg-type]
        slot.pts = {"video/vp8": 96}
        viewer = Viewer(slot)
        slot.connect(hooks.UdpPath(bytes, viewer.sendto, ("192.0.2.1", 9)))
        fanout = self.group.place(slot, self.now)
        slot.publication = fanout
        fanout.attach(slot)
        return viewer

    def frames(
        self, n: int, layers: tuple[int, ...] = (0, 1, 2), keyframe: int | tuple[int, ...] = ()
    ) -> None:
        keyframes = (keyframe,) if isinstance(keyframe, int) else keyframe
        for _ in range(n):
            self.now += 1 / 30
            for i in layers:
                self.layers[i].frame(keyframe=i in keyframes)


def assert_continuous(sent: list[Sent]) -> None:
    for a, b in itertools.pairwise(sent):
        assert b.seq == (a.seq + 1) & 0xFFFF, (a, b)
        if a.marker:  # a new frame: a later timestamp, the next picture id
            assert 0 < (b.ts - a.ts) & 0xFFFFFFFF < 90000, (a, b)
            assert b.pid == (a.pid + 1) & 0x7FFF, (a, b)
            assert (b.tl0 - a.tl0) & 0xFF in (0, 1), (a, b)
        else:
            assert (b.ts, b.pid, b.tl0) == (a.ts, a.pid, a.tl0), (a, b)


async def test_a_viewer_switches_down_and_up_only_at_keyframes_with_continuous_numbering() -> None:
    rig = Rig()
    v = rig.viewer()
    assert v.slot.publication is rig.group.layers[2]  # nothing live yet: the top layer
    rig.frames(1, keyframe=(0, 1, 2))
    rig.frames(5)
    assert [s.layer for s in v.sent] == [2] * 12 and v.sent[0].keyframe
    assert [rig.group.live(i, rig.now) for i in range(3)] == [True, True, True]
    assert choose(LayerState(), rig.group, rig.now) == 2

    # The viewer is capped to the lowest layer: it keeps layer 2 until layer 0's keyframe.
    rig.group.state(v.slot).cap = 0
    plis = rig.plis[0]
    rig.now += 0.5  # past the keyframe policy's interval since the layer's first keyframe
    rig.group.evaluate(rig.now)
    assert rig.plis[0] == plis + 1, "a keyframe of the target layer is asked for"
    rig.frames(4)
    assert {s.layer for s in v.sent} == {2}
    n = len(v.sent)
    rig.frames(1, keyframe=0)
    rig.frames(6)
    after = v.sent[n:]
    assert after[0].layer == 0 and after[0].keyframe, "first packet after the switch: not a keyframe"
    assert {s.layer for s in after} == {0}
    assert rig.group.switches == 1
    assert_continuous(v.sent)

    # Back up: layer 0 until layer 2's keyframe (its delta frames are never shown first).
    rig.group.state(v.slot).cap = None
    rig.group.evaluate(rig.now)
    rig.frames(3)
    n = len(v.sent)
    rig.frames(1, keyframe=2)
    rig.frames(3)
    first = next(i for i, s in enumerate(v.sent) if i >= n and s.layer == 2)
    assert v.sent[first].keyframe and {s.layer for s in v.sent[n:first]} <= {0}
    assert {s.layer for s in v.sent[first:]} == {2}
    assert_continuous(v.sent)


async def test_a_layer_that_stops_sends_its_viewers_down_at_the_next_keyframe_below() -> None:
    rig = Rig()
    v = rig.viewer()
    rig.frames(1, keyframe=(0, 1, 2))
    rig.frames(3)
    rig.frames(int(LIVE_S * 30) + 3, layers=(0, 1))  # the browser stops its top layer
    assert not rig.group.live(2, rig.now) and rig.group.live(1, rig.now)
    rig.group.evaluate(rig.now)
    assert rig.plis[1] >= 1
    n = len(v.sent)
    rig.frames(1, layers=(0, 1), keyframe=1)
    rig.frames(2, layers=(0, 1))
    assert v.sent[n].layer == 1 and v.sent[n].keyframe
    assert_continuous(v.sent)


async def test_a_viewer_not_started_yet_moves_its_wait_and_viewers_keep_their_own_numbering() -> None:
    rig = Rig()
    rig.frames(1, layers=(0, 1), keyframe=(0, 1))  # the top layer is not sent yet
    rig.now += 0.6  # past the keyframe policy's interval
    a = rig.viewer()
    assert a.slot.publication is rig.group.layers[1]  # the highest live layer
    b = rig.viewer()
    rig.group.state(b.slot).cap = 0
    rig.group.evaluate(rig.now)
    assert b.slot.publication is rig.group.layers[0]  # moved before it ever started
    rig.frames(1, layers=(0, 1), keyframe=0)
    rig.frames(1, layers=(0, 1), keyframe=1)
    rig.frames(3, layers=(0, 1))
    assert {s.layer for s in a.sent} == {1} and a.sent[0].keyframe
    assert {s.layer for s in b.sent} == {0} and b.sent[0].keyframe
    # a switches to layer 0 too; b stays: both now take layer 0's packets, each numbered its own way.
    rig.group.state(a.slot).cap = 0
    rig.group.evaluate(rig.now)
    n_a, n_b = len(a.sent), len(b.sent)
    rig.frames(1, layers=(0, 1), keyframe=0)
    rig.frames(2, layers=(0, 1))
    assert_continuous(a.sent)
    assert_continuous(b.sent)
    assert a.sent[n_a].layer == 0 and a.sent[n_a].keyframe
    assert a.sent[-1].pid != b.sent[-1].pid  # a continues its own picture ids, b the layer's

    # A NACK of a's last packet is answered with a's picture id, though b was written last.
    last_a, last_b = a.sent[-1], b.sent[-1]
    a.slot.rtx_pts = {}
    a.slot.retransmit(last_a.seq)
    resent = a.sent[-1]
    assert (resent.seq, resent.pid, resent.tl0) == (last_a.seq, last_a.pid, last_a.tl0)
    assert b.sent[-1] == last_b and len(b.sent) - n_b == len(a.sent) - 1 - n_a
    rig.group.forget(a.slot)


# --- in a media worker -------------------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.reader = link.FrameReader()
        self.told: list[Any] = []

    def write(self, data: bytes) -> None:
        self.told += list(self.reader.feed(data))


async def test_a_worker_groups_the_encodings_main_names_and_switches_its_viewer_there() -> None:
    from aiortc import RTCPeerConnection

    from media.peer import MediaConfig
    from media.subscriber import Subscriber
    from media.viewers import LocalViewers
    from media.worker import Worker

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

    worker.on_message(
        link.Assign(
            vid=1, pair=0, kind="video", pub=12, participant_id="p", paused=False, layers=(10, 11, 12)
        )
    )
    group = worker.mirrors[12].group
    assert group is not None and [m.key for m in group.layers] == [10, 11, 12]  # type: ignore[attr-defined]
    assert slot.publication is worker.mirrors[12]
    assert link.KeyframeRequest(pub=12) in sink.told

    # Main's forwarded packets of each layer, as datagrams (main's numbering, one counter per layer).
    numbers = {10: 0, 11: 500, 12: 9000}
    sources = {
        key: Layer(key - 10, Publication("p", "video", request_keyframe=lambda: None), 1, 1, 1, 1)
        for key in numbers
    }

    def send(key: int, keyframe: bool = False) -> None:
        layer = sources[key]
        layer.ts += 3000
        layer.pid = (layer.pid + 1) & 0x7FFF
        layer.tl0 = (layer.tl0 + 1) & 0xFF
        body = (KEY if keyframe else DELTA.ljust(len(KEY), b"\0")) + bytes([key - 10])

        class Packet:
            marker = True
            timestamp = layer.ts
            payload = descriptor(pid=layer.pid, tl0=layer.tl0, tid=0) + body
            ext_seq = numbers[key]

        numbers[key] += 1
        for datagram in link.encode_frame_packets(key, True, "video/vp8", keyframe, [Packet()], None):
            worker.datagram_received(datagram, ("127.0.0.1", 5000))

    for key in (10, 11, 12):
        send(key, keyframe=True)
    for _ in range(3):
        for key in (10, 11, 12):
            send(key)
    assert [s.layer for s in v.sent] == [2] * 4 and v.sent[0].keyframe

    group.state(slot).cap = 0
    await asyncio.sleep(0.6)  # past main's keyframe interval; the layers stay live
    for key in (10, 11, 12):
        send(key)
    group.evaluate(time.monotonic())
    assert sink.told[-1] == link.KeyframeRequest(pub=10)
    send(12)
    send(10, keyframe=True)
    send(10)
    assert [s.layer for s in v.sent[-3:]] == [2, 0, 0] and v.sent[-2].keyframe
    assert_continuous(v.sent)
    await viewers.close()


def test_main_forwards_every_encoding_to_the_worker_of_a_viewer_and_drops_them_together() -> None:
    from media.workers import WorkerLink

    class Socket:
        def sendto(self, data: bytes, addr: Any) -> None: ...

    sink = Sink()
    hello = link.Hello(worker=0, token="", pid=1, media_host="127.0.0.1", media_port=9)
    worker = WorkerLink(0, None, sink, hello, Socket())  # type: ignore[arg-type]
    pubs = [Publication("p", "video", request_keyframe=lambda: None) for _ in range(3)]
    LayerGroup("p", list(pubs))
    worker.assign(1, 0, pubs[2])
    worker.assign(2, 0, pubs[2])
    assigns = [m for m in sink.told if isinstance(m, link.Assign)]
    assert [(m.vid, m.pub) for m in assigns] == [(1, pubs[2].key), (2, pubs[2].key)]
    assert assigns[0].layers == assigns[1].layers == tuple(p.key for p in pubs)
    assert all(len(p.links) == 1 for p in pubs)  # each encoding goes to the worker once
    worker.release(1, 0, "video")
    assert all(len(p.links) == 1 for p in pubs)  # the other viewer still watches
    worker.release(2, 0, "video")
    assert all(p.links == [] for p in pubs)
    unpublished = {m.pub for m in sink.told if isinstance(m, link.Unpublish)}
    assert unpublished == {p.key for p in pubs}

    # A video without layers: no layers named, one target.
    single = Publication("q", "video", request_keyframe=lambda: None)
    worker.assign(3, 1, single)
    assert sink.told[-1].layers == () and len(single.links) == 1


async def test_a_layer_that_stops_while_lower_ones_flow_is_left_within_a_few_frame_intervals() -> None:
    rig = Rig()
    v = rig.viewer()
    rig.frames(1, keyframe=(0, 1, 2))
    for _ in range(30):  # a second of 30 fps, sampled as the publisher's task does
        rig.frames(1)
        rig.group.sample(rig.now)
    assert rig.group.frame_interval(2) == pytest.approx(1 / 30, rel=0.05)
    plis = rig.plis[1]
    stopped_at = rig.now
    evaluated_at = None
    while rig.now - stopped_at < LIVE_S:  # the browser stops its top layer, the others go on
        rig.frames(1, layers=(0, 1))
        rig.group.evaluate(rig.now)
        if rig.plis[1] > plis:
            evaluated_at = rig.now
            break
    assert evaluated_at is not None and evaluated_at - stopped_at <= STOPPED_MIN_S + 0.05
    assert rig.group.current(v.slot) == 1
    n = len(v.sent)
    rig.frames(1, layers=(0, 1), keyframe=1)
    assert v.sent[n].layer == 1 and v.sent[n].keyframe
    assert_continuous(v.sent)
    # Layers that go quiet together (a frozen screen, a stalled publisher) have not "stopped": they
    # stay live until LIVE_S.
    for _ in range(30):
        rig.frames(1)
        rig.group.sample(rig.now)
    assert all(rig.group.live(i, rig.now + 0.5) for i in range(3))
    assert not any(rig.group.live(i, rig.now + LIVE_S) for i in range(3))


class DecidingSubscriber(FakeSubscriber):
    """A viewer whose layer decision the test scripts (media/bwe.py's is tested in test_bwe.py)."""

    def __init__(self) -> None:
        self.layers = ViewerLayers()
        self.answer: int | None = 0

    def choose(self, participant_id: str, rates: Any, live: Any, current: Any, now: float) -> int | None:
        return self.answer


async def test_audio_only_for_lack_of_bandwidth_holds_the_video_and_resumes_at_a_keyframe() -> None:
    rig = Rig()
    v = rig.viewer()
    sub = DecidingSubscriber()
    v.slot.subscriber = sub  # type: ignore[assignment]
    rig.frames(1, keyframe=(0, 1, 2))
    rig.frames(3)
    assert v.sent and {s.layer for s in v.sent} == {2}
    sub.answer = None  # not even the lowest layer fits: audio only
    rig.group.evaluate(rig.now)
    assert v.slot.held and rig.group.state(v.slot).held
    n = len(v.sent)
    rig.frames(10, keyframe=(0, 1, 2))
    assert len(v.sent) == n, "nothing forwarded while held"
    assert v.slot.sender_report(0, rig.now) is None
    rig.group.evaluate(rig.now)
    assert v.slot.held, "still held while the decision says so"
    sub.answer = 0  # it fits again
    rig.now += 0.6  # past the keyframe policy's interval
    plis = rig.plis[0]
    rig.group.evaluate(rig.now)
    assert not v.slot.held and rig.plis[0] > plis, "resumed, the target's keyframe asked for at once"
    rig.frames(2, layers=(0, 1, 2))
    assert len(v.sent) == n, "from a keyframe only"
    rig.frames(1, keyframe=0)
    rig.frames(2)
    resumed = v.sent[n:]
    assert resumed[0].keyframe and {s.layer for s in resumed} == {0}
    assert resumed[0].seq == (v.sent[n - 1].seq + 1) & 0xFFFF, "its sequence numbers continue"
    assert_continuous(resumed)
    # A preference of "audio" is the viewer's own: never a hold of the group's (media/viewers.py).
    sub.layers.set_preference("audio")
    sub.answer = None
    rig.group.evaluate(rig.now)
    assert not rig.group.state(v.slot).held


async def test_audio_only_chosen_while_a_switch_waits_stops_the_video_for_good() -> None:
    # The viewer's slot waits for the low layer's keyframe (a switch down) when its viewer chooses
    # audio only: that keyframe must not start it again (the e2e test saw 1.5 s of video after
    # "audio" when a switch was pending).
    rig = Rig()
    sub = new_subscriber(slots=1)
    viewers = LocalViewers(MediaConfig(ice_addresses=["127.0.0.1"]))
    viewers.subscribers["v"] = sub
    slot = sub.pairs[0].video
    slot.pts = {"video/vp8": 96}
    viewer = Viewer(slot)
    slot.connect(hooks.UdpPath(bytes, viewer.sendto, ("192.0.2.1", 9)))
    sub.path = object()  # type: ignore[assignment]  # connected (as far as the preference cares)
    fanout = rig.group.place(slot, rig.now)
    slot.publication = fanout
    fanout.attach(slot)
    rig.frames(1, keyframe=(0, 1, 2))
    rig.frames(3)
    assert viewer.sent and {s.layer for s in viewer.sent} == {2}
    rig.group.switch(slot, 0)
    assert slot in rig.group.layers[0].waiting
    viewers.set_preference("v", "audio")
    n = len(viewer.sent)
    rig.frames(1, keyframe=(0, 1, 2))
    rig.frames(5)
    assert len(viewer.sent) == n, [s.layer for s in viewer.sent[n:]]
    assert all(slot not in (*layer.active, *layer.waiting) for layer in rig.group.layers)
    # Back to auto: the video comes back at a keyframe.
    viewers.set_preference("v", "auto")
    rig.frames(1, keyframe=(0, 1, 2))
    rig.frames(2)
    assert len(viewer.sent) > n and viewer.sent[n].keyframe
