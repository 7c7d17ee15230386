"""The composite export on real files: tracks written by the recorder's own TrackWriter from frames
encoded with PyAV (tests/support/session_maker.py), exported, then read back with ffprobe and decoded:
streams and duration, audio/video sync of two speakers' beeps and flashes, a speaker without ``share``
absent from the picture (their colour) and the sound (their tone), and a resume after a SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from recording.composite import CompositeExport, ExportBusy, ExportError, VideoSettings, read_state
from recording.composite.export import AUDIO_SHARE
from tests.support.session_maker import Capture, Speaker, make_session, withdraw

SETTINGS = VideoSettings(width=320, height=180, fps=25, preset="ultrafast")
A_HZ, B_HZ, C_HZ = 800.0, 1200.0, 3000.0
C_RGB = (30, 30, 220)


def _speakers() -> list[Speaker]:
    return [
        # A: from the start; the microphone's first frame 50 ms after the camera's.
        Speaker("p-a", (200, 30, 30), flashes=[1.0], beeps=[1.0], tone_hz=A_HZ, audio_delay=0.05),
        # B joins late (0.7 s), withdraws and consents again (a gap, two files), flashes in the second.
        Speaker(
            "p-b",
            (30, 200, 30),
            captures=[Capture(0.7, 2.2), Capture(2.6, 5.0)],
            flashes=[3.0],
            beeps=[3.0],
            tone_hz=B_HZ,
        ),
        # C recorded (media) but never granted share: a blue camera and a continuous 3 kHz tone.
        Speaker("p-c", C_RGB, share=False, tone_hz=C_HZ, tone_always=True, level=0.7),
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    session = make_session(tmp_path_factory.mktemp("session"), _speakers())
    CompositeExport(session, SETTINGS, segment_s=2.0).run()
    return session


def _ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def _frames(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def _sound(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        chunks = [f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)]
        start = c.streams.audio[0].start_time or 0
    samples = np.concatenate(chunks).astype(np.float64)
    assert start == 0
    return samples


def _tone_envelope(samples: np.ndarray, hz: float, hop: int = 240, win: int = 960) -> np.ndarray:
    """The amplitude of ``hz`` every ``hop`` samples (5 ms), over ``win``-sample windows."""
    t = np.arange(win) / 48_000
    probe = np.exp(-2j * math.pi * hz * t) * np.hanning(win)
    starts = range(0, len(samples) - win, hop)
    return np.array([abs(np.dot(samples[s : s + win], probe)) for s in starts]) / (win / 4)


def _onset(envelope: np.ndarray, after: float, hop_s: float = 0.005, win_s: float = 0.02) -> float:
    """When the tone starts after ``after`` seconds: the envelope's first crossing of half its peak
    (the window's centre)."""
    first = int(after / hop_s)
    peak = envelope[first:].max()
    index = first + int(np.argmax(envelope[first:] > peak / 2))
    return index * hop_s + win_s / 2


def _white_times(frames: list[tuple[float, np.ndarray]]) -> list[float]:
    """Frames where a flash shows: a visible patch of near-white pixels."""
    return [t for t, rgb in frames if (rgb.min(axis=2) > 220).sum() > 200]


def test_the_export_is_h264_and_aac_in_mp4_with_the_index_first(exported: Path) -> None:
    result = exported / "exports" / "composite.mp4"
    probe = _ffprobe(result)
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 180)
    assert streams["video"]["pix_fmt"] == "yuv420p"
    assert abs(float(probe["format"]["duration"]) - 5.0) < 0.1  # the last track ends at 5 s
    assert abs(float(streams["video"]["duration"]) - 5.0) < 0.05
    head = result.read_bytes()[:4096]
    assert head.find(b"moov") != -1 and head.find(b"moov") < max(head.find(b"mdat"), 4096)  # faststart
    state = read_state(exported)
    assert state is not None and state["status"] == "done" and state["progress"] == 1.0
    assert state["excluded_tracks"] == 2  # C's camera and microphone
    assert not list((exported / "exports").glob("composite.seg-*")), "parts are deleted once assembled"


def test_beeps_and_flashes_of_two_speakers_stay_in_sync(exported: Path) -> None:
    result = exported / "exports" / "composite.mp4"
    flashes = _white_times(_frames(result))
    sound = _sound(result)
    for hz, when in ((A_HZ, 1.0), (B_HZ, 3.0)):
        flash = min(t for t in flashes if t > when - 0.5)
        beep = _onset(_tone_envelope(sound, hz), when - 0.5)
        assert abs(flash - when) < 0.1, (hz, flash)  # at its true time on the export's clock
        assert abs(beep - when) < 0.1, (hz, beep)
        assert abs(beep - flash) < 0.1, f"{hz} Hz speaker: beep at {beep:.3f} s, flash at {flash:.3f} s"


def test_a_speaker_without_share_is_neither_seen_nor_heard(exported: Path) -> None:
    result = exported / "exports" / "composite.mp4"
    c_video = next((exported / "tracks").glob("p-c-video-*.webm"))
    c_audio = next((exported / "tracks").glob("p-c-audio-*.webm"))

    def blue_pixels(rgb: np.ndarray) -> int:
        r, g, b = (rgb[..., i].astype(int) for i in range(3))
        return int(((b > 150) & (r < 90) & (g < 90)).sum())

    # The detectors find C in C's own files (so their silence about the export means something)...
    assert all(blue_pixels(rgb) > 0.9 * rgb.shape[0] * rgb.shape[1] for _, rgb in _frames(c_video)[:5])
    own = _tone_envelope(_sound(c_audio), C_HZ)
    assert np.median(own) > 0.3
    # ...and not in the export: no blue in any frame, and the 3 kHz tone far below the speakers' beeps.
    frames = _frames(result)
    assert len(frames) == 125
    assert max(blue_pixels(rgb) for _, rgb in frames) == 0
    sound = _sound(result)
    spectrum = np.abs(np.fft.rfft(sound * np.hanning(len(sound))))
    freqs = np.fft.rfftfreq(len(sound), 1 / 48_000)

    def band(hz: float) -> float:
        return float(spectrum[(freqs > hz - 20) & (freqs < hz + 20)].max())

    assert band(A_HZ) > 100 * band(C_HZ), (band(A_HZ), band(C_HZ))  # > 40 dB below the beeps
    assert band(B_HZ) > 100 * band(C_HZ)


def test_a_withdrawal_after_the_export_invalidates_it_and_takes_the_speaker_out(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s", _speakers()[:2])
    CompositeExport(session, SETTINGS, segment_s=2.0).run()
    before = read_state(session)
    assert before is not None and len(before["tracks"]) == 6
    withdraw(session, "p-b")  # B's last decision now grants nothing
    CompositeExport(session, SETTINGS, segment_s=2.0).run()
    after = read_state(session)
    assert after is not None and after["fingerprint"] != before["fingerprint"]
    assert after["tracks"] == ["tracks/p-a-video-1.webm", "tracks/p-a-audio-1.webm"]
    sound = _sound(session / "exports" / "composite.mp4")
    assert np.median(_tone_envelope(sound, B_HZ)) < 0.01 and _tone_envelope(sound, B_HZ).max() < 0.02
    with pytest.raises(ExportError, match="nothing to export"):
        withdraw(session, "p-a")
        CompositeExport(session, SETTINGS, segment_s=2.0).run()


def test_a_second_export_of_the_same_session_at_once_is_refused(tmp_path: Path) -> None:
    session = make_session(tmp_path / "s", _speakers()[:1])
    exports = session / "exports"
    exports.mkdir()
    import fcntl

    with open(exports / "composite.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ExportBusy):
            CompositeExport(session, SETTINGS).run()


def test_an_export_killed_mid_way_resumes_from_its_last_finished_segment(tmp_path: Path) -> None:
    # Long enough that the kill lands between segments: 12 s at 640x360, 1 s segments.
    speakers = [
        Speaker(
            "p-a", (200, 30, 30), captures=[Capture(0.0, 12.0)], flashes=[9.0], beeps=[9.0], tone_hz=A_HZ
        ),
        Speaker("p-b", (30, 200, 30), captures=[Capture(0.0, 12.0)], beeps=[4.0], tone_hz=B_HZ),
    ]
    session = make_session(tmp_path / "s", speakers)
    command = [
        sys.executable, "-m", "recording", "export", str(session), "--composite", "--no-progress",
        "--size", "640x360", "--preset", "medium", "--segment-s", "1",
    ]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    state = None
    while time.monotonic() < deadline:
        state = read_state(session)
        if state is not None and len(state.get("segments_done") or []) >= 2:
            break
        assert child.poll() is None, child.communicate()
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert state is not None
    killed = read_state(session)
    assert killed is not None and killed["status"] == "running"  # as a SIGKILL leaves it
    done_before = set(killed["segments_done"])
    assert 2 <= len(done_before) < killed["segments_total"], killed["segments_done"]
    for i in done_before:
        assert (session / "exports" / f"composite.seg-{i:05d}.mp4").is_file()

    seen: list[float] = []
    CompositeExport(
        session,
        VideoSettings(640, 360, 25, "medium"),
        segment_s=1.0,
        progress=lambda p: seen.append(p.fraction),
    ).run()
    state = read_state(session)
    assert state is not None and state["status"] == "done"
    # The first figure reported is past the sound and the segments finished before the kill.
    resumed_at = len(done_before) / killed["duration_s"]
    assert min(seen) >= AUDIO_SHARE + (0.99 - AUDIO_SHARE) * resumed_at - 1e-3, (min(seen), done_before)
    result = session / "exports" / "composite.mp4"
    probe = _ffprobe(result)
    assert abs(float(probe["format"]["duration"]) - 12.0) < 0.1
    flashes = _white_times(_frames(result))
    assert flashes and abs(min(flashes) - 9.0) < 0.1
    beep = _onset(_tone_envelope(_sound(result), A_HZ), 8.5)
    assert abs(beep - 9.0) < 0.1


def test_the_command_line_reuses_a_finished_export_and_shows_its_bar(exported: Path) -> None:
    before = (exported / "exports" / "composite.mp4").stat().st_mtime_ns
    command = [
        sys.executable, "-m", "recording", "export", str(exported), "--composite", "--preset", "ultrafast",
        "--size", "320x180",
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().endswith("exports/composite.mp4")
    assert "100.0 %" in run.stdout and "done" in run.stdout  # the bar, at its end
    assert (exported / "exports" / "composite.mp4").stat().st_mtime_ns == before  # not made again
    bad = subprocess.run([*command[:-1], "17x9"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--size" in bad.stderr


def test_a_screen_share_is_shown_large_with_the_cameras_beside_it(tmp_path: Path) -> None:
    speakers = [
        Speaker("p-a", (200, 30, 30), captures=[Capture(0.0, 4.0)], screen=Capture(1.0, 3.0)),
        Speaker("p-b", (30, 200, 30), captures=[Capture(0.0, 4.0)]),
    ]
    session = make_session(tmp_path / "s", speakers)
    CompositeExport(session, SETTINGS, segment_s=2.0).run()
    frames = dict(_frames(session / "exports" / "composite.mp4"))

    def colour(rgb: np.ndarray, x: float, y: float) -> tuple[int, ...]:
        return tuple(int(v) for v in rgb[int(y * rgb.shape[0]), int(x * rgb.shape[1])])

    def near(got: tuple[int, ...], want: tuple[int, ...]) -> bool:
        return all(abs(g - w) < 40 for g, w in zip(got, want, strict=True))

    during = frames[2.0]
    assert near(colour(during, 0.35, 0.5), (55, 225, 225))  # the share (A's colour inverted), large, left
    right = {colour(during, 0.9, y) for y in (0.3, 0.4, 0.6, 0.7)}
    assert any(near(c, (200, 30, 30)) for c in right) and any(near(c, (30, 200, 30)) for c in right)
    after = frames[3.6]
    assert not any(near(colour(after, x, 0.5), (55, 225, 225)) for x in (0.2, 0.35, 0.6, 0.9))


def test_one_process_and_two_workers_make_the_same_export(tmp_path: Path) -> None:
    speakers = [
        Speaker("p-a", (200, 30, 30), captures=[Capture(0.0, 6.0)], flashes=[4.5], beeps=[4.5], tone_hz=A_HZ),
        Speaker("p-b", (30, 200, 30), captures=[Capture(1.0, 6.0)], beeps=[2.0], tone_hz=B_HZ),
    ]
    results = {}
    for jobs in (1, 2):
        session = make_session(tmp_path / f"jobs{jobs}", speakers)
        seen: list[float] = []
        CompositeExport(
            session, SETTINGS, segment_s=1.0, jobs=jobs, progress=lambda p, seen=seen: seen.append(p.fraction)
        ).run()
        state = read_state(session)
        assert state is not None and state["status"] == "done"
        assert state["segments_done"] == list(range(state["segments_total"]))
        assert seen == sorted(seen)  # workers report as they go; the sum of what they drew only grows
        assert seen[-1] == 1.0
        result = session / "exports" / "composite.mp4"
        frames = _frames(result)
        results[jobs] = (len(frames), _white_times(frames))
    assert results[1][0] == results[2][0] == 6 * SETTINGS.fps
    assert results[1][1] == results[2][1] and abs(min(results[2][1]) - 4.5) < 0.1
