"""The frame assembler: ordering, bounded waits, skips and keyframe gating, with a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from media.assembler import AudioPassthrough, FrameAssembler, unwrap_seq
from media.codecs import frame_is_keyframe


@dataclass
class Pkt:
    sequence_number: int
    timestamp: int
    marker: int
    _data: bytes = b"\x01"  # VP8 P bit set: an interframe
    payload: bytes = b""
    ext_seq: int = field(default=0)


def frame(seq: int, ts: int, n: int, key: bool = False) -> list[Pkt]:
    """``n`` packets of one VP8 frame starting at ``seq`` (16-bit wrap applied)."""
    first = b"\x00" if key else b"\x01"
    return [Pkt((seq + i) & 0xFFFF, ts, int(i == n - 1), first if i == 0 else b"\xff") for i in range(n)]


def vp8() -> FrameAssembler:
    return FrameAssembler(lambda packets: frame_is_keyframe("video/vp8", packets), loss_timeout=0.15)


def feed(asm: FrameAssembler, packets: list[Pkt], now: float = 0.0) -> tuple[list, bool]:
    frames, pli = [], False
    for p in packets:
        out, flag = asm.add(p, now)
        frames += out
        pli = pli or flag
    return frames, pli


def synced(start: int = 100) -> FrameAssembler:
    """An assembler that has seen a marker (synced) and a keyframe (not gating)."""
    asm = vp8()
    feed(asm, [Pkt(start - 1, 0, 1)])  # the tail of a frame we joined mid-way
    frames, _ = feed(asm, frame(start, 3000, 3, key=True))
    assert len(frames) == 1 and frames[0].keyframe
    return asm


def test_unwrap_crosses_the_16_bit_boundary_both_ways() -> None:
    assert unwrap_seq(2, 65534) == 65538
    assert unwrap_seq(65534, 65538) == 65534
    assert unwrap_seq(10, 5) == 10


def test_complete_frames_come_out_at_once_in_order() -> None:
    asm = synced(100)
    frames, pli = feed(asm, frame(103, 6000, 2) + frame(105, 9000, 4))
    assert [f.timestamp for f in frames] == [6000, 9000]
    assert [len(f.packets) for f in frames] == [2, 4]
    assert not pli


def test_reordered_packets_within_a_frame_are_put_back_in_order() -> None:
    asm = synced(100)
    a, b, c = frame(103, 6000, 3)
    frames, _ = feed(asm, [c, a, b])
    assert len(frames) == 1
    assert [p.sequence_number for p in frames[0].packets] == [103, 104, 105]


def test_frames_behind_a_gap_wait_and_a_retransmission_within_the_timeout_releases_them() -> None:
    asm = synced(100)
    first = frame(103, 6000, 2)
    second = frame(105, 9000, 2)
    frames, pli = feed(asm, [first[1]] + second, now=1.0)
    assert frames == [] and not pli  # first[0] missing: hold, do not skip yet
    frames, pli = feed(asm, [first[0]], now=1.1)  # retransmission, 100 ms later
    assert [f.timestamp for f in frames] == [6000, 9000]
    assert not pli


def test_permanent_loss_skips_after_the_timeout_requests_a_keyframe_and_gates_deltas() -> None:
    asm = synced(100)
    lost = frame(103, 6000, 2)
    after = frame(105, 9000, 2)
    frames, pli = feed(asm, [lost[1]] + after, now=1.0)
    assert frames == [] and not pli
    frames, pli = feed(asm, frame(107, 12000, 1), now=1.2)  # past the 150 ms timeout
    assert pli, "a permanent loss must ask for a keyframe"
    assert frames == [], "deltas after a loss would not decode: withheld"
    assert asm.need_keyframe
    frames, pli = feed(asm, frame(108, 15000, 2), now=1.25)
    assert frames == []
    frames, _ = feed(asm, frame(110, 18000, 3, key=True), now=1.3)
    assert len(frames) == 1 and frames[0].keyframe
    frames, _ = feed(asm, frame(113, 21000, 1), now=1.31)
    assert len(frames) == 1 and not frames[0].keyframe
    assert asm.stats.skips == 1


def test_no_head_of_line_stall_when_a_complete_keyframe_follows_a_gap() -> None:
    asm = synced(100)
    lost = frame(103, 6000, 2)
    frames, pli = feed(asm, [lost[1]] + frame(105, 9000, 3, key=True), now=1.0)
    assert len(frames) == 1 and frames[0].keyframe, "jump to the keyframe without waiting"
    assert not pli


def test_late_retransmission_after_a_skip_is_ignored() -> None:
    asm = synced(100)
    lost = frame(103, 6000, 2)
    feed(asm, [lost[1]] + frame(105, 9000, 3, key=True), now=1.0)
    frames, pli = feed(asm, [lost[0]], now=1.05)
    assert frames == [] and not pli
    assert asm.stats.late_packets == 1


def test_first_frame_out_is_a_keyframe() -> None:
    asm = vp8()
    feed(asm, [Pkt(9, 0, 1)])
    frames, _ = feed(asm, frame(10, 3000, 2) + frame(12, 6000, 2))
    assert frames == [] and asm.need_keyframe
    frames, _ = feed(asm, frame(14, 9000, 2, key=True))
    assert len(frames) == 1 and frames[0].keyframe


def test_joining_mid_frame_waits_for_a_marker_to_sync() -> None:
    asm = vp8()
    frames, _ = feed(asm, frame(50, 3000, 3, key=True)[1:])  # missed the first packet
    assert frames == []
    frames, _ = feed(asm, frame(53, 6000, 2, key=True))
    assert len(frames) == 1 and frames[0].timestamp == 6000


def test_sequence_wraparound_inside_a_frame() -> None:
    asm = synced(65530)
    frames, _ = feed(asm, frame(65533, 6000, 5))
    assert len(frames) == 1
    assert [p.sequence_number for p in frames[0].packets] == [65533, 65534, 65535, 0, 1]


def test_duplicates_are_dropped() -> None:
    asm = synced(100)
    pkts = frame(103, 6000, 2)
    frames, _ = feed(asm, pkts + pkts)
    assert len(frames) == 1
    assert asm.stats.late_packets == 2


def test_a_gap_with_no_frame_boundary_behind_it_resyncs_on_the_next_marker() -> None:
    asm = synced(100)
    frames, _ = feed(asm, [Pkt(104, 6000, 0)], now=1.0)
    frames, pli = feed(asm, [Pkt(105, 6000, 0)], now=1.2)
    assert pli and frames == []
    feed(asm, [Pkt(106, 6000, 1)], now=1.21)  # marker: synced again
    frames, _ = feed(asm, frame(107, 9000, 2, key=True), now=1.22)
    assert len(frames) == 1 and frames[0].keyframe


def test_sender_restart_resets_the_assembler() -> None:
    asm = synced(100)
    frames, _ = feed(asm, [Pkt(40000, 1, 1)])
    assert frames == [] and asm.need_keyframe
    frames, _ = feed(asm, frame(40001, 3000, 2, key=True))
    assert len(frames) == 1


def test_audio_passes_through_immediately_and_keeps_publisher_order() -> None:
    asm = AudioPassthrough()
    out = []
    for seq in (10, 12, 11, 13, 13):
        frames, pli = asm.add(Pkt(seq, seq * 960, 1), 0.0)
        assert not pli
        out += frames
    assert [f.packets[0].sequence_number for f in out] == [10, 12, 11, 13]
    assert [f.packets[0].ext_seq for f in out] == [10, 12, 11, 13]


def test_h264_keyframe_detection_looks_for_idr_or_sps() -> None:
    idr = Pkt(1, 0, 1, b"\x00\x00\x00\x01\x67\x42" + b"\x00\x00\x00\x01\x65\x88")
    non_idr = Pkt(1, 0, 1, b"\x00\x00\x00\x01\x41\x9a")
    assert frame_is_keyframe("video/h264", [idr])
    assert not frame_is_keyframe("video/h264", [non_idr])
