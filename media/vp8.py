"""The VP8 RTP payload descriptor (RFC 7741 §4.2): parsing and in-place rewriting.

A viewer switched between simulcast layers (media/layergroup.py) must see one continuous stream: the
RTP sequence numbers and timestamps are continued by its slot (media/subscriber.py), the picture id and
TL0PICIDX here. Each layer numbers its pictures on its own, so the slot keeps an offset per field and
the forwarding path writes ``original + offset`` into the descriptor it forwards.

      0 1 2 3 4 5 6 7
     +-+-+-+-+-+-+-+-+
     |X|R|N|S|R| PID | (REQUIRED)
     +-+-+-+-+-+-+-+-+
  X: |I|L|T|K| RSV   | (OPTIONAL)
     +-+-+-+-+-+-+-+-+
  I: |M| PictureID   | (OPTIONAL; M=1: 15 bits over two bytes)
     +-+-+-+-+-+-+-+-+
  L: |   TL0PICIDX   | (OPTIONAL)
     +-+-+-+-+-+-+-+-+
  T/K: |TID|Y| KEYIDX  | (OPTIONAL)
     +-+-+-+-+-+-+-+-+

Everything here is bounds-checked: a short or hostile payload parses as ``None``, never raises.
"""

from __future__ import annotations

from dataclasses import dataclass

PICTURE_ID_MOD = 1 << 15  # offsets are kept modulo 2^15; a 7-bit id uses their low 7 bits
TL0_MOD = 1 << 8


@dataclass(frozen=True, slots=True)
class Descriptor:
    """One packet's payload descriptor. Positions are byte offsets into the RTP payload."""

    start: bool  # S: first packet of a VP8 partition
    partition: int  # PID (partition index)
    non_reference: bool  # N
    picture_id: int | None
    picture_id_pos: int  # -1 when absent
    picture_id_bits: int  # 7 or 15 (0 when absent)
    tl0picidx: int | None
    tl0picidx_pos: int  # -1 when absent
    tid: int | None  # temporal layer index (T bit)
    layer_sync: bool  # Y
    keyidx: int | None  # K bit
    size: int  # descriptor length: the VP8 payload starts here


def parse(payload: bytes | bytearray | memoryview) -> Descriptor | None:
    """The descriptor at the start of ``payload``, or None if it is truncated."""
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    pos = 1
    pid: int | None = None
    pid_pos = -1
    pid_bits = 0
    tl0: int | None = None
    tl0_pos = -1
    tid: int | None = None
    y = False
    keyidx: int | None = None
    if b0 & 0x80:  # X
        if n < 2:
            return None
        x = payload[1]
        pos = 2
        if x & 0x80:  # I
            if n < pos + 1:
                return None
            if payload[pos] & 0x80:  # M: 15-bit picture id
                if n < pos + 2:
                    return None
                pid = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                pid_bits = 15
                pid_pos = pos
                pos += 2
            else:
                pid = payload[pos] & 0x7F
                pid_bits = 7
                pid_pos = pos
                pos += 1
        if x & 0x40:  # L
            if n < pos + 1:
                return None
            tl0 = payload[pos]
            tl0_pos = pos
            pos += 1
        if x & 0x30:  # T or K
            if n < pos + 1:
                return None
            tk = payload[pos]
            if x & 0x20:
                tid = tk >> 6
                y = bool(tk & 0x20)
            if x & 0x10:
                keyidx = tk & 0x1F
            pos += 1
    return Descriptor(
        start=bool(b0 & 0x10),
        partition=b0 & 0x07,
        non_reference=bool(b0 & 0x20),
        picture_id=pid,
        picture_id_pos=pid_pos,
        picture_id_bits=pid_bits,
        tl0picidx=tl0,
        tl0picidx_pos=tl0_pos,
        tid=tid,
        layer_sync=y,
        keyidx=keyidx,
        size=pos,
    )


def is_keyframe(payload: bytes | bytearray, descriptor: Descriptor | None = None) -> bool:
    """True for the first packet of a key frame (S=1, PID=0, the VP8 header's P bit clear, §4.3)."""
    d = descriptor if descriptor is not None else parse(payload)
    if d is None or not d.start or d.partition != 0 or len(payload) <= d.size:
        return False
    return not payload[d.size] & 0x01


def keyframe_size(payload: bytes | bytearray) -> tuple[int, int] | None:
    """Width and height from a key frame's first packet (RFC 6386 §9.1), or None."""
    d = parse(payload)
    if d is None or not is_keyframe(payload, d):
        return None
    p = d.size
    if len(payload) < p + 10 or payload[p + 3 : p + 6] != b"\x9d\x01\x2a":
        return None
    width = (payload[p + 6] | payload[p + 7] << 8) & 0x3FFF
    height = (payload[p + 8] | payload[p + 9] << 8) & 0x3FFF
    return width, height


def write_picture_id(buf: bytearray, pos: int, bits: int, value: int) -> None:
    """Write ``value`` (wrapped to the field's width) at ``pos``, keeping the M bit."""
    if bits == 15:
        v = value & 0x7FFF
        buf[pos] = 0x80 | (v >> 8)
        buf[pos + 1] = v & 0xFF
    elif bits == 7:
        buf[pos] = value & 0x7F


def write_tl0picidx(buf: bytearray, pos: int, value: int) -> None:
    buf[pos] = value & 0xFF


def picture_fields(payload: bytes | bytearray) -> tuple[int, int, int, int, int] | None:
    """The fields a layer switch rewrites, for the forwarding path: (picture id position, its width in
    bits, picture id, TL0PICIDX position or -1, TL0PICIDX or 0); None when the packet has no picture
    id and no TL0PICIDX (nothing to rewrite) or is truncated. Positions are into the RTP payload."""
    d = parse(payload)
    if d is None or (d.picture_id is None and d.tl0picidx is None):
        return None
    return (
        d.picture_id_pos,
        d.picture_id_bits,
        d.picture_id or 0,
        d.tl0picidx_pos,
        d.tl0picidx or 0,
    )


def temporal_layer(payload: bytes | bytearray) -> tuple[int, bool, bool, bool] | None:
    """(TID, Y, whether it carries a picture id, whether it starts a frame: S=1 and PID=0); None
    without a T bit (no temporal layers) or when truncated. What a temporal-layer switch decides on,
    at the first packet of each frame (Chromium repeats the T byte in every packet of a frame)."""
    d = parse(payload)
    if d is None or d.tid is None:
        return None
    return d.tid, d.layer_sync, d.picture_id is not None, d.start and d.partition == 0
