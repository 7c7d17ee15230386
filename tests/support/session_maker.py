"""A recorded session made without a node: frames generated and encoded with PyAV (VP8, Opus), written
by the recorder's own ``recording.writer.TrackWriter`` exactly as a recording writes them (WebM, RTP
timestamps, live-mode clusters, finalized), with a manifest and a consent ledger like the recorder's.

Each speaker's camera is one colour, with white flashes at given times, and their microphone is
silent but for tone beeps (or a continuous tone) at given times: an export's sync and content can
then be read back from its decoded frames and its sound spectrum.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from recording.keys import PersonKey
from recording.ledger import Ledger
from recording.writer import TrackWriter

WIDTH, HEIGHT, FPS = 160, 96, 30
RATE = 48_000
POLICY = "2026-12"


@dataclass
class Capture:
    start: float  # seconds from the session's t0 (wall clock: T0 + start)
    end: float


@dataclass
class Speaker:
    pid: str
    rgb: tuple[int, int, int]
    share: bool = True
    captures: list[Capture] = field(default_factory=lambda: [Capture(0.0, 5.0)])
    flashes: list[float] = field(default_factory=list)  # session seconds: 0.2 s of white
    beeps: list[float] = field(default_factory=list)  # session seconds: 0.2 s of the tone
    tone_hz: float = 1000.0
    tone_always: bool = False  # a continuous tone instead of beeps
    level: float = 0.5
    audio_delay: float = 0.0  # the microphone's first frame this much after the camera's
    screen: Capture | None = None  # also shares a screen (its colour is the inverse)
    key: PersonKey | None = None  # their tracks sealed with it (recording/sealed.py), as a node does


FLASH_S = BEEP_S = 0.2
T0 = 1_795_000_000.0


def _video(
    path_stem: Path, sp: Speaker, cap: Capture, rgb: tuple[int, int, int], flashes: list[float]
) -> dict:
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.time_base = Fraction(1, FPS)
    encoder.framerate = Fraction(FPS)
    encoder.gop_size = FPS
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "auto-alt-ref": "0"}
    encoder.bit_rate = 300_000
    writer = TrackWriter(path_stem, "video/VP8", clock=lambda: T0 + cap.start, max_queue=100_000, key=sp.key)
    plain = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    plain[:] = rgb
    white = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    count = round((cap.end - cap.start) * FPS)
    for i in range(count + 1):
        last = i == count
        frames = []
        if not last:
            t = cap.start + i / FPS
            lit = any(f <= t < f + FLASH_S for f in flashes)
            frame = av.VideoFrame.from_ndarray(white if lit else plain, format="rgb24").reformat(
                format="yuv420p"
            )
            frame.pts = i
            frames = encoder.encode(frame)
        else:
            frames = encoder.encode(None)
        for packet in frames:
            assert packet.pts is not None
            writer.write(bytes(packet), 1000 + packet.pts * (90_000 // FPS), packet.is_keyframe)
    writer.close()
    return _entry(sp.pid, "video", writer, cap, "vp8")


def _audio(path_stem: Path, sp: Speaker, cap: Capture, beeps: list[float], delay: float) -> dict:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = RATE
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.bit_rate = 48_000
    encoder.time_base = Fraction(1, RATE)
    start = cap.start + delay
    writer = TrackWriter(path_stem, "audio/opus", clock=lambda: T0 + start, max_queue=100_000, key=sp.key)
    total = round((cap.end - start) * RATE)
    t = start + np.arange(total) / RATE
    on = np.ones(total, dtype=bool) if sp.tone_always else np.zeros(total, dtype=bool)
    for b in beeps:
        on |= (t >= b) & (t < b + BEEP_S)
    signal = np.where(on, sp.level * np.sin(2 * math.pi * sp.tone_hz * t), 0.0)
    pcm = (signal * 32767).astype(np.int16)
    step = 960
    for i in range(0, total - step + 1, step):
        frame = av.AudioFrame.from_ndarray(pcm[i : i + step].reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = i
        for packet in encoder.encode(frame):
            assert packet.pts is not None
            writer.write(bytes(packet), 5000 + packet.pts, True)
    for packet in encoder.encode(None):
        assert packet.pts is not None
        writer.write(bytes(packet), 5000 + packet.pts, True)
    writer.close()
    return _entry(sp.pid, "audio", writer, Capture(start, cap.end), "opus")


def _entry(pid: str, kind: str, writer: TrackWriter, cap: Capture, codec: str) -> dict:
    return {
        "participant_id": pid,
        "kind": kind,
        "source": "camera",
        "codec": codec,
        "file": f"tracks/{writer.path.name}",
        "capture_started_at": T0 + cap.start,
        "capture_ended_at": T0 + cap.end,
        "first_frame_at": writer.first_wall_time,
        "duration_s": round(writer.written_duration, 3),
        "frames": writer.stats.frames_written,
        "bytes": writer.stats.bytes_written,
        "dropped_frames": writer.stats.dropped,
        "finalized": writer.finalized is not None,
        "error": None,
        "sealed": writer.key is not None,
        "key_id": None if writer.key is None else writer.key.key_id,
    }


def make_session(directory: Path, speakers: list[Speaker], session_id: str = "20261203T080000Z-test") -> Path:
    """Write the session (tracks, manifest, ledger) into ``directory``; return it."""
    tracks_dir = directory / "tracks"
    tracks_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(directory / "consent.jsonl")
    tracks: list[dict] = []
    participants = []
    for sp in speakers:
        scopes = ["comments", "media", *(["share"] if sp.share else [])]
        record = {
            "record_id": f"consent-{sp.pid}",
            "stage_id": "stage-x",
            "session_id": session_id,
            "participant_id": sp.pid,
            "identity": f"id-{sp.pid}",
            "name": sp.pid,
            "scopes": scopes,
            "policy_version": POLICY,
            "decision": "granted",
            "at": T0,
            "method": "join_prompt",
        }
        ledger.append(record)
        participants.append({"participant_id": sp.pid, "name": sp.pid, "role": "speaker", "consent": record})
        for n, cap in enumerate(sp.captures, 1):
            flashes = [f for f in sp.flashes if cap.start <= f < cap.end]
            beeps = [b for b in sp.beeps if cap.start <= b < cap.end]
            tracks.append(_video(tracks_dir / f"{sp.pid}-video-{n}", sp, cap, sp.rgb, flashes))
            tracks.append(_audio(tracks_dir / f"{sp.pid}-audio-{n}", sp, cap, beeps, sp.audio_delay))
        if sp.screen is not None:
            inverse = tuple(255 - c for c in sp.rgb)
            entry = _video(tracks_dir / f"{sp.pid}-screen-video-1", sp, sp.screen, inverse, [])  # type: ignore[arg-type]
            entry["source"] = "screen"
            tracks.append(entry)
    end = max(c.end for sp in speakers for c in sp.captures)
    manifest = {
        "version": 1,
        "stage_id": "stage-x",
        "title": "test",
        "session_id": session_id,
        "status": "complete",
        "started_at": T0,
        "stopped_at": T0 + end,
        "policy_version": POLICY,
        "participants": participants,
        "tracks": tracks,
        "timeline": "timeline.msgpack",
        "timeline_json": "timeline.json",
        "ledger": "consent.jsonl",
        "ledger_count": ledger.count,
        "ledger_head": ledger.head,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return directory


def withdraw(directory: Path, pid: str) -> None:
    """Append ``pid``'s withdrawal of every scope to the session's ledger (their last decision)."""
    ledger = Ledger(directory / "consent.jsonl")
    ledger.append(
        {
            "record_id": f"withdraw-{pid}",
            "stage_id": "stage-x",
            "session_id": "x",
            "participant_id": pid,
            "identity": f"id-{pid}",
            "name": pid,
            "scopes": [],
            "policy_version": POLICY,
            "decision": "withdrawn",
            "at": T0 + 10,
            "method": "withdrawal",
        }
    )
