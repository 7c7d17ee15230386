"""A frame consumer (the recorder) that follows a simulcast video's highest live layer.

The recorder writes one file per track. Tapping one encoding of a simulcast video records nothing
while the browser does not send it (Chromium sends two layers of a 360p camera; a poor uplink stops
the top ones), so ``TopLayerTap`` taps every layer of the group and passes on the frames of one: the
highest live, re-checked every ``CHECK_S``. It moves only at a keyframe of the target layer (asked
for when the target changes) so the file's decoder follows, and rewrites the RTP timestamps so the
file's timeline continues: the target's keyframe comes the wall-clock time after the last frame
written, whatever the layers' own timestamp bases. Frames only: nothing decodes, nothing blocks
(the sink must only queue, like every tap).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from media.assembler import Frame
    from media.layergroup import LayerGroup
    from media.publication import Fanout

CHECK_S = 0.25  # how often the highest live layer is looked for (the layer evaluation's pace)
CLOCK_RATE = 90_000  # video's RTP clock
# The least step at a switch: a simulcast browser's layers carry the same capture instants, so an
# up-switch's keyframe often arrives with the frame just written of the layer below; 1 ms keeps
# the file's timestamps distinct in Matroska's millisecond time base.
MIN_GAP = CLOCK_RATE // 1000


class TopLayerTap:
    """Feeds ``sink(frame, timestamp)`` the frames of ``group``'s highest live layer, one layer at a
    time, with timestamps continued across switches."""

    def __init__(
        self,
        group: LayerGroup,
        sink: Callable[[Frame, int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.group = group
        self.sink = sink
        self.clock = clock
        self.current: Fanout | None = None  # the layer written now
        self.target: Fanout | None = None  # the layer to move to at its next keyframe
        self.switches = 0
        self._ts_off = 0
        self._last_ts: int | None = None  # the last timestamp passed on (rewritten)
        self._last_at = 0.0
        self._check_at = float("-inf")
        self._taps: list[tuple[Fanout, Callable[[Frame], None]]] = []

    def start(self) -> None:
        for layer in self.group.layers:

            def tap(frame: Frame, layer: Fanout = layer) -> None:
                self.on_frame(layer, frame)

            layer.taps.append(tap)
            self._taps.append((layer, tap))
        self._retarget(self.clock())

    def stop(self) -> None:
        for layer, tap in self._taps:
            if tap in layer.taps:
                layer.taps.remove(tap)
        self._taps = []

    def _highest_live(self, now: float) -> Fanout:
        layers = self.group.layers
        live = [layer for i, layer in enumerate(layers) if self.group.live(i, now)]
        return live[-1] if live else layers[-1]  # nothing live yet: the top one, as a viewer's slot

    def _retarget(self, now: float) -> None:
        self._check_at = now + CHECK_S
        best = self._highest_live(now)
        if best is self.current:
            self.target = None
        elif best is not self.target:
            self.target = best
            best.request_keyframe()

    def on_frame(self, layer: Fanout, frame: Frame) -> None:
        now = self.clock()
        if now >= self._check_at:
            self._retarget(now)
        if layer is self.target and frame.keyframe:
            self._switch(layer, frame, now)
        if layer is not self.current:
            return
        ts = (frame.timestamp + self._ts_off) & 0xFFFFFFFF
        self._last_ts = ts
        self._last_at = now
        self.sink(frame, ts)

    def _switch(self, layer: Fanout, frame: Frame, now: float) -> None:
        if self._last_ts is not None:
            # The target's keyframe follows the last frame written by the time that passed.
            gap = max(MIN_GAP, int((now - self._last_at) * CLOCK_RATE))
            self._ts_off = (self._last_ts + gap - frame.timestamp) & 0xFFFFFFFF
            self.switches += 1
        self.current = layer
        self.target = None
