"""Connection quality, sans-I/O: the figures of one direction of one connection, and the level they add
up to.

- ``SentReports``: the NTP middle 32 bits of the sender reports a slot sent, with our clock when each
  left; a receiver report's LSR/DLSR then gives the round trip (RFC 3550 §6.4.1) without trusting the
  viewer's clock or ours to agree on wall time.
- ``rtt_from_ntp``: the RFC's own formula, A - LSR - DLSR in 1/65536 s, modulo 2^32 (wrap-around).
- ``ArrivalStats``: what the node sees of a publisher's RTP (sequence numbers, RFC 3550 A.3 loss and
  A.8 interarrival jitter) for the up direction.
- ``RateMeter``: bits/s over the last few seconds from a running byte count.
- ``classify`` and ``LevelTracker``: excellent / good / poor / lost with hysteresis (docs/operations.md,
  "Connection quality").

Nothing here reads a clock: ``now`` comes in (seconds, monotonic).
"""

from __future__ import annotations

import enum
import math
from array import array
from collections import deque
from dataclasses import dataclass

import msgspec

# --- round trip ----------------------------------------------------------------------------------


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp: what a report block's LSR echoes."""
    return (ntp >> 16) & 0xFFFFFFFF


def rtt_from_ntp(arrival: int, lsr: int, dlsr: int) -> float | None:
    """RFC 3550 §6.4.1: the round trip in seconds from the report's arrival ``arrival`` (NTP middle 32
    bits), its LSR and DLSR (1/65536 s), modulo 2^32 so that a wrap of the NTP seconds between the SR
    and the RR does not matter. None when the viewer had no SR yet (LSR 0) or the result is negative
    (clocks that disagree, a forged block)."""
    if lsr == 0:
        return None
    delta = (arrival - lsr - dlsr) & 0xFFFFFFFF
    if delta >= 0x80000000:
        return None
    return delta / 65536.0


class SentReports:
    """The last ``size`` sender reports of one SSRC: NTP middle 32 bits -> when it left (monotonic)."""

    __slots__ = ("_sent", "size")

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._sent: dict[int, float] = {}

    def sent(self, ntp: int, now: float) -> None:
        self._sent[ntp_middle(ntp)] = now
        if len(self._sent) > self.size:
            del self._sent[next(iter(self._sent))]

    def rtt(self, lsr: int, dlsr: int, now: float) -> float | None:
        """Seconds: the time since the SR named by ``lsr`` left, minus the time the viewer held it.
        None for an LSR that is none of ours (0, too old, forged) or a negative result."""
        sent_at = self._sent.get(lsr) if lsr else None
        if sent_at is None:
            return None
        rtt = now - sent_at - dlsr / 65536.0
        return rtt if rtt >= 0 else None


# --- the up direction: what arrives from a publisher ---------------------------------------------


class ArrivalStats:
    """RFC 3550 A.3 (expected vs received, with sequence number cycles) and A.8 (interarrival jitter)
    for one incoming stream; ``interval()`` gives the loss fraction since the last call."""

    __slots__ = (
        "_expected_prior",
        "_received_prior",
        "_transit",
        "base",
        "bytes",
        "clock_rate",
        "cycles",
        "jitter",
        "last_arrival",
        "max_seq",
        "received",
    )

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.base: int | None = None
        self.max_seq = 0
        self.cycles = 0
        self.received = 0
        self.bytes = 0
        self.jitter = 0.0  # in timestamp units
        self.last_arrival: float | None = None
        self._transit: float | None = None
        self._expected_prior = 0
        self._received_prior = 0

    def add(self, seq: int, timestamp: int, size: int, now: float) -> None:
        self.received += 1
        self.bytes += size
        self.last_arrival = now
        if self.base is None:
            self.base = self.max_seq = seq
        else:
            delta = (seq - self.max_seq) & 0xFFFF
            if 0 < delta < 0x8000:
                if seq < self.max_seq:
                    self.cycles += 1 << 16
                self.max_seq = seq
        transit = now * self.clock_rate - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < self.clock_rate * 10:  # a timestamp jump (a new source) is no jitter
                self.jitter += (d - self.jitter) / 16
        self._transit = transit

    @property
    def expected(self) -> int:
        return 0 if self.base is None else self.cycles + self.max_seq - self.base + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def interval(self) -> float:
        """Fraction of packets lost since the previous call (0..1)."""
        expected, received = self.expected, self.received
        e, r = expected - self._expected_prior, received - self._received_prior
        self._expected_prior, self._received_prior = expected, received
        if e <= 0 or e <= r:
            return 0.0
        return (e - r) / e

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self.jitter / self.clock_rate


# --- bit rate ------------------------------------------------------------------------------------


class RateMeter:
    """Bits per second over the last ``window`` seconds of a running byte count."""

    __slots__ = ("_samples", "window")

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, total_bytes: int) -> float:
        samples = self._samples
        if samples and total_bytes < samples[-1][1]:
            samples.clear()  # the count restarted (another publication in the slot)
        samples.append((now, total_bytes))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        return self.rate

    @property
    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return 8.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


# --- figures and levels --------------------------------------------------------------------------


class QualityFigures(msgspec.Struct, kw_only=True, omit_defaults=False):
    """One direction's figures (the worst of its tracks): what a level is computed from. ``silent_s``:
    seconds since the last RTCP (down) or RTP (up), None when nothing is expected."""

    loss: float | None = None  # fraction 0..1, the last interval
    rtt_ms: float | None = None
    jitter_ms: float | None = None
    bitrate: float | None = None  # bits/s
    silent_s: float | None = None

    @property
    def measured(self) -> bool:
        """Anything to judge: a report or a packet was expected or seen."""
        return not (self.loss is None and self.rtt_ms is None and self.silent_s is None)


class Level(enum.StrEnum):
    EXCELLENT = "excellent"
    GOOD = "good"
    POOR = "poor"
    LOST = "lost"


LEVELS = tuple(Level)
_RANK = {level: i for i, level in enumerate(LEVELS)}


@dataclass(frozen=True, slots=True)
class Thresholds:
    """A direction is excellent below every ``excellent`` limit, good below every ``good`` limit, poor
    otherwise, and lost after ``lost_s`` without RTCP/RTP while connected (docs/operations.md)."""

    excellent_loss: float = 0.02
    excellent_rtt_ms: float = 150.0
    excellent_jitter_ms: float = 30.0
    good_loss: float = 0.08
    good_rtt_ms: float = 400.0
    good_jitter_ms: float = 80.0
    lost_s: float = 8.0
    # Hysteresis: a better level is taken only below ``better_margin`` x its limits, and after
    # ``better_hold_s`` of it; a worse one after ``worse_hold_s`` (lost at once).
    better_margin: float = 0.8
    better_hold_s: float = 10.0
    worse_hold_s: float = 4.0


THRESHOLDS = Thresholds()


def classify(figures: QualityFigures, t: Thresholds = THRESHOLDS, margin: float = 1.0) -> Level:
    """The level of one direction's figures; ``margin`` < 1 makes each limit stricter."""
    if figures.silent_s is not None and figures.silent_s >= t.lost_s:
        return Level.LOST
    loss = figures.loss or 0.0
    rtt = figures.rtt_ms or 0.0
    jitter = figures.jitter_ms or 0.0
    if (
        loss < t.excellent_loss * margin
        and rtt < t.excellent_rtt_ms * margin
        and jitter < t.excellent_jitter_ms * margin
    ):
        return Level.EXCELLENT
    if loss < t.good_loss * margin and rtt < t.good_rtt_ms * margin and jitter < t.good_jitter_ms * margin:
        return Level.GOOD
    return Level.POOR


def worst(levels: list[Level]) -> Level | None:
    return max(levels, key=_RANK.__getitem__) if levels else None


class LevelTracker:
    """A participant's level with hysteresis: worse after ``worse_hold_s`` (lost at once), better only
    when clearly better (``better_margin``) for ``better_hold_s``. ``level`` is None until the first
    figures."""

    __slots__ = ("_candidate", "_since", "level", "thresholds")

    def __init__(self, thresholds: Thresholds = THRESHOLDS) -> None:
        self.thresholds = thresholds
        self.level: Level | None = None
        self._candidate: Level | None = None
        self._since = 0.0

    def update(self, directions: list[QualityFigures], now: float) -> Level | None:
        t = self.thresholds
        directions = [f for f in directions if f.measured]
        raw = worst([classify(f, t) for f in directions])
        if raw is None:
            return self.level
        if self.level is None:
            self.level = raw
            self._candidate = None
            return self.level
        current = self.level
        if _RANK[raw] > _RANK[current]:
            target = raw
            hold = 0.0 if raw is Level.LOST else t.worse_hold_s
        else:
            strict = worst([classify(f, t, t.better_margin) for f in directions])
            if strict is None or _RANK[strict] >= _RANK[current]:
                self._candidate = None
                return current
            target = strict
            hold = t.better_hold_s
        if self._candidate != target:
            self._candidate, self._since = target, now
        if now - self._since >= hold:
            self.level, self._candidate = target, None
        return self.level


# --- the timeline --------------------------------------------------------------------------------


class QualitySample(msgspec.Struct, kw_only=True):
    """One point of a participant's quality timeline (as in ``QualityFigures``; None: not measured)."""

    at: float  # Unix time, seconds
    level: str | None
    down_loss: float | None
    down_rtt_ms: float | None
    down_jitter_ms: float | None
    down_bitrate: float | None
    up_loss: float | None
    up_jitter_ms: float | None
    up_bitrate: float | None


_ROW = 8  # level, then the seven figures of a QualitySample, as float32 (NaN: None)
_NAN = float("nan")


def _opt(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


class Timeline:
    """A bounded ring of samples, one every ``every`` seconds, the last ``size`` of them, kept as
    float32 rows (36 bytes a sample: 30 minutes of a participant ≈ 13 KB, whatever the audience)."""

    __slots__ = ("_at", "_last", "_next", "_rows", "every", "size")

    def __init__(self, every: float = 5.0, size: int = 360) -> None:
        self.every = every
        self.size = size
        self._at = array("d")
        self._rows = array("f")
        self._next = 0  # the ring's oldest row once full
        self._last = float("-inf")

    def __len__(self) -> int:
        return len(self._at)

    def maybe_add(
        self, at: float, level: Level | None, down: QualityFigures | None, up: QualityFigures | None
    ) -> bool:
        """Add a sample if ``every`` seconds passed since the last one (``at``: Unix time)."""
        if at - self._last < self.every:
            return False
        self._last = at
        d = down or QualityFigures()
        u = up or QualityFigures()
        row = [
            _NAN if level is None else float(_RANK[level]),
            *(_NAN if v is None else v for v in (d.loss, d.rtt_ms, d.jitter_ms, d.bitrate)),
            *(_NAN if v is None else v for v in (u.loss, u.jitter_ms, u.bitrate)),
        ]
        if len(self._at) < self.size:
            self._at.append(at)
            self._rows.extend(row)
        else:
            i = self._next
            self._at[i] = at
            self._rows[i * _ROW : (i + 1) * _ROW] = array("f", row)
            self._next = (i + 1) % self.size
        return True

    def samples(self) -> list[QualitySample]:
        """Oldest first."""
        n = len(self._at)
        order = [(self._next + k) % n for k in range(n)] if n == self.size else list(range(n))
        out = []
        for i in order:
            r = self._rows[i * _ROW : (i + 1) * _ROW]
            out.append(
                QualitySample(
                    at=self._at[i],
                    level=None if math.isnan(r[0]) else LEVELS[int(r[0])].value,
                    down_loss=_opt(r[1]),
                    down_rtt_ms=_opt(r[2]),
                    down_jitter_ms=_opt(r[3]),
                    down_bitrate=_opt(r[4]),
                    up_loss=_opt(r[5]),
                    up_jitter_ms=_opt(r[6]),
                    up_bitrate=_opt(r[7]),
                )
            )
        return out
