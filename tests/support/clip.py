"""Pre-encoded media sources: a cached VP8 + Opus clip and tracks that replay it in real time.

The load generator must not encode at run time, so the clip is encoded once with the ffmpeg CLI
(libvpx, libopus, single-threaded and bit-exact, hence deterministic) and cached. The tracks return
``av.Packet`` objects: aiortc's sender then only re-packetizes them (``encoder.pack``) and never
encodes. aiortc ignores PLI/FIR for such sources, so :func:`attach_keyframe_requests` routes the
sender's keyframe requests to the video track, which jumps to the next keyframe of the clip.
"""

from __future__ import annotations

import asyncio
import fractions
import functools
import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

WIDTH, HEIGHT, FPS = 640, 360, 30
GOP = 30  # one keyframe per second
DURATION_S = 10
VIDEO_BITRATE = "1M"
AUDIO_BITRATE = "48k"
AUDIO_RATE = 48_000
AUDIO_FRAME_S = 0.020

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
VIDEO_PTS_STEP = 90_000 // FPS
AUDIO_PTS_STEP = int(AUDIO_RATE * AUDIO_FRAME_S)

# Behind schedule by more than this (a stalled event loop), the track rebases its clock instead of
# bursting the backlog out at once.
MAX_LAG_S = 0.5

# fmt: off
_FFMPEG_ARGS = [
    "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration={DURATION_S}",
    "-f", "lavfi", "-i",
    f"sine=frequency=440:beep_factor=4:sample_rate={AUDIO_RATE}:duration={DURATION_S}",
    "-map", "0:v", "-map", "1:a",
    # CBR-ish VP8, fixed GOP, no alt-ref (invisible) frames, single thread for determinism.
    "-c:v", "libvpx", "-threads", "1", "-b:v", VIDEO_BITRATE, "-minrate", VIDEO_BITRATE,
    "-maxrate", VIDEO_BITRATE, "-bufsize", "500k", "-g", str(GOP), "-keyint_min", str(GOP),
    "-auto-alt-ref", "0", "-lag-in-frames", "0", "-deadline", "good", "-cpu-used", "4",
    "-error-resilient", "1",
    "-c:a", "libopus", "-b:a", AUDIO_BITRATE, "-ac", "1", "-frame_duration", "20",
    "-application", "audio",
    "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
]
# fmt: on


def default_cache_dir() -> Path:
    """``$MEDSTAGE_CLIP_CACHE``, else ``~/.cache/medstage``."""
    env = os.environ.get("MEDSTAGE_CLIP_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "medstage"


def clip_path(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the cached clip, generating it with ffmpeg on first use."""
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha256(" ".join(_FFMPEG_ARGS).encode()).hexdigest()[:12]
    path = directory / f"clip-vp8-opus-{WIDTH}x{HEIGHT}-{digest}.webm"
    if path.exists():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    # Write to a temporary name and rename: concurrent load generators never see half a file.
    fd, tmp = tempfile.mkstemp(suffix=".webm", dir=directory)
    os.close(fd)
    try:
        subprocess.run(
            [
                "ffmpeg",
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-y",
                *_FFMPEG_ARGS,
                "-f",
                "webm",
                tmp,
            ],
            check=True,
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@dataclass(frozen=True)
class Clip:
    """The demuxed clip: encoded video frames (VP8) and audio frames (Opus, 20 ms each)."""

    video: tuple[bytes, ...]
    audio: tuple[bytes, ...]
    keyframes: tuple[int, ...]  # indexes into ``video``

    @property
    def video_bitrate(self) -> float:
        """Mean video bitrate in bit/s."""
        return sum(map(len, self.video)) * 8 * FPS / len(self.video)


@functools.lru_cache(maxsize=4)
def load_clip(cache_dir: str | os.PathLike[str] | None = None) -> Clip:
    """Demux the cached clip into memory (about 1.3 MB)."""
    video: list[bytes] = []
    audio: list[bytes] = []
    with av.open(str(clip_path(cache_dir))) as container:
        for packet in container.demux():
            if packet.size == 0:  # the demuxer's flush packets
                continue
            (video if packet.stream.type == "video" else audio).append(bytes(packet))
    keyframes = tuple(i for i, frame in enumerate(video) if is_vp8_keyframe(frame))
    if not keyframes or keyframes[0] != 0:
        raise RuntimeError("the clip does not start with a VP8 keyframe")
    return Clip(video=tuple(video), audio=tuple(audio), keyframes=keyframes)


def is_vp8_keyframe(frame: bytes) -> bool:
    """RFC 6386 §9.1: bit 0 of the frame tag is 0 for a key frame."""
    return len(frame) > 0 and frame[0] & 1 == 0


class _PacedTrack(MediaStreamTrack):
    """Returns one pre-encoded frame per period, on a wall-clock schedule, looping forever."""

    _period: float
    _time_base: fractions.Fraction
    _pts_step: int

    def __init__(self, frames: tuple[bytes, ...]) -> None:
        super().__init__()
        self._frames = frames
        self._index = 0  # next frame of the clip
        self._sent = 0  # frames returned so far; drives pts and the schedule
        self._start: float | None = None
        self.bytes_sent = 0
        self.loops = 0
        self.lag_resets = 0

    @property
    def frames_sent(self) -> int:
        return self._sent

    def _next_index(self) -> int:
        return self._index

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._start is None:
            self._start = now
        due = self._start + self._sent * self._period
        if due > now:
            await asyncio.sleep(due - now)
        elif now - due > MAX_LAG_S:
            self._start = now - self._sent * self._period
            self.lag_resets += 1
        if self.readyState != "live":
            raise MediaStreamError

        index = self._next_index()
        data = self._frames[index]
        self._index = index + 1
        if self._index == len(self._frames):
            self._index = 0  # index 0 is a keyframe
            self.loops += 1
        packet = av.Packet(data)
        packet.pts = self._sent * self._pts_step
        packet.time_base = self._time_base
        self._sent += 1
        self.bytes_sent += len(data)
        return packet


class EncodedVideoTrack(_PacedTrack):
    """The clip's VP8 frames at 30 fps; :meth:`request_keyframe` makes the next frame a keyframe."""

    kind = "video"
    _period = 1 / FPS
    _time_base = VIDEO_TIME_BASE
    _pts_step = VIDEO_PTS_STEP

    def __init__(
        self, clip: Clip | None = None, *, start_index: int = 0, answer_requests: bool = True
    ) -> None:
        """``start_index``: the clip frame to send first (mid-GOP: a publisher the SFU joins late);
        without ``answer_requests`` keyframe requests are counted but the GOP goes on (a publisher
        slow to answer PLI): what precedes the next keyframe are delta frames the SFU must hold back."""
        self.clip = clip if clip is not None else load_clip()
        super().__init__(self.clip.video)
        self._index = start_index % len(self.clip.video)
        self._answer_requests = answer_requests
        self._keyframe_wanted = False
        self.keyframe_requests = 0
        self.keyframes_sent = 0

    def request_keyframe(self) -> None:
        """Jump to the next keyframe of the clip: the next ``recv()`` returns it."""
        self.keyframe_requests += 1
        self._keyframe_wanted = self._answer_requests

    def _next_index(self) -> int:
        index = self._index
        if self._keyframe_wanted:
            self._keyframe_wanted = False
            keyframes = self.clip.keyframes
            index = next((k for k in keyframes if k >= index), keyframes[0])
        if index in self.clip.keyframes:
            self.keyframes_sent += 1
        return index


class EncodedAudioTrack(_PacedTrack):
    """The clip's Opus frames, 20 ms each."""

    kind = "audio"
    _period = AUDIO_FRAME_S
    _time_base = AUDIO_TIME_BASE
    _pts_step = AUDIO_PTS_STEP

    def __init__(self, clip: Clip | None = None) -> None:
        self.clip = clip if clip is not None else load_clip()
        super().__init__(self.clip.audio)


def attach_keyframe_requests(sender: object, track: EncodedVideoTrack) -> None:
    """Route PLI/FIR received by ``sender`` to ``track``.

    aiortc 1.16 ``RTCRtpSender._handle_rtcp_packet`` calls ``self._send_keyframe()`` on PLI/FIR,
    which only sets a flag read by the encoder path; an instance attribute shadows the method.
    """
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise RuntimeError("aiortc RTCRtpSender._send_keyframe is gone: re-read rtcrtpsender.py")
    sender._send_keyframe = track.request_keyframe  # type: ignore[attr-defined]
