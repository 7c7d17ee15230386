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


@dataclass(slots=True)
class LayerState:
    """What the choice knows of one viewer's slot besides the group."""

    cap: int | None = None  # highest layer index allowed (0 = lowest); None: no cap


def choose(state: LayerState, group: LayerGroup, now: float) -> int | None:
    """The layer index the slot should take, or None for "no video" (no layer is live).

    The highest live layer not above ``state.cap``; if every live layer is above the cap, the lowest
    live one (a viewer is never left without video while some layer flows).
    """
    live = [i for i in range(len(group.layers)) if group.live(i, now)]
    if not live:
        return None
    if state.cap is not None:
        allowed = [i for i in live if i <= state.cap]
        return allowed[-1] if allowed else live[0]
    return live[-1]
