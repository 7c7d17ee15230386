"""Which layer of a simulcast group a viewer's video slot takes: ONE function, ``choose``.

The default is the highest live layer. A viewer's ``LayerState.cap`` (the highest layer it may take,
None for no cap) is the input a bandwidth estimate or a viewer's preference sets; the switching itself
(at a keyframe of the target layer, continuous numbering) is media/layergroup.py's.

``HOLD``: the viewer's estimate says not even the lowest layer fits besides its audio (preference
"auto"; media/bwe.py needs loss besides a low budget for that): ``hold`` stops the slot's video
(audio goes on) and ``resume`` starts it again at a keyframe once a layer fits (through a padding
probe, or the estimate's up-switch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from media.bwe import Preference

if TYPE_CHECKING:
    from media.layergroup import LayerGroup
    from media.subscriber import Slot

HOLD = -1  # ``choose``'s answer: hold the slot's video back (audio only for lack of bandwidth)


@dataclass(slots=True)
class LayerState:
    """What the choice knows of one viewer's slot besides the group."""

    cap: int | None = None  # highest layer index allowed (0 = lowest); None: no cap
    held: bool = False  # its video held back for lack of bandwidth (``hold``)


def choose(state: LayerState, group: LayerGroup, now: float, slot: Slot | None = None) -> int | None:
    """The layer index the slot should take, ``HOLD``, or None for "no change possible" (no layer
    is live).

    With the slot's viewer known (``slot.subscriber``, a ``media.subscriber.Subscriber``), its
    bandwidth estimate and preference decide (media/bwe.py: hysteresis, audio paid first); where
    that decision is "audio only" for lack of bandwidth under the preference "auto", ``HOLD`` (a
    preference of "audio" holds the video slot back before any layer is chosen, media/viewers.py).
    Without a viewer (tests of the switching), the highest live layer. Either way, never above
    ``state.cap`` while some live layer is at or below it.
    """
    count = group.count  # simulcast encodings, or a single encoding's temporal layers
    live = [group.live(i, now) for i in range(count)]
    if not any(live):
        return None
    indices = [i for i, up in enumerate(live) if up]
    subscriber = getattr(slot, "subscriber", None)
    decide = getattr(subscriber, "choose", None)
    if slot is not None and decide is not None:
        if state.held and not slot.held:
            state.held = False  # resumed meanwhile (a preference set again): forwarding again
        rates = [group.bitrate(i) for i in range(count)]
        current = None if state.held else group.current(slot)
        target: int | None = decide(group.participant_id, rates, live, current, now)
        if target is None:
            layers = getattr(subscriber, "layers", None)
            auto = layers is not None and layers.preference_for(group.participant_id) is Preference.AUTO
            if auto:
                return HOLD
        if target is None or not live[target]:
            target = indices[0]
    else:
        target = indices[-1]
    if state.cap is not None and target > state.cap:
        allowed = [i for i in indices if i <= state.cap]
        target = allowed[-1] if allowed else indices[0]
    return target


def held_slots(group: LayerGroup) -> list[Slot]:
    """The group's slots whose video is held back (``hold``): evaluated as well, to resume them."""
    return [slot for slot, state in group.states.items() if state.held and slot.held]


def hold_or_resume(group: LayerGroup, slot: Slot, target: int) -> bool:
    """Apply ``choose``'s answer where it holds or resumes the slot; True when it did."""
    state = group.state(slot)
    if target == HOLD:
        if not state.held:
            hold(group, slot)
        return True
    if state.held:
        resume(group, slot, target)
        return True
    return False


def hold(group: LayerGroup, slot: Slot) -> None:
    """Stop forwarding the group's video to ``slot`` (audio goes on); the slot stays assigned."""
    group.state(slot).held = True
    group.cancel_switch(slot)
    layer = slot.publication
    if layer is not None:
        if slot in layer.active:  # its sequence and timestamp lines continue from here
            slot.stop()
        layer.detach(slot)
    slot.held = True  # no sender reports, its receiver reports move no estimate


def resume(group: LayerGroup, slot: Slot, index: int) -> None:
    """Forward layer ``index`` to a held slot again, from its next keyframe (asked for now)."""
    group.state(slot).held = False
    slot.held = False
    layer = group.layers[index if group.spatial else 0]
    if not group.spatial:  # a temporal layer: the frames up to it, from the next keyframe
        group.switch(slot, index)
    slot.publication = layer
    layer.attach(slot)
