"""The export's picture: the shared video tracks decoded as the output clock advances, laid out per
scene (recording/composite/layout.py) on a 4:2:0 canvas, H.264-encoded one segment at a time.

Each track is decoded forward only, once per run (a segment continues where the previous one left
its decoders): WebRTC video has few keyframes, so seeking per segment could decode a file from its
start again and again. After a resume the first segment seeks once (to the keyframe before it).
Memory: one decoded frame and one scaled tile per track, whatever the session's length.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.frame import VideoFrame

from recording.composite.layout import Rect, Scene, arrange, fit, scene_at
from recording.composite.plan import PlannedTrack

HOLD_S = 1.0  # a track with no new frame for longer (a paused camera): its tile shows the placeholder
BLACK = (16, 128, 128)  # Y, U, V (limited range)
PLACEHOLDER = (40, 128, 128)  # dark grey: someone is there, nothing to show


@dataclass(frozen=True, slots=True)
class VideoSettings:
    width: int = 1280
    height: int = 720
    fps: int = 25
    preset: str = "veryfast"
    crf: int = 23
    threads: int = 0  # 0: libx264 picks (one per core)

    def to_dict(self) -> dict[str, object]:
        return {
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "preset": self.preset,
            "crf": self.crf,
        }


@dataclass
class _Source:
    """One shared video track, decoded forward as the export's clock asks for its frames."""

    track: PlannedTrack
    frames: Iterator[VideoFrame] | None = None
    container: av.container.InputContainer | None = None
    files: ExitStack | None = None
    current: VideoFrame | None = None
    current_t: float = -1.0
    upcoming: VideoFrame | None = None
    upcoming_t: float = 0.0
    ended: bool = False
    tiles: dict[tuple[int, int, int, int], np.ndarray] = field(default_factory=dict)

    def _open(self, t: float) -> None:
        self.files = ExitStack()  # the container, and a sealed file's decrypting stream under it
        container = self.track.open(self.files)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        offset = t - self.track.start
        if offset > 1.0 and stream.time_base is not None:
            try:  # to the keyframe before t (a finalized file has cues)
                container.seek(int(offset / stream.time_base), stream=stream, backward=True)
            except av.error.FFmpegError:
                self.files.close()
                self.files = ExitStack()
                container = self.track.open(self.files)
                stream = container.streams.video[0]
        self.container = container
        self.frames = self._decode(container, stream)

    @staticmethod
    def _decode(
        container: av.container.InputContainer, stream: av.video.stream.VideoStream
    ) -> Iterator[VideoFrame]:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.error.InvalidDataError:  # a damaged frame: the tile holds the previous one
                continue

    def frame_at(self, t: float) -> VideoFrame | None:
        """The frame showing at ``t`` (seconds from the origin), or None (nothing to show)."""
        if not self.track.start <= t < self.track.end:
            return None
        if self.frames is None:
            self._open(t)
        assert self.frames is not None
        while not self.ended:
            if self.upcoming is None:
                frame = next(self.frames, None)
                if frame is None:
                    self.ended = True
                    break
                if frame.pts is None or frame.time_base is None:
                    continue
                self.upcoming, self.upcoming_t = frame, self.track.start + float(frame.pts * frame.time_base)
            if self.upcoming_t > t + 1e-6:
                break
            self.current, self.current_t, self.upcoming = self.upcoming, self.upcoming_t, None
            self.tiles.clear()
        if self.current is None or t - self.current_t > HOLD_S:
            return None
        return self.current

    def tile(self, frame: VideoFrame, box: Rect) -> tuple[Rect, np.ndarray]:
        """The frame scaled into ``box`` (aspect kept), as a yuv420p array; cached until the frame changes."""
        inner = fit(frame.width, frame.height, box)
        key = (inner.x, inner.y, inner.w, inner.h)
        data = self.tiles.get(key)
        if data is None:
            # Bilinear, not swscale's bicubic default: a quarter less time for tiles of talking heads and
            # slides at most 2x up or down, where the two cannot be told apart.
            scaled = frame.reformat(
                width=inner.w, height=inner.h, format="yuv420p", interpolation="BILINEAR"
            )
            data = self.tiles[key] = scaled.to_ndarray()
        return inner, data

    def close(self) -> None:
        if self.files is not None:
            self.files.close()
        self.files = None
        self.container = self.frames = None


class Canvas:
    """A yuv420p picture as one array (Y rows, then U and V as PyAV lays them out)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.data = np.empty((height * 3 // 2, width), dtype=np.uint8)
        self.y = self.data[:height]
        self.u = self.data[height : height + height // 4].reshape(height // 2, width // 2)
        self.v = self.data[height + height // 4 :].reshape(height // 2, width // 2)

    def fill(self, color: tuple[int, int, int], box: Rect | None = None) -> None:
        if box is None:
            box = Rect(0, 0, self.width, self.height)
        self.y[box.y : box.y + box.h, box.x : box.x + box.w] = color[0]
        cy, cx, ch, cw = box.y // 2, box.x // 2, box.h // 2, box.w // 2
        self.u[cy : cy + ch, cx : cx + cw] = color[1]
        self.v[cy : cy + ch, cx : cx + cw] = color[2]

    def paste(self, box: Rect, tile: np.ndarray) -> None:
        """``tile``: a yuv420p array of ``box``'s size (``to_ndarray`` of a reformatted frame)."""
        w, h = box.w, box.h
        self.y[box.y : box.y + h, box.x : box.x + w] = tile[:h]
        u = tile[h : h + h // 4].reshape(h // 2, w // 2)
        v = tile[h + h // 4 :].reshape(h // 2, w // 2)
        self.u[box.y // 2 : (box.y + h) // 2, box.x // 2 : (box.x + w) // 2] = u
        self.v[box.y // 2 : (box.y + h) // 2, box.x // 2 : (box.x + w) // 2] = v


class Compositor:
    """Draws the export's frame at any time; holds one decoder per shared video track."""

    def __init__(
        self, tracks: Sequence[PlannedTrack], layout: Sequence[Scene], settings: VideoSettings
    ) -> None:
        self.sources = {t.file: _Source(t) for t in tracks}
        self.layout = list(layout)
        self.settings = settings
        self.canvas = Canvas(settings.width, settings.height)
        self._boxes: dict[int, dict[str, Rect]] = {}

    def draw(self, t: float) -> np.ndarray:
        canvas = self.canvas
        canvas.fill(BLACK)
        scene = scene_at(self.layout, t)
        if scene is not None:
            boxes = self._boxes.get(id(scene))
            if boxes is None:
                boxes = self._boxes[id(scene)] = arrange(scene, canvas.width, canvas.height)
            for key, box in boxes.items():
                source = self.sources.get(key)
                frame = source.frame_at(t) if source is not None else None
                if source is None or frame is None:
                    canvas.fill(PLACEHOLDER, box)
                    continue
                inner, tile = source.tile(frame, box)
                canvas.paste(inner, tile)
        # Tracks not on screen still advance, so a tile that appears later shows the right frame
        # without a burst of decoding (and a long-hidden track does not hold a stale one).
        for key, source in self.sources.items():
            if scene is None or (key != scene.big and key not in scene.small):
                source.frame_at(t)
        return canvas.data

    def close(self) -> None:
        for source in self.sources.values():
            source.close()


def encode_segment(
    compositor: Compositor,
    first_frame: int,
    frames: int,
    path: Path,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Frames ``first_frame`` .. ``first_frame + frames - 1`` of the export into ``path`` (H.264 in MP4,
    timestamps from 0, written to a temporary name and renamed when complete)."""
    s = compositor.settings
    tmp = path.with_name(path.name + ".tmp")
    time_base = Fraction(1, s.fps)
    with av.open(os.fspath(tmp), "w", format="mp4") as out:
        stream = out.add_stream(
            "libx264",
            rate=s.fps,
            options={
                "preset": s.preset,
                "crf": str(s.crf),
                # No B-frames: then dts == pts, and segments join end to end without a negative dts.
                "bf": "0",
                "g": str(s.fps * 2),  # a keyframe every 2 s: a seek lands close to where it aims
            },
        )
        stream.width, stream.height, stream.pix_fmt = s.width, s.height, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.thread_count = s.threads
        for i in range(frames):
            n = first_frame + i
            data = compositor.draw(n / s.fps)
            frame = VideoFrame.from_ndarray(data, format="yuv420p")
            frame.pts = i
            frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
            if progress is not None and i % s.fps == 0:
                progress(i)
        for packet in stream.encode(None):
            out.mux(packet)
    os.replace(tmp, path)
