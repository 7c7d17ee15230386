"""Encoded frames from one publisher's RTP stream, in place of aiortc's jitter buffer.

aiortc's buffer is built to feed a decoder: it holds audio 80 ms and, when one video packet is lost
for good, freezes output for seconds. An SFU wants the opposite: forward every complete frame at once,
wait a short, bounded time for a retransmission, then skip ahead, ask for a keyframe and withhold
frames until it arrives (they would not decode anyway).

Pure logic: packets and ``now`` in, complete frames out. Frames are delimited by the RTP marker bit
(set on the last packet of every video frame by WebRTC senders), so it works for VP8 and H264 alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class RtpLike(Protocol):
    sequence_number: int
    timestamp: int
    marker: int


@dataclass(slots=True)
class Frame:
    """A complete encoded frame: its packets in sequence order. Audio frames are one packet."""

    packets: list[Any]
    keyframe: bool
    timestamp: int


@dataclass(slots=True)
class AssemblerStats:
    frames: int = 0
    keyframes: int = 0
    dropped_frames: int = 0  # complete frames withheld while waiting for a keyframe
    skips: int = 0  # gaps given up on after the loss timeout
    late_packets: int = 0  # arrived after their frame was emitted or skipped


def unwrap_seq(seq: int, highest: int) -> int:
    """Extend a 16-bit sequence number to the unbounded index closest to ``highest``."""
    delta = (seq - highest) & 0xFFFF
    if delta < 0x8000:
        return highest + delta
    return highest + delta - 0x10000


class AudioPassthrough:
    """Audio needs no assembly: every packet is a frame, forwarded the moment it arrives.

    Reordering and loss are left to the subscriber's jitter buffer (NetEq), which conceals them
    better than any hold here could; duplicates of recent packets are dropped.
    """

    is_video = False
    need_keyframe = False

    def __init__(self) -> None:
        self.stats = AssemblerStats()
        self._highest: int | None = None
        self._recent: set[int] = set()

    def add(self, packet: RtpLike, now: float) -> tuple[list[Frame], bool]:
        seq = packet.sequence_number
        if self._highest is None:
            self._highest = seq
        ext = unwrap_seq(seq, self._highest)
        if ext in self._recent:
            self.stats.late_packets += 1
            return [], False
        self._recent.add(ext)
        if len(self._recent) > 256:
            floor = self._highest - 128
            self._recent = {s for s in self._recent if s > floor}
        if ext > self._highest:
            self._highest = ext
        packet.ext_seq = ext  # type: ignore[attr-defined]
        self.stats.frames += 1
        return [Frame([packet], True, packet.timestamp)], False


class FrameAssembler:
    """Video frames in order, with a bounded wait for retransmissions.

    ``add`` returns the frames that became ready (possibly several, when a retransmission completes
    a frame others were queued behind) and whether a keyframe should be requested upstream.
    """

    is_video = True

    def __init__(
        self,
        is_keyframe: Callable[[Sequence[Any]], bool],
        *,
        loss_timeout: float = 0.15,
        capacity: int = 512,
    ) -> None:
        self._is_keyframe = is_keyframe
        self.loss_timeout = loss_timeout
        self.capacity = capacity
        self.stats = AssemblerStats()
        self._pending: dict[int, Any] = {}
        self._highest: int | None = None
        self._expect: int | None = None  # first packet of the next frame; None until synced
        self._hole_since: float | None = None
        # The first frame anyone receives must be a keyframe: start out waiting for one.
        self.need_keyframe = True

    def add(self, packet: RtpLike, now: float) -> tuple[list[Frame], bool]:
        seq = packet.sequence_number
        if self._highest is None:
            self._highest = seq
        ext = unwrap_seq(seq, self._highest)
        if ext - self._highest > self.capacity * 4 or self._highest - ext > 0x4000:
            # The sender restarted its sequence space (or an enormous loss): start over.
            self._reset()
            self._highest = ext = seq
        if (self._expect is not None and ext < self._expect) or ext in self._pending:
            self.stats.late_packets += 1
            return [], False
        if ext > self._highest:
            self._highest = ext
        packet.ext_seq = ext  # type: ignore[attr-defined]
        self._pending[ext] = packet

        pli = False
        if self._expect is None:
            if not packet.marker:
                return [], False
            # Synced: the next frame starts right after this marker.
            for s in [s for s in self._pending if s <= ext]:
                del self._pending[s]
            self._expect = ext + 1
            return [], False

        frames: list[Frame] = []
        while True:
            self._drain(frames)
            if not self._pending:
                self._hole_since = None
                break
            missing = self._first_missing()
            if missing > max(self._pending):
                # The frame in progress is still arriving in order: no hole, nothing to wait for.
                self._hole_since = None
                break
            if self._hole_since is None:
                self._hole_since = now
            if self._jump_to_keyframe():
                continue
            if now - self._hole_since >= self.loss_timeout or len(self._pending) > self.capacity:
                self._skip(missing)
                pli = True
                continue
            break
        return frames, pli

    # internals

    def _reset(self) -> None:
        self._pending.clear()
        self._expect = None
        self._hole_since = None
        self.need_keyframe = True

    def _first_missing(self) -> int:
        s = self._expect
        assert s is not None
        while s in self._pending:
            s += 1
        return s

    def _collect(self, start: int) -> list[Any] | None:
        """The packets of the frame starting at ``start`` if it is complete, else None."""
        packets = []
        s = start
        pending = self._pending
        while True:
            p = pending.get(s)
            if p is None:
                return None
            packets.append(p)
            if p.marker:
                return packets
            s += 1

    def _drain(self, out: list[Frame]) -> None:
        while self._expect is not None:
            packets = self._collect(self._expect)
            if packets is None:
                return
            for p in packets:
                del self._pending[p.ext_seq]
            self._expect = packets[-1].ext_seq + 1
            self._hole_since = None
            keyframe = self._is_keyframe(packets)
            if self.need_keyframe and not keyframe:
                self.stats.dropped_frames += 1
                continue
            if keyframe:
                self.stats.keyframes += 1
                self.need_keyframe = False
            self.stats.frames += 1
            out.append(Frame(packets, keyframe, packets[0].timestamp))

    def _frame_starts(self) -> list[int]:
        """Stored packets that begin a frame: their predecessor is a stored marker packet."""
        pending = self._pending
        return sorted(s for s in pending if (prev := pending.get(s - 1)) is not None and prev.marker)

    def _jump_to_keyframe(self) -> bool:
        """No point waiting for a retransmission when a complete keyframe already follows the gap."""
        for start in self._frame_starts():
            packets = self._collect(start)
            if packets is not None and self._is_keyframe(packets):
                self._drop_before(start)
                self._expect = start
                self._hole_since = None
                self.stats.skips += 1
                return True
        return False

    def _skip(self, missing: int) -> None:
        """Give up on ``missing``: resume at the next frame start after it and await a keyframe."""
        self.stats.skips += 1
        self._hole_since = None
        self.need_keyframe = True
        starts = [s for s in self._frame_starts() if s > missing]
        if starts:
            self._drop_before(starts[0])
            self._expect = starts[0]
            return
        markers = sorted(s for s, p in self._pending.items() if s > missing and p.marker)
        if markers:
            self._drop_before(markers[0] + 1)
            self._expect = markers[0] + 1
            return
        # No frame boundary after the gap yet: resync on the next marker.
        self._pending.clear()
        self._expect = None

    def _drop_before(self, start: int) -> None:
        for s in [s for s in self._pending if s < start]:
            del self._pending[s]
