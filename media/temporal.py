"""VP8 temporal layers (``scalabilityMode: "L1T3"``): which frames each viewer of a single-encoding
video gets, and how its stream stays continuous when some are dropped. Pure: slots in, slots out.

A publisher that cannot simulcast sends one encoding whose frames carry a temporal layer index (TID,
RFC 7741 §4.2 T bit): with L1T3 the pattern is TID 0, 2, 1, 2, ... so TID 0 alone is a quarter of the
frame rate, TIDs 0-1 half, all of them the full rate. A viewer's slot forwards the frames of
``tl_cur`` and below. Its layer choice (``tl_target``, set by media/layergroup.py from
media/layerchoice.py like a simulcast layer) is reached:

- down at once, at any frame boundary (nothing later needs the frames no longer sent);
- up only where the decoder can follow: at a keyframe (to the target at once), or at a frame of
  exactly the next layer with the Y bit ("layer sync": it depends on TID 0 frames only). One layer a
  step: a TID 2 sync frame does not make the TID 1 frames after it decodable (they may reference
  earlier TID 1 frames the viewer never got). LiveKit's VP8 temporal layer selector is the model.

A dropped frame leaves no trace: the slot's sequence offset shrinks by its packets and its picture id
offset by one (TL0PICIDX is unchanged: TID 0 frames are never dropped), so the viewer sees gap-free
sequence numbers and picture ids (a gap in picture ids makes libwebrtc's frame reference finder wait
for the "missing" frame). Each change of offsets is kept as a mark, so a NACK for an older packet is
mapped back with the offsets it was sent with (``source``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from media.vp8 import PICTURE_ID_MOD

if TYPE_CHECKING:
    from media.subscriber import Slot

TL_ALL = 3  # the highest TID the descriptor can carry (2 bits): "every temporal layer"
MAX_TID = 3
MAX_MARKS = 128  # offset changes remembered per slot: ≈ 4 s of dropping every other frame at 30 fps,
# more than the forwarding ring (media/nackguard.RING_SIZE packets) holds at a temporal layer's rates
_BEFORE_ANY = -(1 << 62)  # the first mark covers everything forwarded before the first drop
_GAP = 1 << 62  # a mark's offset saying "dropped from here": these packets were never sent


def select(slot: Slot, tid: int, sync: bool, keyframe: bool) -> int:
    """At a frame boundary: move the slot's forwarded layer towards its target; returns it (the frame
    is forwarded when its ``tid`` is at or below)."""
    cur = slot.tl_cur
    target = slot.tl_target
    if target < cur:
        cur = slot.tl_cur = target
    elif target > cur:
        if keyframe:
            cur = slot.tl_cur = target
        elif sync and tid == cur + 1:
            cur = slot.tl_cur = tid
    return cur


def drop(slot: Slot, first_seq: int, packets: int, size: int, has_picture_id: bool) -> None:
    """The slot does not get this frame (``packets`` packets from ``first_seq``, the forwarded
    space, ``size`` payload bytes): its numbering closes over it, and its sender reports and sent
    bitrate leave it out."""
    if not slot.tl_gap:
        marks = slot.tl_marks
        if not marks:
            marks.append((_BEFORE_ANY, slot.seq_off, slot.pic_off))
        marks.append((first_seq, _GAP, 0))
        if len(marks) > MAX_MARKS:
            del marks[0]
        slot.tl_gap = True
    slot.seq_off -= packets
    slot.packet_base += packets  # the SR counts what the publication forwarded less these
    slot.octet_base += size
    slot.tl_skipped += size + 12 * packets
    if has_picture_id:
        slot.pic_off = (slot.pic_off - 1) % PICTURE_ID_MOD


def resume(slot: Slot, first_seq: int) -> None:
    """The first frame forwarded after a drop: from its first packet ``first_seq`` (the forwarded
    space), the slot's current offsets apply."""
    marks = slot.tl_marks
    marks.append((first_seq, slot.seq_off, slot.pic_off))
    if len(marks) > MAX_MARKS:
        del marks[0]
    slot.tl_gap = False


def source(slot: Slot, last_seq: int, out_seq: int) -> tuple[int, int] | None:
    """A NACKed sequence number of the slot (16 bits) as the forwarded packet's number, with the
    picture id offset it was sent with; None when it was never sent (or is too old to map).
    ``last_seq``: the publication's last forwarded number."""
    marks = slot.tl_marks
    if not marks:
        back = ((last_seq + slot.seq_off) - out_seq) & 0xFFFF
        return None if back >= 0x8000 else (last_seq - back, slot.pic_off)
    end = None  # where the newer mark begins: a segment's packets end there
    for first, seq_off, pic_off in reversed(marks):
        if seq_off != _GAP:
            back = ((last_seq + seq_off) - out_seq) & 0xFFFF
            seq = last_seq - back
            if back < 0x8000 and seq >= first and (end is None or seq < end):
                return seq, pic_off
        end = first
    return None


def reset(slot: Slot) -> None:
    """Forwarding (re)starts at a keyframe: one offset line again, nothing to map."""
    slot.tl_marks = []
    slot.tl_gap = False
