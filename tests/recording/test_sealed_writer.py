"""Track writers with the publisher's key: sealed files that decode (PyAV) only through the key,
finalized and repaired like plain ones, a SIGKILL losing no more than with a plain file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import av
import av.error
import pytest

from recording.keys import key_to_dict, new_key
from recording.repair import RepairFailed, is_finalized, marker_path, repair_session
from recording.sealed import MAGIC, SealedKeyMissing, inspect, key_id_of, open_plaintext
from recording.tracks import open_track
from recording.vault import KeyRing
from recording.writer import TrackWriter
from tests.conftest import ROOT
from tests.recording.test_writer import (
    AUDIO_BASE,
    AUDIO_STEP,
    VIDEO_BASE,
    VIDEO_STEP,
    write_audio,
    write_video,
)
from tests.support.clip import FPS, HEIGHT, WIDTH, Clip, load_clip

EBML = b"\x1a\x45\xdf\xa3"  # the first bytes of every WebM / Matroska file
KEY = new_key("alice", 1.0)
RING = KeyRing([KEY])


@pytest.fixture(scope="module")
def clip() -> Clip:
    return load_clip()


class Read:
    """Every packet and frame of a sealed track, decoded through the key."""

    def __init__(self, path: Path, ring: KeyRing = RING) -> None:
        self.packets: list[tuple[float, bytes]] = []
        self.frames = 0
        self.size = (0, 0)
        with open_track(path, ring) as container:
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
                    break
                if packet.size == 0:
                    continue
                assert packet.pts is not None
                self.packets.append((float(packet.pts * tb), bytes(packet)))
                for frame in packet.decode():
                    self.frames += 1
                    if isinstance(frame, av.VideoFrame):
                        self.size = (frame.width, frame.height)

    @property
    def end(self) -> float:
        return self.packets[-1][0] if self.packets else 0.0


def seeks(path: Path, to: float) -> bool:
    """By the cues (a finalized file's index): the demuxer lands on a keyframe at or before ``to``."""
    with open_track(path, RING) as container:
        stream = container.streams[0]
        assert stream.time_base is not None
        try:
            container.seek(int(to / stream.time_base), stream=stream)
        except av.error.FFmpegError:
            return False
        packet = next(container.demux(stream))
        return packet.pts is not None and float(packet.pts * stream.time_base) <= to + 0.001


def test_a_keyed_writer_seals_every_byte_and_the_key_gives_back_every_frame(
    tmp_path: Path, clip: Clip
) -> None:
    errors: list[BaseException] = []
    video = TrackWriter(tmp_path / "alice-video", "video/VP8", max_queue=1000, key=KEY,
                        on_error=lambda w, exc: errors.append(exc))  # fmt: skip
    audio = TrackWriter(tmp_path / "alice-audio", "audio/opus", max_queue=1000, key=KEY,
                        on_error=lambda w, exc: errors.append(exc))  # fmt: skip
    write_video(video, clip, range(len(clip.video)))
    write_audio(audio, clip, range(len(clip.audio)))
    video.close()
    audio.close()
    assert errors == []
    assert (video.path.name, audio.path.name) == ("alice-video.webm.sealed", "alice-audio.webm.sealed")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alice-audio.webm.sealed",
        "alice-video.webm.sealed",
    ]
    for path in (video.path, audio.path):
        raw = path.read_bytes()
        assert raw.startswith(MAGIC) and EBML not in raw and key_id_of(path) == KEY.key_id
        assert clip.video[0][:64] not in raw and clip.audio[3] not in raw
        assert inspect(path).truncated_bytes == 0
        with open_plaintext(path, RING) as plain:
            assert plain.read(4) == EBML
    v, a = Read(video.path), Read(audio.path)
    assert [p for _, p in v.packets] == list(clip.video) and v.frames == len(clip.video)
    assert v.size == (WIDTH, HEIGHT)
    assert [p for _, p in a.packets] == list(clip.audio) and a.frames == len(clip.audio)
    # Finalized through the key: a duration, cues that seek, no marker.
    assert v.duration == pytest.approx(len(clip.video) / FPS, abs=0.002)
    assert a.duration == pytest.approx(len(clip.audio) * 0.020, abs=0.002)
    assert video.finalized is not None and video.finalized.packets == len(clip.video)
    assert seeks(video.path, 5.5) and seeks(audio.path, 7.0)
    assert is_finalized(video.path, RING) and not is_finalized(video.path)  # no key: cannot tell
    with pytest.raises(SealedKeyMissing):
        open_plaintext(video.path, KeyRing())


def test_without_a_key_the_writer_writes_a_plain_file(tmp_path: Path, clip: Clip) -> None:
    writer = TrackWriter(tmp_path / "bob-audio", "audio/opus", max_queue=1000)
    write_audio(writer, clip, range(50))
    writer.close()
    assert writer.path.name == "bob-audio.webm" and writer.path.read_bytes().startswith(EBML)
    assert key_id_of(writer.path) is None


CHILD = textwrap.dedent(
    """
    import json, sys, time
    from recording.keys import key_from_dict
    from recording.writer import TrackWriter
    from tests.support.clip import FPS, load_clip

    VIDEO_BASE, VIDEO_STEP, AUDIO_BASE, AUDIO_STEP = map(int, sys.argv[2:])
    key = key_from_dict(json.loads(sys.stdin.readline()))  # never on the command line
    clip = load_clip()
    video = TrackWriter(sys.argv[1] + "/erin-video", "video/vp8", key=key)
    audio = TrackWriter(sys.argv[1] + "/erin-audio", "audio/opus", key=key)
    start = time.monotonic()
    v = a = 0
    while True:
        tv, ta = v / FPS, a * 0.02
        time.sleep(max(0.0, start + min(tv, ta) - time.monotonic()))
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


def test_sigkill_leaves_sealed_files_readable_to_within_a_second_and_repair_needs_the_key(
    tmp_path: Path, clip: Clip
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path),
         *(str(n) for n in (VIDEO_BASE, VIDEO_STEP, AUDIO_BASE, AUDIO_STEP))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(json.dumps(key_to_dict(KEY)) + "\n")
    child.stdin.flush()
    written = {"video": 0.0, "audio": 0.0}
    try:
        for line in child.stdout:
            kind, t = line.split()
            written[kind] = float(t)
            if min(written.values()) >= 3.1:
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        rest, _ = child.communicate(timeout=10)
    for line in rest.splitlines():
        kind, t = line.split()
        written[kind] = float(t)

    video, audio = tmp_path / "erin-video.webm.sealed", tmp_path / "erin-audio.webm.sealed"
    assert marker_path(video).exists() and marker_path(audio).exists()
    kept: dict[str, Any] = {}
    for kind, path, frame_s in (("video", video, 1 / FPS), ("audio", audio, 0.02)):
        assert EBML not in path.read_bytes()
        decoded = Read(path)
        assert decoded.packets and decoded.frames == len(decoded.packets)
        kept[kind] = decoded
        lost = written[kind] - (decoded.end + frame_s)
        print(f"{kind}: written {written[kind]:.3f} s, lost {lost:.3f} s ({inspect(path).chunks} chunks)")
        assert lost <= 1.0

    with pytest.raises(RepairFailed) as failure:  # no key: left as it is, and said
        repair_session(tmp_path)
    assert all("not available" in line for line in failure.value.messages)
    assert marker_path(video).exists()

    messages = repair_session(tmp_path, RING)
    assert len(messages) == 2, messages
    for kind, path in (("video", video), ("audio", audio)):
        after = Read(path)
        assert after.duration is not None and after.duration >= kept[kind].end
        assert [p for _, p in after.packets] == [p for _, p in kept[kind].packets]
        assert not marker_path(path).exists() and key_id_of(path) == KEY.key_id
        assert EBML not in path.read_bytes()
    assert seeks(video, 2.0) and seeks(audio, 0.5)
    assert repair_session(tmp_path, RING) == []
