"""Which layer of a simulcast group a viewer's video slot takes: ONE function, ``choose``.

The default is the highest live layer. A viewer's ``LayerState.cap`` (the highest layer it may take,
None for no cap) is the input a bandwidth estimate or a viewer's preference sets; the switching itself
(at a keyframe of the target layer, continuous numbering) is media/layergroup.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from media.layergroup import LayerGroup
    from media.subscriber import Slot


@dataclass(slots=True)
class LayerState:
    """What the choice knows of one viewer's slot besides the group."""

    cap: int | None = None  # highest layer index allowed (0 = lowest); None: no cap


def choose(state: LayerState, group: LayerGroup, now: float, slot: Slot | None = None) -> int | None:
    """The layer index the slot should take, or None for "no change possible" (no layer is live).

    With the slot's viewer known (``slot.subscriber``, a ``media.subscriber.Subscriber``), its
    bandwidth estimate and preference decide (media/bwe.py: hysteresis, audio paid first); where
    that decision is "audio only" for lack of bandwidth, the viewer keeps the lowest live layer
    (a preference of "audio" holds the video slot back before any layer is chosen,
    media/viewers.py). Without a viewer (tests of the switching), the highest live layer.
    Either way, never above ``state.cap`` while some live layer is at or below it.
    """
    count = group.count  # simulcast encodings, or a single encoding's temporal layers
    live = [group.live(i, now) for i in range(count)]
    if not any(live):
        return None
    indices = [i for i, up in enumerate(live) if up]
    decide = getattr(getattr(slot, "subscriber", None), "choose", None)
    if slot is not None and decide is not None:
        rates = [group.bitrate(i) for i in range(count)]
        target: int | None = decide(group.participant_id, rates, live, group.current(slot), now)
        if target is None or not live[target]:
            target = indices[0]
    else:
        target = indices[-1]
    if state.cap is not None and target > state.cap:
        allowed = [i for i in indices if i <= state.cap]
        target = allowed[-1] if allowed else indices[0]
    return target
