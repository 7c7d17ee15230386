"""The export's sound: every shared audio track decoded, placed at its true time, mixed, AAC-encoded;
and, from the same pass, each person's level per window for the active-speaker layout.

Streaming: tracks are decoded frame by frame and mixed one chunk (``CHUNK_S``) at a time, so memory does
not grow with the session. Audio is ≈ 1 % of the export's work, so it is one pass (redone whole after an
interruption) rather than segments: an AAC stream cut into separately encoded segments clicks at every
joint (each encoder primes from silence).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Generator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from recording.composite.layout import WINDOW_S
from recording.composite.plan import PlannedTrack, opened

RATE = 48_000
CHUNK_S = 1.0  # mixed and encoded per chunk: a multiple of WINDOW_S
AAC_BITRATE = 96_000
_SNAP = RATE // 1000  # a frame starting within 1 ms of where the last ended continues it (ms timestamps)

assert (CHUNK_S / WINDOW_S).is_integer()


@dataclass
class _Piece:
    start: int  # sample index from the origin
    samples: np.ndarray  # float32, mono


def _pieces(track: PlannedTrack) -> Generator[_Piece, None, None]:
    """The track's decoded sound, mono float32, each piece at its sample position from the origin."""
    with opened(track) as container:  # a sealed track decrypted as it is read
        stream = container.streams.audio[0]
        resampler: av.AudioResampler | None = None
        expected: int | None = None
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:  # one damaged packet: its place stays silent
                continue
            for frame in frames:
                if frame.pts is None or frame.time_base is None:
                    continue
                start = round((track.start + float(frame.pts * frame.time_base)) * RATE)
                if expected is not None and abs(start - expected) <= _SNAP:
                    start = expected  # Matroska keeps milliseconds: do not jitter by a sample
                if frame.format.name != "fltp" or frame.sample_rate != RATE:
                    resampler = resampler or av.AudioResampler(
                        format="fltp", layout=frame.layout.name, rate=RATE
                    )
                    frames_out = resampler.resample(frame)
                else:
                    frames_out = [frame]
                for out in frames_out:
                    data = out.to_ndarray()
                    mono = (
                        data.mean(axis=0, dtype=np.float32)
                        if data.shape[0] > 1
                        else data[0].astype(np.float32)
                    )
                    yield _Piece(start, mono)
                    start += mono.shape[0]
                expected = start


class _Feed:
    """One track's pieces, consumed chunk by chunk."""

    def __init__(self, track: PlannedTrack) -> None:
        self.track = track
        self.pieces = _pieces(track)
        self.pending: _Piece | None = None
        self.done = False

    def add_into(self, mix: np.ndarray, level: np.ndarray, pos: int) -> None:
        """Add what falls in ``[pos, pos + len(mix))`` into ``mix``, and its squares into ``level``."""
        end = pos + mix.shape[0]
        while not self.done:
            if self.pending is None:
                try:
                    self.pending = next(self.pieces)
                except StopIteration:
                    self.done = True
                    return
            piece = self.pending
            if piece.start >= end:
                return
            a, b = max(piece.start, pos), min(piece.start + piece.samples.shape[0], end)
            if b > a:
                part = piece.samples[a - piece.start : b - piece.start]
                mix[a - pos : b - pos] += part
                level[a - pos : b - pos] += part * part
            if piece.start + piece.samples.shape[0] > end:
                return  # the rest belongs to the next chunk
            self.pending = None

    def close(self) -> None:
        self.pieces.close()


def mix_audio(
    tracks: list[PlannedTrack],
    duration: float,
    out_path: Path,
    progress: Callable[[float], None] | None = None,
) -> dict[str, list[float]]:
    """Write the mix of ``tracks`` to ``out_path`` (AAC in MP4, ``duration`` seconds, silence where
    nobody is heard) and return each participant's level (dBFS) per ``WINDOW_S`` window; a screen
    share's sound is mixed but does not make its sharer the speaker."""
    total = max(1, round(duration * RATE))
    chunk = round(CHUNK_S * RATE)
    window = round(WINDOW_S * RATE)
    feeds = [_Feed(t) for t in tracks]
    people = sorted({t.participant_id for t in tracks if t.source != "screen"})
    levels: dict[str, list[float]] = {pid: [] for pid in people}
    tmp = out_path.with_name(out_path.name + ".tmp")
    try:
        with av.open(os.fspath(tmp), "w", format="mp4") as out:
            stream = out.add_stream("aac", rate=RATE, layout="mono")
            stream.bit_rate = AAC_BITRATE
            pos = 0
            while pos < total:
                n = min(chunk, total - pos)
                mix = np.zeros(n, dtype=np.float32)
                squares = {pid: np.zeros(n, dtype=np.float32) for pid in people}
                scratch = np.zeros(n, dtype=np.float32)
                for feed in feeds:
                    sink = (
                        squares.get(feed.track.participant_id, scratch)
                        if feed.track.source != "screen"
                        else scratch
                    )
                    feed.add_into(mix, sink, pos)
                for pid in people:
                    for w in range(0, n, window):
                        mean = float(squares[pid][w : w + window].mean())
                        levels[pid].append(10 * math.log10(mean) if mean > 1e-12 else -120.0)
                np.clip(mix, -1.0, 1.0, out=mix)
                frame = av.AudioFrame.from_ndarray(mix.reshape(1, -1), format="flt", layout="mono")
                frame.sample_rate = RATE
                frame.pts = pos
                frame.time_base = Fraction(1, RATE)
                for packet in stream.encode(frame):
                    out.mux(packet)
                pos += n
                if progress is not None:
                    progress(pos / total)
            for packet in stream.encode(None):
                out.mux(packet)
    finally:
        for feed in feeds:
            feed.close()
    os.replace(tmp, out_path)
    return levels
