"""The tunables of one stage, fixed when it is created (the shell builds them from configuration)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StageSettings:
    """Limits a stage enforces. Defaults are the documented ``MEDSTAGE_*`` defaults."""

    max_publishers: int = 6  # the media slots every subscriber connection has
    comment_max_chars: int = 500
    comment_history: int = 100  # comments a late joiner receives
    comment_rate: int = 5  # comments per person per window...
    comment_rate_window_s: float = 10.0  # ...sliding window, seconds
    reaction_window_s: float = 1.0  # the shell flushes reactions this often
    leaderboard_size: int = 10
    speaking_requires_consent: bool = False  # issue 4: stored, not enforced yet
