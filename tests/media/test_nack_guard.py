"""A subscriber slot's resend limits (media/nackguard.py), on a clock the test controls."""

from __future__ import annotations

from media.nackguard import ResendGuard, ResendLimits
from media.publication import RING_SIZE

LIMITS = ResendLimits(hold_off=0.1, max_resends=2, budget=0.2, burst=10)


def test_a_packet_is_resent_once_per_hold_off_and_at_most_max_resends_times() -> None:
    guard = ResendGuard(LIMITS)
    assert [guard.allow(500, 1.0, 0) for _ in range(50)].count(True) == 1  # a burst of duplicates
    assert not guard.allow(500, 1.099, 0)
    assert guard.allow(500, 1.1, 0)  # a round trip later: the first copy may have been lost
    assert not any(guard.allow(500, 1.0 + t, 0) for t in (0.3, 1.0, 5.0))  # twice is all
    assert guard.allow(501, 5.0, 0)  # another packet is another matter


def test_no_resends_at_all_when_max_resends_is_zero() -> None:
    guard = ResendGuard(ResendLimits(max_resends=0))
    assert not any(guard.allow(seq, 1.0, 0) for seq in range(100))


def test_distinct_packets_are_capped_by_the_burst_then_by_a_share_of_what_is_forwarded() -> None:
    guard = ResendGuard(LIMITS)
    assert sum(guard.allow(seq, 1.0, 0) for seq in range(1000)) == 10
    assert sum(guard.allow(seq, 2.0, 40) for seq in range(1000, 2000)) == 8  # 20 % of 40
    # Forwarding refills the bucket only up to the burst.
    assert sum(guard.allow(seq, 3.0, 10_000) for seq in range(2000, 3000)) == 10
    # A restart (the slot takes another publication) forgets the packets but not the spent budget.
    guard.restart(10_000)
    assert not guard.allow(3000, 4.0, 10_000)
    assert guard.allow(3000, 4.0, 10_005)  # one token for 5 forwarded packets


def test_refused_resends_spend_no_budget() -> None:
    guard = ResendGuard(LIMITS)
    assert guard.allow(7, 0.0, 0)
    for _ in range(1000):
        guard.allow(7, 0.0, 0)  # held off, then capped: each refusal is free
    assert sum(guard.allow(seq, 0.0, 0) for seq in range(100, 200)) == 9


def test_the_bookkeeping_stays_bounded_and_keeps_the_newest_packets() -> None:
    guard = ResendGuard(ResendLimits(hold_off=0.1, max_resends=1, budget=1.0, burst=RING_SIZE))
    forwarded = 0
    for seq in range(20 * RING_SIZE):
        forwarded += 1
        assert guard.allow(seq, seq * 0.01, forwarded)
        assert len(guard._sent) <= ResendGuard.MAX_ENTRIES
    newest = 20 * RING_SIZE - 1
    assert not guard.allow(newest, 1e6, forwarded), "the newest packet's count was forgotten"
