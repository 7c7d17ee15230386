"""Copies of each frame's last packet for a viewer on a steadily lossy link.

A lost packet is NACKed when the receiver sees the gap, which for a frame's *last* packet is only
when the next frame arrives (a frame interval later: 33-66 ms). Chromium does not wait that long
for a frame its successor does not need: it decodes the successor and drops the late frame
(``framesDropped``), so NACK alone loses about one frame per lost end-of-frame packet. Small frames
(a low layer, a still slide) are one packet each, so most random losses there are of that kind; a
360p frame is about three, and one lost packet in three still ends a frame (measured at 5 % loss:
94-96 % of the frames decoded on 360p while copies went to one-packet frames only, 99 % with them).

Every frame's last packet gets a copy, one packet per frame more (≈ 10-30 % of a layer's packets).
Copies never go to a link that is filling (media/bwe.py ``Estimate``: lasting loss above
``loss_high``, a REMB drop, a REMB below the media sent): a capped link's loss sits in the hold
region for seconds before it binds, and copies there delayed the down-switch and kept its queue full.

For a viewer whose receiver reports show lasting random loss (between ``BweConfig.loss_low`` and
``loss_high``: the hold region, where the link carries what is sent but drops some of it) each
frame's last packet is sent again a few milliseconds later, as RTX when negotiated. Either copy
repairs the frame in time; the copy's bytes count in what the viewer is sent (the estimate sees
them). Congestion (loss at or above ``loss_high``) turns the copies off: they would add to it.

``slots`` is how many viewers' video slots send copies, so the forwarding path pays one module
attribute check per frame while nobody needs them (media/publication.py ``Fanout._forward``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from media.publication import Fanout
    from media.subscriber import Slot

DELAY_S = 0.005  # after the original: a short burst of loss does not take both
slots = 0  # video slots with ``redundant`` set, across the process


def copy_later(fanout: Fanout, sent_to: Iterable[Slot], seq: int) -> None:
    """Schedule a copy of ``seq``, a frame's last packet (the fanout's numbering), for each slot in
    ``sent_to`` that wants copies, with the slot's offsets as they are now (a switch meanwhile
    cancels it)."""
    loop = asyncio.get_running_loop()
    for slot in sent_to:
        if slot.redundant:
            out_seq = (seq + slot.seq_off) & 0xFFFF
            loop.call_later(DELAY_S, slot.send_copy, fanout, seq, out_seq, slot.pic_off)


def set_redundant(slot: Slot, on: bool) -> None:
    global slots
    if slot.redundant != on:
        slot.redundant = on
        slots += 1 if on else -1
