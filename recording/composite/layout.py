"""Who is shown where in the composite export: pure rules, no I/O, no media.

Times are seconds from the export's origin. Inputs are the shared video tracks' spans (when each
file has frames) and each person's audio level per window (computed offline from the consented
audio tracks); outputs are :class:`Scene` intervals (constant layouts) and, for a scene, the tiles'
rectangles on the canvas.

Rules (docs/recording.md, "Composite export"):

- a screen share on: the share large, the cameras small beside it;
- else one camera: it fills the canvas; several: the active speaker large, the others small;
- no clear speaker for a while with three cameras or more (a panel listening, a silence): a grid.

The active speaker is decided with hysteresis so the layout does not flicker: someone takes the
large tile only after being clearly the loudest (``margin_db`` above everyone else, above
``threshold_db``) for ``switch_s``; the speaker keeps it through pauses, and only after
``silence_s`` without a clear speaker does a panel of three or more turn into a grid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Rect",
    "Scene",
    "Span",
    "SpeakerRules",
    "arrange",
    "scenes",
    "speakers",
]

WINDOW_S = 0.5  # audio level windows: the layout's resolution in time


@dataclass(frozen=True, slots=True)
class Span:
    """One shared video file: whose, which source, from when to when (seconds from the origin)."""

    key: str  # the file, relative to the session: unique
    participant_id: str
    source: str  # "camera" or "screen"
    start: float
    end: float

    def covers(self, t: float) -> bool:
        return self.start <= t < self.end


@dataclass(frozen=True, slots=True)
class SpeakerRules:
    threshold_db: float = -45.0  # quieter than this is nobody speaking (dBFS, RMS of a window)
    margin_db: float = 6.0  # the loudest must lead the second by this much to be "clear"
    switch_s: float = 1.5  # clearly loudest this long before taking the large tile
    silence_s: float = 4.0  # no clear speaker this long: a panel (3+ cameras) becomes a grid


@dataclass(frozen=True, slots=True)
class Scene:
    """A constant layout from ``start`` to ``end``: ``big`` (a span key, or None for a grid or an
    empty canvas) and ``small`` tiles, in a stable order."""

    start: float
    end: float
    mode: str  # "empty", "single", "speaker", "screen", "grid"
    big: str | None
    small: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "end": self.end,
            "mode": self.mode,
            "big": self.big,
            "small": list(self.small),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scene:
        big = data.get("big")
        return cls(
            start=float(data["start"]),
            end=float(data["end"]),
            mode=str(data["mode"]),
            big=None if big is None else str(big),
            small=tuple(str(s) for s in data.get("small") or ()),
        )


def dominant(levels: Mapping[str, float], rules: SpeakerRules) -> str | None:
    """The clearly loudest person of one window, or None (silence, or two at once)."""
    ranked = sorted(levels.items(), key=lambda kv: kv[1], reverse=True)
    if not ranked or ranked[0][1] < rules.threshold_db:
        return None
    if (
        len(ranked) > 1
        and ranked[1][1] >= rules.threshold_db
        and ranked[0][1] - ranked[1][1] < rules.margin_db
    ):
        return None
    return ranked[0][0]


def speakers(
    levels: Mapping[str, Sequence[float]], windows: int, rules: SpeakerRules = SpeakerRules()
) -> list[tuple[str | None, bool]]:
    """Per window: (the speaker holding the large tile, whether someone spoke clearly lately).

    ``levels[pid][i]`` is the person's level (dBFS) in window ``i`` (missing windows: silence).
    """
    need = max(1, math.ceil(rules.switch_s / WINDOW_S))
    quiet_after = max(1, math.ceil(rules.silence_s / WINDOW_S))
    current: str | None = None
    candidate: str | None = None
    streak = 0
    quiet = quiet_after  # nobody has spoken yet
    out: list[tuple[str | None, bool]] = []
    for i in range(windows):
        now = {pid: (lv[i] if i < len(lv) else -math.inf) for pid, lv in levels.items()}
        loudest = dominant(now, rules)
        if loudest is None:
            quiet += 1
            candidate, streak = None, 0
        else:
            quiet = 0
            if loudest == candidate:
                streak += 1
            else:
                candidate, streak = loudest, 1
            if loudest != current and streak >= need:
                current = loudest
        out.append((current, quiet < quiet_after))
    return out


def _scene_at(
    t: float, spans: Sequence[Span], speaker: str | None, active: bool
) -> tuple[str, str | None, tuple[str, ...]]:
    live = [s for s in spans if s.covers(t)]
    screens = [s for s in live if s.source == "screen"]
    cameras = [s for s in live if s.source != "screen"]
    if screens:
        big = max(screens, key=lambda s: s.start)  # the latest share is the one being talked to
        others = [s for s in screens if s is not big] + cameras
        return "screen", big.key, tuple(s.key for s in others)
    if not cameras:
        return "empty", None, ()
    if len(cameras) == 1:
        return "single", cameras[0].key, ()
    by_speaker = [s for s in cameras if s.participant_id == speaker]
    if by_speaker and (active or len(cameras) < 3):
        big = by_speaker[0]
        return "speaker", big.key, tuple(s.key for s in cameras if s is not big)
    return "grid", None, tuple(s.key for s in cameras)


def scenes(
    spans: Sequence[Span],
    levels: Mapping[str, Sequence[float]],
    duration: float,
    rules: SpeakerRules = SpeakerRules(),
) -> list[Scene]:
    """The export's layout as constant intervals covering ``[0, duration)``.

    Changes happen on window boundaries (speaker decisions) and exactly where a file starts or ends
    (a late joiner appears at their first frame, not up to half a window later).
    """
    if duration <= 0:
        return []
    spans = sorted(spans, key=lambda s: (s.start, s.key))
    windows = max(1, math.ceil(duration / WINDOW_S))
    decided = speakers(levels, windows, rules)
    cuts = {0.0, duration}
    cuts.update(i * WINDOW_S for i in range(1, windows))
    for s in spans:
        cuts.update(t for t in (s.start, s.end) if 0 < t < duration)
    edges = sorted(cuts)
    out: list[Scene] = []
    for a, b in itertools.pairwise(edges):
        if b - a < 1e-9:
            continue
        speaker, active = decided[min(int(a / WINDOW_S + 1e-9), windows - 1)]
        mode, big, small = _scene_at(a, spans, speaker, active)
        if out and (out[-1].mode, out[-1].big, out[-1].small) == (mode, big, small):
            last = out[-1]
            out[-1] = Scene(last.start, b, mode, big, small)
        else:
            out.append(Scene(a, b, mode, big, small))
    return out


def scene_at(layout: Sequence[Scene], t: float) -> Scene | None:
    """The scene showing at ``t`` (``layout`` sorted, as :func:`scenes` makes it)."""
    lo, hi = 0, len(layout)
    while lo < hi:
        mid = (lo + hi) // 2
        if layout[mid].end <= t:
            lo = mid + 1
        else:
            hi = mid
    return layout[lo] if lo < len(layout) and layout[lo].start <= t else None


# --- geometry ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rect:
    x: int
    y: int
    w: int
    h: int


def _even(v: float) -> int:
    """A size: even, at least 2."""
    return max(2, int(v) // 2 * 2)


def _at(v: float) -> int:
    """A position: even, at least 0."""
    return max(0, int(v) // 2 * 2)


def arrange(scene: Scene, width: int, height: int) -> dict[str, Rect]:
    """Each tile's rectangle (even coordinates and sizes, for 4:2:0 video) on a ``width`` x ``height``
    canvas. A tile is a box: the picture is fitted inside it keeping its aspect (:func:`fit`)."""
    if scene.big is None:
        return _grid(scene.small, width, height)
    if not scene.small:
        return {scene.big: Rect(0, 0, _even(width), _even(height))}
    # A strip of small tiles on the right, 16:9 each, at most four high before they shrink.
    rows = max(4, len(scene.small))
    small_h = _even(height / rows)
    small_w = _even(small_h * 16 / 9)
    big_w = _even(width - small_w)
    out = {scene.big: Rect(0, 0, big_w, _even(height))}
    top = _at((height - small_h * len(scene.small)) / 2)
    for i, key in enumerate(scene.small):
        out[key] = Rect(big_w, top + i * small_h, small_w, small_h)
    return out


def _grid(keys: Sequence[str], width: int, height: int) -> dict[str, Rect]:
    if not keys:
        return {}
    cols = math.ceil(math.sqrt(len(keys)))
    rows = math.ceil(len(keys) / cols)
    cell_w, cell_h = _even(width / cols), _even(height / rows)
    out = {}
    for i, key in enumerate(keys):
        r, c = divmod(i, cols)
        in_row = min(cols, len(keys) - r * cols)  # centre a last row that is not full
        left = _at((width - in_row * cell_w) / 2)
        out[key] = Rect(left + c * cell_w, r * cell_h + _at((height - rows * cell_h) / 2), cell_w, cell_h)
    return out


def fit(src_w: int, src_h: int, box: Rect) -> Rect:
    """The largest rectangle of the source's aspect inside ``box``, centred (letterbox/pillarbox)."""
    if src_w <= 0 or src_h <= 0:
        return box
    scale = min(box.w / src_w, box.h / src_h)
    w, h = min(box.w, _even(src_w * scale)), min(box.h, _even(src_h * scale))
    return Rect(box.x + _at((box.w - w) / 2), box.y + _at((box.h - h) / 2), w, h)
