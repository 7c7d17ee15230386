"""media/vp8.py: the RFC 7741 payload descriptor, parsed from well-formed, short and hostile payloads,
and rewritten in place."""

from __future__ import annotations

import random

from media import vp8


def descriptor(
    *,
    start: bool = True,
    pid: int | None = None,
    wide: bool = True,
    tl0: int | None = None,
    tid: int | None = None,
    y: bool = False,
    keyidx: int | None = None,
    partition: int = 0,
) -> bytes:
    x = 0
    ext = b""
    if pid is not None:
        x |= 0x80
        ext += bytes([0x80 | (pid >> 8), pid & 0xFF]) if wide else bytes([pid & 0x7F])
    if tl0 is not None:
        x |= 0x40
        ext += bytes([tl0])
    if tid is not None or keyidx is not None:
        x |= (0x20 if tid is not None else 0) | (0x10 if keyidx is not None else 0)
        ext += bytes([((tid or 0) << 6) | (0x20 if y else 0) | (keyidx or 0)])
    b0 = (0x80 if x else 0) | (0x10 if start else 0) | partition
    return bytes([b0]) + (bytes([x]) + ext if x else b"")


# A VP8 key frame's first bytes (RFC 6386 §9.1): frame tag (P=0), start code, 320x180.
KEY = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xB4, 0x00])
DELTA = bytes([0x11, 0x02, 0x00])


def test_a_full_descriptor_is_read_field_by_field() -> None:
    payload = descriptor(pid=0x1234, tl0=200, tid=2, y=True, keyidx=5) + DELTA
    d = vp8.parse(payload)
    assert d is not None
    assert (d.start, d.partition, d.picture_id, d.picture_id_bits) == (True, 0, 0x1234, 15)
    assert (d.picture_id_pos, d.tl0picidx, d.tl0picidx_pos) == (2, 200, 4)
    assert (d.tid, d.layer_sync, d.keyidx, d.size) == (2, True, 5, 6)
    assert not vp8.is_keyframe(payload)


def test_a_seven_bit_picture_id_and_the_minimal_descriptor() -> None:
    d = vp8.parse(descriptor(pid=0x55, wide=False) + KEY)
    assert d is not None and (d.picture_id, d.picture_id_bits, d.size) == (0x55, 7, 3)
    minimal = vp8.parse(b"\x10" + KEY)
    assert minimal is not None and minimal.picture_id is None and minimal.size == 1
    assert vp8.is_keyframe(b"\x10" + KEY)
    assert vp8.keyframe_size(descriptor(pid=7, tl0=1, tid=0) + KEY) == (320, 180)


def test_a_continuation_packet_is_not_a_keyframe() -> None:
    assert not vp8.is_keyframe(descriptor(start=False, pid=1) + KEY)
    assert not vp8.is_keyframe(descriptor(partition=1, pid=1) + KEY)
    assert vp8.keyframe_size(descriptor(pid=1) + DELTA) is None


def test_truncated_payloads_parse_as_none_and_never_raise() -> None:
    full = descriptor(pid=0x1234, tl0=9, tid=1, keyidx=3)
    for n in range(len(full)):
        assert vp8.parse(full[:n]) is None, n
        assert vp8.picture_fields(full[:n]) is None
        assert not vp8.is_keyframe(full[:n])
        assert vp8.keyframe_size(full[:n]) is None
    assert vp8.parse(full) is not None


def test_random_bytes_never_raise() -> None:
    rng = random.Random(13)
    for _ in range(20000):
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 12)))
        d = vp8.parse(payload)
        if d is not None:
            assert d.size <= len(payload)
            if d.picture_id_pos >= 0:
                assert d.picture_id_pos + d.picture_id_bits // 8 <= len(payload)
        vp8.is_keyframe(payload)
        vp8.keyframe_size(payload)
        vp8.picture_fields(payload)


def test_rewriting_keeps_the_m_bit_wraps_and_touches_nothing_else() -> None:
    payload = bytearray(descriptor(pid=0x7FFE, tl0=255, tid=0) + KEY)
    fields = vp8.picture_fields(payload)
    assert fields == (2, 15, 0x7FFE, 4, 255)
    before = bytes(payload)
    vp8.write_picture_id(payload, 2, 15, 0x7FFE + 3)
    vp8.write_tl0picidx(payload, 4, 255 + 2)
    d = vp8.parse(payload)
    assert d is not None and d.picture_id == 1 and d.picture_id_bits == 15 and d.tl0picidx == 1
    assert payload[:2] == before[:2] and payload[5:] == before[5:]

    short = bytearray(descriptor(pid=0x7F, wide=False) + DELTA)
    vp8.write_picture_id(short, 2, 7, 0x7F + 1)
    d = vp8.parse(short)
    assert d is not None and d.picture_id == 0 and d.picture_id_bits == 7
