"""The encodings of one published video, lowest first, and each viewer's switching between them.

A simulcast publisher sends its camera two or three times (RFC 8853 "rid" encodings, see
media/simulcast.py); each encoding is its own ``Publication`` (``rid``, ``layer``: 0 = lowest). A
non-simulcast video is a group of one: its layers are its VP8 temporal layers when it has some
(L1T3, media/temporal.py), and nothing here runs for it otherwise.

A viewer's video slot is attached to exactly one layer. ``media.layerchoice.choose`` says which; when
the choice changes, the slot keeps the current layer until a keyframe of the target layer arrives
(asked for through the target's rate-limited keyframe policy), then moves (``leave`` /
``continue_pictures``, called by ``Fanout._activate_waiting``): its sequence numbers and timestamps
continue (``Slot.stop``/``Slot.start``), and the VP8 picture id and TL0PICIDX continue through
per-slot offsets that the forwarding path writes into each packet (``forward_rewriting``), only for
the layers of a group with more than one layer. A temporal layer needs no keyframe: the forwarding
path moves the slot at the next frame that allows it, dropping the frames above its layer.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from media import stats, temporal, vp8
from media.layerchoice import HOLD, LayerState, choose, held_slots, hold_or_resume
from media.nackguard import RING_SIZE
from media.temporal import TL_ALL

if TYPE_CHECKING:
    from media.assembler import Frame
    from media.publication import Fanout
    from media.subscriber import Slot

LIVE_S = 1.0  # a layer with no packet for this long is not live (the browser stopped sending it)
# ... or for this many of its frame intervals (at least STOPPED_MIN_S) while a lower layer still
# flows: Chromium dropping its top encoding under CPU or bandwidth pressure is known at once.
STOPPED_FRAMES = 5
STOPPED_MIN_S = 0.25
RATE_WINDOW_S = 2.0  # each layer's bitrate is measured over this window
EVALUATE_S = 0.25  # how often the publisher's task re-evaluates every viewer's layer

_RING_MASK = RING_SIZE - 1


class LayerGroup:
    """One published video's layers (lowest first) and the viewers' pending switches.

    Simulcast: ``layers`` are the encodings. A single encoding (a group of one) has layers too when
    its VP8 frames carry temporal layer indices (L1T3): then layer ``i`` is "TIDs 0 to i" of the one
    publication, chosen the same way (media/layerchoice.py), and reached per slot at the next sync
    point instead of a keyframe (media/temporal.py)."""

    def __init__(self, participant_id: str, layers: list[Fanout]) -> None:
        self.participant_id = participant_id
        self.layers = layers
        self.spatial = len(layers) > 1
        self.states: dict[Slot, LayerState] = {}
        self.pending: dict[Slot, Fanout] = {}  # slot -> the layer it moves to at its next keyframe
        self.switches = 0  # completed switches (tests, metrics)
        self._samples: list[deque[tuple[float, int]]] = [
            deque() for _ in range(max(len(layers), temporal.MAX_TID + 1))
        ]
        # Frames counted per encoding: a simulcast layer that stops is known by its frame interval.
        self._frames: list[deque[tuple[float, int]]] = [deque() for _ in layers]
        for i, layer in enumerate(layers):
            layer.group = self
            layer.layer = i
            layer.rewrite_vp8 = self.spatial
            layer.vp8_ring = new_vp8_ring()
        if not self.spatial:
            layers[0].temporal = True

    @property
    def count(self) -> int:
        """How many layers there are to choose from (a single encoding's: its temporal layers)."""
        return len(self.layers) if self.spatial else max(1, self.layers[0].tl_count)

    @property
    def layered(self) -> bool:
        return self.count > 1

    # --- measurements ------------------------------------------------------------------------

    def live(self, index: int, now: float) -> bool:
        """Packets of this layer arrived within the last ``LIVE_S`` (and it is not muted); for a
        simulcast encoding, also within ``STOPPED_FRAMES`` of its frame intervals while a lower
        layer still flows."""
        if not self.spatial:
            layer = self.layers[0]
            if layer.closed or layer.paused or now - max(layer.received_at, layer.last_arrival) >= LIVE_S:
                return False
            return now - layer.tl_seen[index] < LIVE_S
        layer = self.layers[index]
        if layer.closed or layer.paused:
            return False
        silent = now - max(layer.received_at, layer.last_arrival)
        if silent < STOPPED_MIN_S:
            return True
        if silent >= LIVE_S:
            return False
        # Stopped while a lower layer goes on: no packet for a few of its frame intervals.
        interval = self.frame_interval(index)
        if interval is None or silent < STOPPED_FRAMES * interval:
            return True
        lower = self.layers[:index]
        return not any(now - max(low.received_at, low.last_arrival) < STOPPED_MIN_S for low in lower)

    def frame_interval(self, index: int) -> float | None:
        """Seconds between the encoding's frames over the last ``RATE_WINDOW_S`` (sampled), or None."""
        samples = self._frames[index]
        if len(samples) < 2:
            return None
        (t0, f0), (t1, f1) = samples[0], samples[-1]
        return (t1 - t0) / (f1 - f0) if f1 > f0 else None

    def _octets(self, index: int) -> int:
        if self.spatial:
            return self.layers[index].octets if index < len(self.layers) else 0
        return sum(self.layers[0].tl_octets[: index + 1])  # a temporal layer needs those below

    def sample(self, now: float) -> None:
        for index, samples in enumerate(self._samples):
            samples.append((now, self._octets(index)))
            while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_S:
                samples.popleft()
        for layer, frames in zip(self.layers, self._frames, strict=True):
            frames.append((now, layer.frames))
            while len(frames) > 2 and now - frames[1][0] >= RATE_WINDOW_S:
                frames.popleft()

    def bitrate(self, index: int) -> float:
        """Bits per second of the layer's payload over the last ``RATE_WINDOW_S`` (sampled)."""
        samples = self._samples[index]
        if len(samples) < 2:
            return 0.0
        (t0, o0), (t1, o1) = samples[0], samples[-1]
        return 8 * (o1 - o0) / (t1 - t0) if t1 > t0 else 0.0

    # --- viewers -----------------------------------------------------------------------------

    def state(self, slot: Slot) -> LayerState:
        state = self.states.get(slot)
        if state is None:
            state = self.states[slot] = LayerState()
        return state

    def place(self, slot: Slot, now: float) -> Fanout:
        """The layer a newly assigned slot starts on (the top one while nothing is live yet: the
        next evaluation moves it to a live one)."""
        index = choose(self.state(slot), self, now, slot)
        if not self.spatial:
            self._set_temporal(slot, self.count - 1 if index is None or index == HOLD else index)
            return self.layers[0]
        return self.layers[-1 if index is None else 0 if index == HOLD else index]

    def slots(self) -> list[Slot]:
        """Every slot attached to a layer of the group (started or waiting for its first keyframe)."""
        found = []
        for layer in self.layers:
            for slot in (*layer.active, *layer.waiting):
                if slot.publication is layer:
                    found.append(slot)
        return found

    def current(self, slot: Slot) -> int | None:
        """The layer the slot is on, or moving to."""
        target = self.pending.get(slot)
        if target is not None:
            return target.layer
        pub = slot.publication
        if not self.spatial:
            return min(slot.tl_target, self.count - 1) if pub is self.layers[0] else None
        return pub.layer if pub is not None and pub.group is self else None

    def evaluate(self, now: float) -> None:
        """Re-run the choice for every viewer; start the switches it asks for."""
        self.sample(now)
        if not self.layered:
            return
        for slot in [*self.slots(), *held_slots(self)]:
            target = choose(self.state(slot), self, now, slot)
            if target is None or hold_or_resume(self, slot, target):
                continue
            if target != self.current(slot):
                self.switch(slot, target)

    def switch(self, slot: Slot, index: int) -> None:
        """Move ``slot`` to layer ``index`` at that layer's next keyframe (asked for now); a temporal
        layer at the next frame that allows it (media/temporal.py), no keyframe asked for."""
        if not self.spatial:
            self._set_temporal(slot, index)
            return
        target = self.layers[index]
        current = slot.publication
        previous = self.pending.pop(slot, None)
        if previous is not None:
            previous.detach(slot)
        if current is None or current.group is not self or target is current:
            return
        if slot not in current.active:
            # Not started yet (waiting for its first keyframe): wait on the target instead.
            current.detach(slot)
            slot.publication = target
            target.attach(slot)
            return
        self.pending[slot] = target
        target.waiting.append(slot)
        target.request_keyframe()

    def _set_temporal(self, slot: Slot, index: int) -> None:
        target = TL_ALL if index >= self.count - 1 else index  # the top: whatever TIDs come
        if slot.tl_target != target:
            slot.tl_target = target
            self.switches += 1

    def forget(self, slot: Slot) -> None:
        """The slot leaves the group (released, or its viewer left)."""
        if not self.spatial:
            slot.tl_target = slot.tl_cur = TL_ALL  # the next publication in the slot: every frame
        self.cancel_switch(slot)
        self.states.pop(slot, None)

    def cancel_switch(self, slot: Slot) -> None:
        """The slot no longer waits for another layer's keyframe (its video stops, or it leaves)."""
        target = self.pending.pop(slot, None)
        if target is not None:
            target.detach(slot)

    def close(self) -> None:
        self.pending.clear()
        self.states.clear()


# --- the switch itself (called by Fanout._activate_waiting at the target's keyframe) -------------


def leave(slot: Slot, previous: Fanout, target: Fanout) -> tuple[int, int] | None:
    """The slot leaves ``previous`` for ``target``: its lines stop where the previous layer left
    them. Returns the last picture id and TL0PICIDX the viewer saw (None if it saw none)."""
    group = target.group
    if group is not None:
        group.pending.pop(slot, None)
    seen: tuple[int, int] | None = None
    if slot in previous.active:
        slot.stop()
        # The timestamp gap to the target's keyframe is counted from the previous layer's last
        # frame, not from now: the viewer's playout sees the real frame spacing.
        since = time.monotonic() - previous.last_arrival
        if 0 <= since < LIVE_S and slot.last_sent_at is not None:
            slot.last_sent_at -= since
        if previous.last_pic >= 0:
            seen = (previous.last_pic + slot.pic_off, previous.last_tl0 + slot.tl0_off)
    previous.detach(slot)
    slot.publication = target
    if group is not None:
        group.switches += 1
    return seen


def continue_pictures(slot: Slot, frame: Frame, seen: tuple[int, int]) -> None:
    """After ``slot.start`` at the target's keyframe: offsets so that its picture id follows the
    last one the viewer saw, and its TL0PICIDX the last TL0PICIDX (a keyframe is a TL0 picture)."""
    fields = vp8.picture_fields(frame.packets[0].payload)
    if fields is None:
        return
    _, bits, pid, tl0_pos, tl0 = fields
    if bits:
        slot.pic_off = (seen[0] + 1 - pid) % vp8.PICTURE_ID_MOD
    if tl0_pos >= 0:
        slot.tl0_off = (seen[1] + 1 - tl0) % vp8.TL0_MOD


# --- the forwarding path of a layered VP8 publication ----------------------------------------


def forward_rewriting(
    fanout: Fanout,
    frame: Frame,
    active: list[Slot],
    header: Any,
    extension: bytes | None,
    layer: tuple[int, bool, bool, bool] | None = None,
) -> list[Slot]:
    """``Fanout._forward`` for VP8 whose picture id and TL0PICIDX are written per slot: a simulcast
    layer (each viewer's offsets continue the layers it came from), or a video with temporal layers
    (``layer``: the frame's TID, Y, picture id present, frame start), where each slot decides at
    each frame's start whether it takes the frame (media/temporal.py); in a media worker the frame
    comes a packet at a time, and its later packets follow the decision. Returns the slots the
    packets went to.

    The descriptor is parsed once per packet (not per viewer), and its fields kept beside the
    forwarding ring so that a retransmission is rewritten for the viewer that asked
    (``patch_retransmission``). Per viewer it costs two or three byte writes.
    """
    sending = active
    packets = frame.packets
    if fanout.temporal and fanout.tl_count > 1:
        # A frame without a T bit in a layered stream: a base-layer packet that decides nothing.
        tid, sync, has_pid, begins = layer if layer is not None else (0, False, False, False)
        keyframe = frame.keyframe
        first_seq = fanout.next_seq if fanout.renumber else packets[0].ext_seq
        sending = []
        size = -1
        for slot in active:
            cur = slot.tl_cur
            if begins and slot.tl_target != cur:  # (no call for a slot that is where it wants)
                cur = temporal.select(slot, tid, sync, keyframe)
            if tid <= cur:
                if slot.tl_gap:
                    temporal.resume(slot, first_seq)
                sending.append(slot)
            else:
                if size < 0:
                    size = sum(len(p.payload) for p in packets)
                temporal.drop(slot, first_seq, len(packets), size, has_pid and begins)
    buffer = fanout._buffer
    vp8_ring = fanout.vp8_ring
    write_pid = vp8.write_picture_id
    start = 12 if extension is None else 12 + len(extension)  # the payload's offset in ``buf``
    for packet in packets:
        buf, seq, ts = buffer(packet, extension)
        fields = vp8.picture_fields(packet.payload)
        vp8_ring[seq & _RING_MASK] = (seq, fields)
        mark = 0x80 if packet.marker else 0
        if fields is None:
            pid_pos = tl0_pos = -1
            bits = pid = tl0 = 0
        else:
            pid_pos, bits, pid, tl0_pos, tl0 = fields
            fanout.last_pic = pid
            fanout.last_tl0 = tl0
            pid_pos += start
            if tl0_pos >= 0:
                tl0_pos += start
        for slot in sending:
            header(
                buf,
                1,
                mark | slot.pt,
                (seq + slot.seq_off) & 0xFFFF,
                (ts + slot.ts_off) & 0xFFFFFFFF,
                slot.ssrc,
            )
            if bits == 15:  # Chromium's: written in place, no call (vp8.write_picture_id's work)
                v = (pid + slot.pic_off) & 0x7FFF
                buf[pid_pos] = 0x80 | (v >> 8)
                buf[pid_pos + 1] = v & 0xFF
            elif bits:
                write_pid(buf, pid_pos, bits, pid + slot.pic_off)
            if tl0_pos >= 0:
                buf[tl0_pos] = (tl0 + slot.tl0_off) & 0xFF
            try:
                slot.sendto(slot.protect(buf), slot.addr)
            except Exception as exc:
                slot.fail(exc)
    stats.rtp_packets_sent += len(sending) * len(packets)
    return sending


def patch_retransmission(slot: Slot, fanout: Fanout, seq: int, buf: bytearray, pic_off: int) -> None:
    """Write ``slot``'s picture id (with ``pic_off``, the offset the packet was first sent with) and
    TL0PICIDX into a packet taken from the forwarding ring."""
    entry = fanout.vp8_ring[seq & _RING_MASK]
    if entry is None or entry[0] != seq or entry[1] is None:
        return
    pid_pos, bits, pid, tl0_pos, tl0 = entry[1]
    start = 12 + (4 + 4 * ((buf[14] << 8) | buf[15]) if buf[0] & 0x10 else 0)  # after extensions
    if bits:
        vp8.write_picture_id(buf, start + pid_pos, bits, pid + pic_off)
    if tl0_pos >= 0:
        buf[start + tl0_pos] = (tl0 + slot.tl0_off) & 0xFF


def new_vp8_ring() -> list[tuple[int, tuple[int, int, int, int, int] | None] | None]:
    return [None] * RING_SIZE
