"""Upstream PLI policy: coalesced, rate-limited, repeated until answered."""

from __future__ import annotations

from media.keyframes import KeyframePolicy


def test_many_requests_in_one_interval_send_one_pli() -> None:
    policy = KeyframePolicy(min_interval=0.5)
    sent = [policy.request(now=10.0 + i * 0.01) for i in range(20)]
    assert sent.count(True) == 1 and sent[0]


def test_a_pending_request_is_repeated_at_the_interval_until_a_keyframe() -> None:
    policy = KeyframePolicy(min_interval=0.5)
    assert policy.request(0.0)
    assert not policy.due(0.3)
    assert policy.next_due(0.3) == 0.2
    assert policy.due(0.5)
    assert policy.due(1.0)
    policy.keyframe_received()
    assert not policy.due(2.0)
    assert policy.next_due(2.0) is None
    assert policy.sent == 3


def test_a_request_after_the_keyframe_goes_out_if_the_interval_passed() -> None:
    policy = KeyframePolicy(min_interval=0.5)
    policy.request(0.0)
    policy.keyframe_received()
    assert not policy.request(0.2)  # too soon: stays pending
    assert policy.pending
    assert policy.due(0.5)
