"""A simulcast video is recorded from its highest live layer (media/toplayer.py): real VP8 (libvpx
through aiortc's encoder, three sizes, each layer its own sequence and timestamp bases) as RTP
packets into three layer Publications of one LayerGroup, the tap writing a real TrackWriter file.
The file, decoded with PyAV, is one track at the top layer's size while that layer is live, at the
middle one's while the top one is stopped, back at the top's when it returns; every frame decodes,
and its timestamps run on with the wall clock across the switches."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import random
from collections.abc import Callable
from pathlib import Path

import av
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from aiortc.rtp import RtpPacket

from media.aiortc_hooks import payloads
from media.layergroup import LIVE_S, LayerGroup
from media.publication import Publication
from media.toplayer import TopLayerTap
from recording.writer import TrackWriter

SIZES = [(160, 90), (320, 180), (640, 360)]
FPS = 30


class Encoding:
    """One simulcast encoding of a browser: libvpx at one size, a keyframe when asked (PLI)."""

    def __init__(self, index: int, clock: Callable[[], float]) -> None:
        self.width, self.height = SIZES[index]
        self.encoder = Vp8Encoder()
        self.asked = True
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.frames = 0
        self.pub = Publication("speaker", "video", request_keyframe=self.ask, clock=clock)
        self.pub.mime = "video/vp8"

    def ask(self) -> None:
        self.asked = True

    def send_frame(self) -> None:
        image = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, value in zip(image.planes, (16 + 7 * self.frames % 200, 128, 128), strict=True):
            plane.update(bytes([value]) * plane.buffer_size)
        image.pts = self.frames * 3000
        image.time_base = fractions.Fraction(1, 90000)
        encoded, _ = self.encoder.encode(image, force_keyframe=self.asked)
        self.asked = False
        self.frames += 1
        self.ts = (self.ts + 3000) & 0xFFFFFFFF
        for i, data in enumerate(encoded):
            packet = RtpPacket(
                payload_type=96,
                marker=int(i == len(encoded) - 1),
                sequence_number=self.seq,
                timestamp=self.ts,
                payload=data,
            )
            packet._data = VpxPayloadDescriptor.parse(data)[1]  # type: ignore[attr-defined]  # as aiortc depayloads
            self.seq = (self.seq + 1) & 0xFFFF
            self.pub.on_packet(packet)


async def test_the_recording_follows_the_highest_live_layer_in_one_continuous_file(tmp_path: Path) -> None:
    clock = [1000.0]
    layers = [Encoding(i, lambda: clock[0]) for i in range(3)]
    group = LayerGroup("speaker", [e.pub for e in layers])
    writer = TrackWriter(tmp_path / "speaker-video-1", "video/vp8")
    written: list[tuple[int, bool]] = []

    def sink(frame, timestamp):  # type: ignore[no-untyped-def]
        written.append((timestamp, frame.keyframe))
        writer.write(payloads(frame.packets), timestamp, frame.keyframe)

    tap = TopLayerTap(group, sink, clock=lambda: clock[0])
    tap.start()

    def run(seconds: float, sending: tuple[int, ...]) -> None:
        for _ in range(int(seconds * FPS)):
            clock[0] += 1 / FPS
            for i in sending:
                layers[i].send_frame()

    run(1.0, (0, 1, 2))  # all three: the top one is recorded
    assert tap.current is group.layers[2]
    top_frames = len(written)
    run(LIVE_S + 1.0, (0, 1))  # the browser stops the top encoding
    assert tap.current is group.layers[1] and tap.switches == 1
    run(1.0, (0, 1, 2))  # and sends it again
    assert tap.current is group.layers[2] and tap.switches == 2
    tap.stop()
    run(0.2, (0, 1, 2))
    total = len(written)
    await writer.aclose()
    assert all(e.pub.taps == [] for e in layers)  # nothing left tapped

    # The timestamps written run on: each frame after the last, by its real spacing (a switch: the
    # time the lower layer's keyframe took to come, at most the liveness window and a frame or two).
    deltas = [(b - a) & 0xFFFFFFFF for (a, _), (b, _) in itertools.pairwise(written)]
    assert all(0 < d <= (LIVE_S + 0.2) * 90000 for d in deltas), deltas
    assert sum(1 for d in deltas if d > 4000) <= 2  # the two switches

    with av.open(str(writer.path)) as container:
        assert len(container.streams) == 1 and container.streams.video[0].codec_context.name == "vp8"
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == SIZES[2]
        sizes, pts = [], []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            pts.append(packet.pts)
            for frame in packet.decode():  # raises on a frame that does not decode
                sizes.append((frame.width, frame.height))
    assert len(sizes) == total, (len(sizes), total)
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    # The top layer's size, the middle one's while the top was stopped, the top's again.
    runs = [s for i, s in enumerate(sizes) if i == 0 or sizes[i - 1] != s]
    assert runs == [SIZES[2], SIZES[1], SIZES[2]], runs
    assert sizes[:top_frames] == [SIZES[2]] * top_frames
    for e in layers:
        e.pub.close()


async def test_a_session_records_a_simulcast_camera_whose_top_encoding_never_comes(tmp_path: Path) -> None:
    """Chromium sends two encodings of a 360p camera (l, m): the session's capture of the speaker's
    video (its top encoding, ``publications["video"]``) writes the middle one's frames. In real time
    (the session's tap reads the monotonic clock, as the node's layers do)."""
    import time as wall
    from types import SimpleNamespace

    from media.peer import MediaConfig
    from media.room import MediaRoom
    from recording.session import SessionRecorder
    from rooms.roles import Role
    from rooms.stage import Stage, StageSettings

    now = wall.time()
    stage = Stage("cardio", "Cardiology", now, settings=StageSettings(recording_mode="manual"))
    stage.join("p-host", "Dr Host", Role.HOST, now)
    stage.give_consent("p-host", frozenset({"media", "comments"}), "2026-11", "join_prompt", now, "c-host")
    stage.start_publishing("p-host", ("video",), now)
    stage.start_recording("p-host", "s-1", now)
    layers = [Encoding(i, wall.monotonic) for i in range(3)]
    LayerGroup("p-host", [e.pub for e in layers])
    media = MediaRoom("cardio", MediaConfig(), lambda pid, message: None)
    media.publishers["p-host"] = SimpleNamespace(publications={"video": layers[2].pub})  # type: ignore[assignment]
    failures: list[str] = []
    recorder = SessionRecorder(tmp_path, stage, media, "s-1", now, failures.append)
    assert list(recorder.captures) == [("p-host", "video")]
    for _ in range(int(1.5 * FPS)):
        for i in (0, 1):
            layers[i].send_frame()
        await asyncio.sleep(1 / FPS)
    await recorder.stop(now + 3)
    assert not failures
    [track] = recorder.manifest()["tracks"]
    assert track["frames"] >= FPS // 2, track
    with av.open(str(tmp_path / "cardio" / "s-1" / track["file"])) as container:
        sizes = {(f.width, f.height) for f in container.decode(video=0)}
    assert sizes == {SIZES[1]}
    assert all(e.pub.taps == [] for e in layers)  # the capture's taps went with it
