"""Track writers and repair, judged by real tools: ffprobe, and PyAV decoding every frame it wrote."""

from __future__ import annotations

import errno
import fractions
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import av.error
import pytest

from recording.repair import RepairFailed, finalize, is_finalized, marker_path, repair_session
from recording.writer import (
    TrackWriter,
    annexb_nal_units,
    h264_dimensions,
    opus_samples,
    vp8_dimensions,
)
from tests.conftest import ROOT
from tests.support.clip import FPS, HEIGHT, WIDTH, Clip, load_clip

VIDEO_STEP = 90_000 // FPS
AUDIO_STEP = 960
# Bases a little before the 32-bit wrap, so every test also crosses it.
VIDEO_BASE = 2**32 - 45 * VIDEO_STEP
AUDIO_BASE = 2**32 - 100 * AUDIO_STEP


@pytest.fixture(scope="module")
def clip() -> Clip:
    return load_clip()


# --- judging files -------------------------------------------------------------------------------


def ffprobe(path: Path) -> list[dict[str, str]]:
    """The brief's check: one dict per stream (codec_type, codec_name, nb_read_packets)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-show_entries",
         "stream=codec_type,codec_name,nb_read_packets", "-of", "compact", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [
        dict(field.split("=", 1) for field in line.split("|")[1:])
        for line in out.splitlines()
        if line.startswith("stream|")
    ]


def doc_type(path: Path) -> str:
    """The EBML DocType: "webm" or "matroska" (ffprobe names both demuxers "matroska,webm")."""
    head = path.read_bytes()[:64]
    i = head.index(b"\x42\x82")  # DocType element
    size = head[i + 2] & 0x7F
    return head[i + 3 : i + 3 + size].decode()


CUES = 0x1C53BB6B


def _vint(data: bytes, i: int, keep_marker: bool) -> tuple[int, int]:
    """An EBML variable-length integer at ``i``: (value, next index)."""
    length = 9 - data[i].bit_length()
    value = int.from_bytes(data[i : i + length], "big")
    return (value if keep_marker else value & ((1 << (7 * length)) - 1)), i + length


def segment_children(path: Path) -> list[int]:
    """IDs of the Segment's top-level elements (SeekHead, Info, Tracks, Cluster..., Cues)."""
    data = path.read_bytes()
    _, i = _vint(data, 0, True)  # EBML header
    size, i = _vint(data, i, False)
    _, i = _vint(data, i + size, True)  # Segment (its size is unknown in a live file)
    _, i = _vint(data, i, False)
    ids = []
    while i < len(data):
        element, i = _vint(data, i, True)
        size, i = _vint(data, i, False)
        ids.append(element)
        i += size
    return ids


class Decoded:
    def __init__(self, path: Path) -> None:
        self.packets: list[Any] = []  # (pts seconds, bytes, keyframe)
        self.frames = 0
        self.width = self.height = 0
        self.truncated = False
        with av.open(str(path)) as container:
            stream = container.streams[0]
            self.duration = None if container.duration is None else container.duration / 1e6
            tb = stream.time_base
            assert tb is not None
            demux = container.demux(stream)
            while True:
                try:
                    packet = next(demux)
                except StopIteration:
                    break
                except av.error.InvalidDataError:  # the tail a crash cut short
                    self.truncated = True
                    break
                if packet.size == 0:
                    continue
                assert packet.pts is not None
                self.packets.append((float(packet.pts * tb), bytes(packet), packet.is_keyframe))
                for frame in packet.decode():  # raises on a frame that does not decode
                    self.frames += 1
                    if isinstance(frame, av.VideoFrame):
                        self.width, self.height = frame.width, frame.height
            decoder: Any = stream.codec_context
            self.frames += len(decoder.decode(None))  # what the decoder still held

    @property
    def end(self) -> float:
        return self.packets[-1][0] if self.packets else 0.0


def seekable(path: Path, to: float) -> bool:
    """Seek by the cues (a live file has none: libavformat refuses) and land on a keyframe <= ``to``."""
    with av.open(str(path)) as container:
        stream = container.streams[0]
        tb = stream.time_base
        assert tb is not None
        try:
            container.seek(int(to / tb), stream=stream)
        except av.error.FFmpegError:
            return False
        packet = next(p for p in container.demux(stream) if p.size)
        assert packet.pts is not None
        return bool(packet.is_keyframe) and float(packet.pts * tb) <= to


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # counters have no event to wait on
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


# --- writing the clip ----------------------------------------------------------------------------


def write_video(writer: TrackWriter, clip: Clip, indexes: range | list[int]) -> None:
    for i in indexes:
        frame = clip.video[i % len(clip.video)]
        writer.write(frame, (VIDEO_BASE + i * VIDEO_STEP) & 0xFFFFFFFF, frame[0] & 1 == 0)


def write_audio(writer: TrackWriter, clip: Clip, indexes: range | list[int]) -> None:
    for i in indexes:
        writer.write(clip.audio[i % len(clip.audio)], (AUDIO_BASE + i * AUDIO_STEP) & 0xFFFFFFFF, True)


class GatedWriter(TrackWriter):
    """A writer whose thread stalls (a slow disk) until ``gate`` is set."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.gate = threading.Event()
        self.stalled = threading.Event()
        super().__init__(*args, **kwargs)

    def _mux(self, *args: Any) -> None:
        if not self.gate.is_set():
            self.stalled.set()
            self.gate.wait(10)
        super()._mux(*args)


# --- the normal path -----------------------------------------------------------------------------


def test_vp8_and_opus_become_webm_files_with_every_frame_present_and_decodable(
    tmp_path: Path, clip: Clip
) -> None:
    errors: list[BaseException] = []

    def on_error(writer: TrackWriter, exc: BaseException) -> None:
        errors.append(exc)

    before = time.time()
    video = TrackWriter(tmp_path / "alice-video", "video/VP8", max_queue=1000, on_error=on_error)
    audio = TrackWriter(tmp_path / "alice-audio", "audio/opus", max_queue=1000, on_error=on_error)
    write_video(video, clip, range(len(clip.video)))
    write_audio(audio, clip, range(len(clip.audio)))
    after = time.time()
    video.close()
    audio.close()
    assert errors == []

    assert (video.path.name, audio.path.name) == ("alice-video.webm", "alice-audio.webm")
    assert doc_type(video.path) == doc_type(audio.path) == "webm"
    assert ffprobe(video.path) == [
        {"codec_name": "vp8", "codec_type": "video", "nb_read_packets": str(len(clip.video))}
    ]
    assert ffprobe(audio.path) == [
        {"codec_name": "opus", "codec_type": "audio", "nb_read_packets": str(len(clip.audio))}
    ]

    v = Decoded(video.path)
    assert v.frames == len(clip.video) and (v.width, v.height) == (WIDTH, HEIGHT)
    assert [p[1] for p in v.packets] == list(clip.video)  # byte for byte, in order
    assert v.packets[0][2] is True
    # Timestamps cross the 32-bit RTP wrap at frame 45 without a jump (Matroska rounds to 1 ms).
    assert all(abs(pts - i / FPS) <= 0.001 for i, (pts, _, _) in enumerate(v.packets))
    a = Decoded(audio.path)
    assert a.frames == len(clip.audio)
    assert [p[1] for p in a.packets] == list(clip.audio)

    # Finalized: duration and cues (seekable), no marker left.
    assert v.duration == pytest.approx(len(clip.video) / FPS, abs=0.002)
    assert a.duration == pytest.approx(len(clip.audio) * 0.020, abs=0.002)
    assert video.written_duration == pytest.approx(v.duration, abs=0.002)
    assert audio.written_duration == pytest.approx(a.duration, abs=0.002)
    assert CUES in segment_children(video.path) and CUES in segment_children(audio.path)
    assert seekable(video.path, 5.5) and seekable(audio.path, 7.0)
    assert not marker_path(video.path).exists() and not marker_path(audio.path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice-audio.webm", "alice-video.webm"]

    assert video.first_wall_time is not None and before <= video.first_wall_time <= after
    assert audio.first_rtp_timestamp == AUDIO_BASE
    assert video.stats.frames_written == len(clip.video) and video.stats.dropped == 0
    assert video.finalized is not None and video.finalized.packets == len(clip.video)


def test_video_starts_at_the_first_keyframe_which_is_pts_zero(tmp_path: Path, clip: Clip) -> None:
    writer = TrackWriter(tmp_path / "late", "video/vp8", max_queue=1000)
    write_video(writer, clip, range(5, len(clip.video)))
    writer.close()
    assert writer.stats.dropped_awaiting_keyframe == 25  # frames 5..29
    decoded = Decoded(writer.path)
    assert decoded.frames == len(clip.video) - 30
    assert decoded.packets[0][0] == 0.0 and decoded.packets[0][2] is True
    assert writer.first_rtp_timestamp == (VIDEO_BASE + 30 * VIDEO_STEP) & 0xFFFFFFFF


def test_late_audio_is_dropped_and_a_sender_clock_that_went_back_continues_the_timeline(
    tmp_path: Path, clip: Clip
) -> None:
    audio = TrackWriter(tmp_path / "restart-audio", "audio/opus", max_queue=1000)
    write_audio(audio, clip, range(10))
    write_audio(audio, clip, [7])  # reordered in the network, after its successors: dropped
    write_audio(audio, clip, range(10, 20))
    for i in range(20, 30):  # the sender's clock restarted 20 s back
        audio.write(clip.audio[i], (AUDIO_BASE + (i - 1000) * AUDIO_STEP) & 0xFFFFFFFF, True)
    video = TrackWriter(tmp_path / "restart-video", "video/vp8", max_queue=1000)
    write_video(video, clip, range(60))
    for i in range(60, 90):  # its clock jumped back 10 s
        frame = clip.video[i]
        video.write(frame, (VIDEO_BASE + (i - 300) * VIDEO_STEP) & 0xFFFFFFFF, frame[0] & 1 == 0)
    audio.close()
    video.close()
    assert audio.stats.dropped_late == 1 and audio.stats.frames_written == 30
    a = Decoded(audio.path)
    # The restart's first packet is placed one packet after the last; from there the new clock counts.
    assert [round(p[0] / 0.02) for p in a.packets] == list(range(30))
    assert a.frames == 30
    v = Decoded(video.path)
    assert v.frames == 90 and all(abs(pts - i / FPS) <= 0.001 for i, (pts, _, _) in enumerate(v.packets))


def encode_h264(width: int, height: int, frames: int, profile: str = "baseline") -> list[tuple[bytes, bool]]:
    """Annex-B access units as a WebRTC sender emits them: SPS + PPS before every IDR, no B-frames."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 90_000)
    ctx.options = {
        "preset": "ultrafast",
        "profile": profile,
        "x264-params": "keyint=15:min-keyint=15:scenecut=0:bframes=0:repeat-headers=1",
    }
    out: list[tuple[bytes, bool]] = []
    for i in range(frames):
        frame = av.VideoFrame(width, height, "yuv420p")
        for n, plane in enumerate(frame.planes):
            plane.update(bytes([(i * 9 + n * 60) % 256]) * plane.buffer_size)
        frame.pts = i * VIDEO_STEP
        out += [(bytes(p), p.is_keyframe) for p in ctx.encode(frame)]
    out += [(bytes(p), p.is_keyframe) for p in ctx.encode(None)]
    return out


def test_h264_goes_to_matroska_sized_from_the_sps_and_starts_at_an_idr(tmp_path: Path) -> None:
    units = encode_h264(320, 180, 45)
    assert [key for _, key in units].count(True) == 3  # IDRs at 0, 15, 30
    writer = TrackWriter(tmp_path / "carol-video", "video/H264")
    for i, (data, key) in enumerate(units[3:], start=3):  # start mid-GOP: the first IDR used is #15
        writer.write(data, i * VIDEO_STEP, key)
        time.sleep(0.001)
    writer.close()
    assert writer.error is None and writer.finalize_error is None
    assert writer.path.suffix == ".mkv" and doc_type(writer.path) == "matroska"
    assert ffprobe(writer.path) == [{"codec_name": "h264", "codec_type": "video", "nb_read_packets": "30"}]
    decoded = Decoded(writer.path)
    assert (decoded.frames, decoded.width, decoded.height) == (30, 320, 180)
    assert decoded.packets[0][2] is True and decoded.packets[0][0] == 0.0
    assert CUES in segment_children(writer.path) and seekable(writer.path, 0.6)


@pytest.mark.parametrize(
    ("width", "height", "profile"),
    [
        (320, 180, "baseline"),
        (640, 360, "main"),
        (1280, 720, "high"),
        (176, 144, "baseline"),
        (1918, 1078, "high"),
    ],
)
def test_h264_sps_gives_the_cropped_picture_size(width: int, height: int, profile: str) -> None:
    idr, key = encode_h264(width, height, 1, profile)[0]
    assert key and h264_dimensions(idr) == (width, height)
    # Without its PPS (or its SPS) an access unit cannot start a file.
    without_pps = b"".join(b"\x00\x00\x00\x01" + u for u in annexb_nal_units(idr) if u[0] & 0x1F != 8)
    assert h264_dimensions(without_pps) is None


def test_vp8_header_and_opus_toc(clip: Clip) -> None:
    assert vp8_dimensions(clip.video[0]) == (WIDTH, HEIGHT)
    assert vp8_dimensions(clip.video[1]) is None  # not a keyframe
    assert {opus_samples(p) for p in clip.audio} == {960}
    assert opus_samples(bytes([0x03 | 16 << 3, 3])) == 3 * 120  # CELT 2.5 ms, code 3, three frames
    assert opus_samples(bytes([0x01 | 1 << 3])) == 2 * 960  # SILK 20 ms, two frames


# --- back-pressure and closing -------------------------------------------------------------------


def test_a_stalled_writer_drops_video_to_the_next_keyframe_and_write_never_blocks(
    tmp_path: Path, clip: Clip
) -> None:
    writer = GatedWriter(tmp_path / "slow", "video/vp8", max_queue=8)
    write_video(writer, clip, [0])
    assert writer.stalled.wait(5)  # the thread holds frame 0 in a stalled write
    slowest = 0.0
    for i in range(1, 60):
        t = time.perf_counter()
        write_video(writer, clip, [i])
        slowest = max(slowest, time.perf_counter() - t)
    assert slowest < 0.01, f"write() took {slowest * 1e3:.2f} ms while the disk stalled (for 10 s)"
    # 1..8 queued; 9 found the queue full; 10..29 wait for a keyframe; 30 (a keyframe) found it still
    # full; 31..59 wait again.
    assert writer.stats.dropped_queue_full == 2
    assert writer.stats.dropped_awaiting_keyframe == 20 + 29

    writer.gate.set()
    wait_until(lambda: writer.stats.frames_written == 9)
    for start in range(60, 300, 8):  # paced to what the queue holds: no more drops
        write_video(writer, clip, range(start, start + 8))
        wait_until(lambda start=start: writer.stats.frames_written == 9 + start + 8 - 60)  # type: ignore[misc]
    writer.close()
    assert writer.stats.dropped == 51

    decoded = Decoded(writer.path)
    kept = list(range(0, 9)) + list(range(60, 300))
    assert [p[1] for p in decoded.packets] == [clip.video[i] for i in kept]
    assert decoded.frames == len(kept)  # every frame decodes: nothing references a dropped frame


def test_a_stalled_audio_writer_drops_only_the_packets_that_did_not_fit(tmp_path: Path, clip: Clip) -> None:
    writer = GatedWriter(tmp_path / "slow-audio", "audio/opus", max_queue=4)
    write_audio(writer, clip, [0])
    assert writer.stalled.wait(5)
    write_audio(writer, clip, range(1, 10))  # 1..4 fit, 5..9 do not
    writer.gate.set()
    wait_until(lambda: writer.stats.frames_written == 5)
    write_audio(writer, clip, range(10, 14))
    writer.close()
    assert writer.stats.dropped_queue_full == 5 and writer.stats.dropped_awaiting_keyframe == 0
    decoded = Decoded(writer.path)
    assert [round(p[0] / 0.02) for p in decoded.packets] == [0, 1, 2, 3, 4, 10, 11, 12, 13]
    assert decoded.frames == 9


def test_close_is_prompt_with_a_full_queue_and_later_writes_are_no_ops(tmp_path: Path, clip: Clip) -> None:
    writer = GatedWriter(tmp_path / "busy", "video/vp8", max_queue=256)
    write_video(writer, clip, [0])
    assert writer.stalled.wait(5)
    write_video(writer, clip, range(1, 257))  # frame 0 in the stalled write, 256 queued
    writer.gate.set()
    t = time.perf_counter()
    writer.close()
    took = time.perf_counter() - t
    assert took < 1.0, f"close() took {took:.3f} s"
    assert writer.stats.frames_written == 257 and writer.finalized is not None
    write_video(writer, clip, range(257, 300))
    assert writer.stats.frames_written == 257 and writer.stats.dropped == 0
    assert not writer.running


async def test_aclose_finalizes_off_the_event_loop(tmp_path: Path, clip: Clip) -> None:
    writer = TrackWriter(tmp_path / "async-audio", "audio/opus", max_queue=1000)
    write_audio(writer, clip, range(250))
    await writer.aclose()
    assert writer.finalized is not None and writer.finalized.packets == 250
    assert is_finalized(writer.path)


def test_a_writer_closed_before_any_keyframe_leaves_nothing(tmp_path: Path, clip: Clip) -> None:
    writer = TrackWriter(tmp_path / "never", "video/vp8")
    write_video(writer, clip, range(1, 20))
    writer.close()
    assert list(tmp_path.iterdir()) == [] and writer.stats.dropped_awaiting_keyframe == 19


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs (needs root: CAP_SYS_ADMIN); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)]
    done = subprocess.run(command, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)  # a file still open after a failure


def test_a_full_disk_stops_the_writer_cleanly_keeps_the_file_readable_and_repair_finishes_it(
    tiny_disk: Path, clip: Clip
) -> None:
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * 256 * 1024)  # freed later, so repair has room for its copy
    reports: list[tuple[BaseException, str]] = []
    failed = threading.Event()

    def on_error(writer: TrackWriter, exc: BaseException) -> None:
        reports.append((exc, threading.current_thread().name))
        failed.set()

    session = tiny_disk / "session"
    writer = TrackWriter(session / "dave-video", "video/vp8", max_queue=1000, on_error=on_error)
    write_video(writer, clip, range(len(clip.video)))  # 1.06 MB into ≈ 250 KiB
    assert failed.wait(10)
    exc, thread = reports[0]
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    assert thread.startswith("writer ")  # reported from the writer thread
    wait_until(lambda: not writer.running)
    written = writer.stats.frames_written
    assert 0 < written < len(clip.video)
    write_video(writer, clip, range(10))  # no-ops now
    assert writer.stats.frames_written == written

    writer.close()  # finalizing needs room for a copy: fails, and says so
    assert isinstance(writer.finalize_error, OSError) and len(reports) == 2
    assert marker_path(writer.path).exists()
    assert sorted(p.name for p in session.iterdir()) == ["dave-video.webm", "dave-video.webm.partial"]

    # What was written is readable and decodes; at most the last cluster (≤ 32 KiB) did not fit.
    streams = ffprobe(writer.path)
    assert streams[0]["codec_name"] == "vp8"
    decoded = Decoded(writer.path)
    assert decoded.frames == len(decoded.packets) == int(streams[0]["nb_read_packets"])
    print(f"disk full after {written} frames muxed; {decoded.frames} readable ({decoded.end:.3f} s)")
    assert written - 12 <= decoded.frames <= written
    assert decoded.packets[0][2] is True
    with pytest.raises(RepairFailed) as failure:
        repair_session(session)  # still no room: reported, the file is untouched
    assert failure.value.failed == [writer.path] and Decoded(writer.path).frames == decoded.frames

    filler.unlink()
    messages = repair_session(session)
    assert len(messages) == 1 and messages[0].startswith(
        f"dave-video.webm: finalized, {decoded.frames} packets"
    )
    assert is_finalized(writer.path) and CUES in segment_children(writer.path)
    assert Decoded(writer.path).frames == decoded.frames
    assert not marker_path(writer.path).exists()


# --- SIGKILL -------------------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys, time
    from recording.writer import TrackWriter
    from tests.support.clip import FPS, load_clip

    VIDEO_BASE, VIDEO_STEP, AUDIO_BASE, AUDIO_STEP = map(int, sys.argv[2:])
    clip = load_clip()
    video = TrackWriter(sys.argv[1] + "/erin-video", "video/vp8")
    audio = TrackWriter(sys.argv[1] + "/erin-audio", "audio/opus")
    start = time.monotonic()
    v = a = 0
    while True:
        tv, ta = v / FPS, a * 0.02
        due = start + min(tv, ta)
        time.sleep(max(0.0, due - time.monotonic()))
        if tv <= ta:
            frame = clip.video[v % len(clip.video)]
            video.write(frame, (VIDEO_BASE + v * VIDEO_STEP) & 0xFFFFFFFF, frame[0] & 1 == 0)
            print("video", tv + 1 / FPS, flush=True)
            v += 1
        else:
            audio.write(clip.audio[a % len(clip.audio)], (AUDIO_BASE + a * AUDIO_STEP) & 0xFFFFFFFF, True)
            print("audio", ta + 0.02, flush=True)
            a += 1
    """
)


@pytest.mark.parametrize("kill_at", [3.0, 3.27])
def test_sigkill_mid_stream_leaves_files_readable_to_within_a_second_and_repair_finalizes_them(
    tmp_path: Path, clip: Clip, kill_at: float
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(tmp_path),
            *(str(n) for n in (VIDEO_BASE, VIDEO_STEP, AUDIO_BASE, AUDIO_STEP)),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert child.stdout is not None
    written = {"video": 0.0, "audio": 0.0}
    try:
        for line in child.stdout:
            kind, t = line.split()
            written[kind] = float(t)
            if min(written.values()) >= kill_at:
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        rest, _ = child.communicate(timeout=10)
    for line in rest.splitlines():  # what the child wrote between our last read and the kill
        kind, t = line.split()
        written[kind] = float(t)
    assert child.returncode == -signal.SIGKILL

    video, audio = tmp_path / "erin-video.webm", tmp_path / "erin-audio.webm"
    assert marker_path(video).exists() and marker_path(audio).exists()
    assert not is_finalized(video) and CUES not in segment_children(video)
    kept = {}
    for kind, path, frame_s in (("video", video, 1 / FPS), ("audio", audio, 0.02)):
        assert ffprobe(path)[0]["codec_type"] == kind
        decoded = Decoded(path)
        assert decoded.packets[0][2] is True and decoded.frames == len(decoded.packets)
        kept[kind] = (decoded, decoded.end + frame_s)
        lost = written[kind] - kept[kind][1]
        print(f"{kind}: written {written[kind]:.3f} s, readable {kept[kind][1]:.3f} s, lost {lost:.3f} s")
        assert lost <= 1.0

    messages = repair_session(tmp_path)
    assert len(messages) == 2, messages
    for kind, path in (("video", video), ("audio", audio)):
        before, _ = kept[kind]
        after = Decoded(path)
        assert after.duration is not None and after.duration >= before.end
        assert [p[1] for p in after.packets] == [p[1] for p in before.packets]  # nothing lost
        assert not marker_path(path).exists()
    assert CUES in segment_children(video) and CUES in segment_children(audio)
    assert seekable(video, 2.0) and seekable(audio, 0.5)
    assert repair_session(tmp_path) == []  # idempotent: nothing left to do


# --- repair never loses data ---------------------------------------------------------------------


def test_repair_leaves_an_unreadable_file_untouched_and_cleans_interrupted_finalizes(
    tmp_path: Path, clip: Clip
) -> None:
    garbage = tmp_path / "frank-video.webm"
    garbage.write_bytes(b"not a matroska file" * 100)
    marker_path(garbage).touch()
    stale = tmp_path / ".gina-audio.webm.finalizing.webm"  # a finalize killed mid-copy
    stale.write_bytes(b"half a copy")
    good = TrackWriter(tmp_path / "gina-audio", "audio/opus", max_queue=1000)
    write_audio(good, clip, range(100))
    good.close(finalize=False)
    marker_path(good.path).touch()  # as if killed before finalizing

    with pytest.raises(RepairFailed) as failure:
        repair_session(tmp_path)
    lines = failure.value.messages
    assert lines[0] == "removed .gina-audio.webm.finalizing.webm: temporary copy of an interrupted finalize"
    assert lines[1].startswith("frank-video.webm: could not finalize, left as it was")
    assert lines[2].startswith("gina-audio.webm: finalized, 100 packets, 2.000 s")
    assert garbage.read_bytes() == b"not a matroska file" * 100 and marker_path(garbage).exists()
    assert not stale.exists() and is_finalized(good.path)
    with pytest.raises(FileNotFoundError):
        repair_session(tmp_path / "missing")
    assert finalize(good.path).packets == 100  # finalizing twice is harmless
