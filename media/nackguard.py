"""How often a subscriber slot's NACKs are answered: a viewer must not be able to make the node resend.

A NACK costs the viewer 16 bytes of RTCP and the node an SRTP-protected copy of up to 1,200 bytes per
sequence number it names (one NACK can name thousands), so an unbounded answer is an amplification
attack on the node's CPU and uplink, and a viewer that cannot receive retransmissions (a broken one)
NACKs the same packets again and again. Each slot therefore resends (as LiveKit's sequencer does):

- one packet at most ``max_resends`` times, and not again within ``hold_off`` of the last time (a
  retransmission needs a round trip to arrive: a NACK repeated sooner is a duplicate);
- at most ``burst`` packets at once, refilled by ``budget`` of every packet forwarded to the slot
  (a token bucket counted in packets: the CPU cost is per packet, and a packet is at most one MTU).

Nothing here runs per forwarded packet: the budget is refilled when a NACK arrives, from the
publication's forwarded-packet counter that the forwarding path keeps anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

# How far back a NACK can reach: the forwarding ring of each publication (media/publication.py) keeps
# this many packets (≈ 8 s of 1 Mbit/s video); older ones are gone.
RING_SIZE = 1024


@dataclass(frozen=True, slots=True)
class ResendLimits:
    """Per subscriber slot (docs/configuration.md, ``nack_*``)."""

    hold_off: float = 0.1  # seconds before the same packet is resent to the slot again
    max_resends: int = 2  # per packet per slot
    budget: float = 0.2  # resent packets per forwarded packet, beyond the burst
    burst: int = 100  # packets the slot may have resent at once


class ResendGuard:
    """One slot's resend bookkeeping, in the publication's packet numbering."""

    __slots__ = ("_basis", "_budget", "_burst", "_hold_off", "_max", "_newest", "_sent", "_tokens", "limits")

    # Bookkeeping kept per slot, at most: a packet older than the publication's ring cannot be
    # resent anyway, and the default budget lets fewer through in a ring's span.
    MAX_ENTRIES = 512

    def __init__(self, limits: ResendLimits) -> None:
        self.limits = limits
        self._hold_off = limits.hold_off
        self._max = limits.max_resends
        self._budget = limits.budget
        self._burst = float(limits.burst)
        self._tokens = float(limits.burst)
        self._basis = 0  # the publication's forwarded-packet count at the last refill
        self._newest = 0
        self._sent: dict[int, tuple[int, float]] = {}  # packet -> (times resent, last time)

    def restart(self, packets: int) -> None:
        """The slot starts forwarding (a new publication's numbering): forget the packets, keep the
        tokens (a viewer must not refill its budget by making its slot restart), refill from now."""
        self._sent.clear()
        self._newest = 0
        self._basis = packets

    def allow(self, seq: int, now: float, packets: int) -> bool:
        """May packet ``seq`` be resent at ``now``? ``packets``: the publication's forwarded count.
        True spends one token and records the resend."""
        sent = self._sent.get(seq)
        if sent is None:
            count = 1
        else:
            count = sent[0] + 1
            if now - sent[1] < self._hold_off:
                return False
        if count > self._max:
            return False
        tokens = self._tokens + (packets - self._basis) * self._budget
        self._basis = packets
        if tokens > self._burst:
            tokens = self._burst
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        self._sent[seq] = (count, now)
        if seq > self._newest:
            self._newest = seq
        if len(self._sent) > self.MAX_ENTRIES:
            self._prune()
        return True

    def _prune(self) -> None:
        """Forget packets out of the ring, then the oldest recorded down to half the cap: each
        prune removes at least half, so its cost is constant per resend."""
        horizon = self._newest - RING_SIZE
        kept = [(seq, entry) for seq, entry in self._sent.items() if seq > horizon]
        self._sent = dict(kept[-(self.MAX_ENTRIES // 2) :])
