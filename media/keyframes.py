"""Keyframe requests towards a publisher: coalesced, rate-limited, repeated until answered.

Pure policy (time comes in as ``now``); ``Publication`` owns the timer that calls ``due``.
"""

from __future__ import annotations


class KeyframePolicy:
    """Upstream PLI policy for one publication.

    Any number of requests (joining subscribers, their PLI/FIR, our own assembler after a loss)
    collapse into one pending request; a PLI goes upstream at most every ``min_interval`` seconds and
    is repeated at that pace until a keyframe arrives, which clears the request.
    """

    __slots__ = ("_last_sent", "min_interval", "pending", "sent")

    def __init__(self, min_interval: float = 0.5) -> None:
        self.min_interval = min_interval
        self.pending = False
        self._last_sent = float("-inf")
        self.sent = 0

    def request(self, now: float) -> bool:
        """Note a request; True when a PLI should go upstream right now."""
        self.pending = True
        return self._maybe_send(now)

    def due(self, now: float) -> bool:
        """Called by the owner's timer: True when a pending request should be repeated now."""
        return self.pending and self._maybe_send(now)

    def next_due(self, now: float) -> float | None:
        """Seconds until ``due`` may return True, or None when nothing is pending."""
        if not self.pending:
            return None
        return max(0.0, self._last_sent + self.min_interval - now)

    def keyframe_received(self) -> None:
        self.pending = False

    def _maybe_send(self, now: float) -> bool:
        if now - self._last_sent >= self.min_interval:
            self._last_sent = now
            self.sent += 1
            return True
        return False
