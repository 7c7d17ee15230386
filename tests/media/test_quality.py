"""media/quality.py: round trip from LSR/DLSR (with wrap-around), loss and jitter of what arrives, bit
rates, levels and their hysteresis, the bounded timeline. Plain function calls, no clock."""

from __future__ import annotations

import math

import pytest

from media.quality import (
    ArrivalStats,
    Level,
    LevelTracker,
    QualityFigures,
    RateMeter,
    SentReports,
    Thresholds,
    Timeline,
    classify,
    ntp_middle,
    rtt_from_ntp,
)


def ntp(seconds: float) -> int:
    """A 64-bit NTP timestamp (seconds since 1900, 32.32 fixed point), modulo 2^64."""
    return int(seconds * (1 << 32)) & 0xFFFFFFFFFFFFFFFF


def test_rtt_from_ntp_rfc_example() -> None:
    # RFC 3550 §6.4.1's figure: A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000 (46853.125 s),
    # DLSR = 0x0005:4000 (5.250 s): the round trip is 6.125 s.
    assert rtt_from_ntp(0xB7108000, 0xB7052000, 0x00054000) == pytest.approx(6.125)


def test_rtt_from_ntp_across_the_wrap() -> None:
    # The SR left 0.5 s before the NTP middle-32 wrapped, the RR arrived 0.25 s after; held 0.1 s.
    lsr = ntp_middle(ntp(65536 - 0.5))
    arrival = ntp_middle(ntp(65536 + 0.25))
    assert arrival < lsr  # wrapped
    assert rtt_from_ntp(arrival, lsr, int(0.1 * 65536)) == pytest.approx(0.65, abs=1e-4)


def test_rtt_from_ntp_refuses_no_sr_and_negative() -> None:
    assert rtt_from_ntp(1000, 0, 0) is None
    assert rtt_from_ntp(1000, 900, 200) is None  # the viewer says it held the SR longer than possible


def test_sent_reports_give_the_round_trip_by_our_own_clock() -> None:
    srs = SentReports(size=3)
    wall = ntp(3_900_000_000.75)  # the NTP seconds wrap their 16 low bits in between: irrelevant here
    srs.sent(wall, now=100.0)
    srs.sent(wall + ntp(1.0), now=101.0)
    # The viewer echoes the first SR, held for 0.2 s; its report reaches us at 100.35 s.
    rtt = srs.rtt(ntp_middle(wall), int(0.2 * 65536), now=100.35)
    assert rtt == pytest.approx(0.15, abs=1e-4)
    assert srs.rtt(0, 0, now=100.35) is None  # no SR received yet
    assert srs.rtt(12345, 0, now=100.35) is None  # none of ours
    assert srs.rtt(ntp_middle(wall), 5 * 65536, now=100.35) is None  # negative
    for k in range(2, 6):  # only the last 3 are kept
        srs.sent(wall + ntp(float(k)), now=100.0 + k)
    assert srs.rtt(ntp_middle(wall), 0, now=106.0) is None


def test_arrival_stats_loss_wrap_and_jitter() -> None:
    stats = ArrivalStats(90000)
    seqs = [65530 + i for i in range(20)]  # across the 16-bit wrap
    lost = {65533, 2}
    t = 10.0
    for k, s in enumerate(seqs):
        if s & 0xFFFF in {x & 0xFFFF for x in lost}:
            continue
        stats.add(s & 0xFFFF, 3000 * k, 100, t + k / 30)
    assert stats.expected == 20
    assert stats.received == 18
    assert stats.lost == 2
    assert stats.interval() == pytest.approx(0.1)
    assert stats.interval() == 0.0  # nothing new since
    assert stats.jitter_ms < 0.5  # perfectly paced
    # A packet 40 ms late in a 33 ms cadence makes jitter.
    stats.add(14, 3000 * 20, 100, t + 20 / 30 + 0.04)
    assert stats.jitter_ms > 1.0


def test_rate_meter() -> None:
    meter = RateMeter(window=5.0)
    assert meter.add(0.0, 0) == 0.0
    for k in range(1, 11):
        rate = meter.add(float(k), 125_000 * k)  # 1 Mbit/s
    assert rate == pytest.approx(1_000_000)
    assert meter.add(11.0, 10) == 0.0  # restarted count (another publication)


def test_levels() -> None:
    assert classify(QualityFigures(loss=0.0, rtt_ms=40, jitter_ms=5)) is Level.EXCELLENT
    assert classify(QualityFigures(loss=0.03, rtt_ms=40, jitter_ms=5)) is Level.GOOD
    assert classify(QualityFigures(loss=0.0, rtt_ms=200, jitter_ms=5)) is Level.GOOD
    assert classify(QualityFigures(loss=0.0, rtt_ms=40, jitter_ms=90)) is Level.POOR
    assert classify(QualityFigures(loss=0.10)) is Level.POOR
    assert classify(QualityFigures(loss=0.0, silent_s=8.0)) is Level.LOST


def test_hysteresis_worse_after_a_hold_better_only_when_clearly_better() -> None:
    t = Thresholds(worse_hold_s=4.0, better_hold_s=10.0)
    tracker = LevelTracker(t)
    good = QualityFigures(loss=0.0, rtt_ms=50, jitter_ms=5)
    bad = QualityFigures(loss=0.2, rtt_ms=50, jitter_ms=5)
    assert tracker.update([good], 0.0) is Level.EXCELLENT
    # A 2-second burst of loss does not change the level.
    assert tracker.update([bad], 2.0) is Level.EXCELLENT
    assert tracker.update([good], 4.0) is Level.EXCELLENT
    # Loss that lasts: poor after the hold.
    assert tracker.update([bad], 6.0) is Level.EXCELLENT
    assert tracker.update([bad], 8.0) is Level.EXCELLENT
    assert tracker.update([bad], 10.0) is Level.POOR
    # Just under the excellent limit is not clearly better (margin 0.8): it stays good, not excellent.
    borderline = QualityFigures(loss=0.019, rtt_ms=50, jitter_ms=5)
    levels = [tracker.update([borderline], 10.0 + 2 * k) for k in range(1, 12)]
    assert set(levels) == {Level.POOR, Level.GOOD}
    assert levels[-1] is Level.GOOD
    # Alternating around a limit never flaps: at most the changes above.
    flaps = [tracker.update([bad if k % 2 else good], 40.0 + 2 * k) for k in range(20)]
    assert len({*flaps}) == 1
    # Silence: lost at once.
    assert tracker.update([QualityFigures(silent_s=9.0)], 100.0) is Level.LOST


def test_worst_direction_counts_and_unmeasured_is_ignored() -> None:
    tracker = LevelTracker()
    up_bad = QualityFigures(loss=0.3, rtt_ms=None, jitter_ms=3)
    clean = QualityFigures(loss=0.0, rtt_ms=20, jitter_ms=2)
    assert tracker.update([QualityFigures(), clean], 0.0) is Level.EXCELLENT
    tracker = LevelTracker()
    assert tracker.update([QualityFigures(loss=0.0, rtt_ms=20, jitter_ms=2), up_bad], 0.0) is Level.POOR
    assert LevelTracker().update([QualityFigures()], 0.0) is None


def test_timeline_is_a_bounded_ring() -> None:
    timeline = Timeline(every=5.0, size=4)
    down = QualityFigures(loss=0.01, rtt_ms=42.0, jitter_ms=3.0, bitrate=800_000.0)
    assert timeline.maybe_add(1000.0, Level.GOOD, down, None)
    assert not timeline.maybe_add(1002.0, Level.GOOD, down, None)  # within 5 s
    for k in range(1, 7):
        timeline.maybe_add(1000.0 + 5 * k, Level.EXCELLENT if k % 2 else Level.POOR, down, None)
    samples = timeline.samples()
    assert [s.at for s in samples] == [1015.0, 1020.0, 1025.0, 1030.0]
    assert [s.level for s in samples] == ["excellent", "poor", "excellent", "poor"]
    assert samples[0].down_rtt_ms == pytest.approx(42.0)
    assert samples[0].up_loss is None
    assert not math.isnan(samples[0].down_bitrate or 0.0)


def test_a_lossy_link_goes_poor_and_comes_back_without_flapping() -> None:
    """A publisher's stream as the node receives it, 50 packets/s: 12 % random loss for 20 s, then a
    clean link. Loss per 2-second sample, as the stage's monitor samples it."""
    import random

    rng = random.Random(13)
    stats = ArrivalStats(90000)
    tracker = LevelTracker()
    levels = []
    seq = 0
    for second in range(60):
        lossy = 10 <= second < 30
        for k in range(50):
            t = second + k / 50
            if not (lossy and rng.random() < 0.12):
                stats.add(seq & 0xFFFF, int(t * 90000), 1000, t)
            seq += 1
        if second % 2 == 1:
            sample = QualityFigures(loss=stats.interval(), jitter_ms=stats.jitter_ms, silent_s=0.0)
            levels.append((second, tracker.update([sample], float(second))))
    changes = [(s, lv) for (s, lv), (_, before) in zip(levels[1:], levels, strict=False) if lv != before]
    assert levels[0][1] is Level.EXCELLENT
    assert [lv for _, lv in changes] == [Level.POOR, Level.EXCELLENT], changes
    went_poor, recovered = changes[0][0], changes[1][0]
    assert 10 <= went_poor <= 20  # after the 4-second hold (a 2-s sample under 8 % restarts it)
    assert 30 <= recovered <= 42  # after 10 s clearly better
    assert stats.lost > 0
