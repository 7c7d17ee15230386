"""The tunables of one stage, fixed when it is created (the shell builds them from configuration)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rooms.rates import Rate, RateClass, RateLimits

RECORDING_MODES = ("off", "manual", "auto")


@dataclass(frozen=True, slots=True)
class StageSettings:
    """Limits a stage enforces. Defaults are the documented ``MEDSTAGE_*`` defaults."""

    max_publishers: int = 6  # the media slots every subscriber connection has
    max_screen_shares: int = 1  # concurrent screen shares (each takes a slot pair, as a publisher does)
    comment_max_chars: int = 500
    comment_history: int = 100  # comments a late joiner receives
    comment_rate: int = 5  # comments per person per window...
    comment_rate_window_s: float = 10.0  # ...sliding window, seconds
    rates: RateLimits = field(default_factory=RateLimits)  # every other repeatable command (rooms/rates.py)
    question_max_open: int = 200  # open questions on the stage...
    question_max_per_person: int = 3  # ...and of one person (identity)
    question_history: int = 50  # the latest questions a late joiner receives
    reaction_window_s: float = 1.0  # the shell flushes reactions this often
    leaderboard_size: int = 10
    # Accepting an invitation to speak needs consent to record one's media; so does publishing while
    # the stage records.
    speaking_requires_consent: bool = False
    consent_policy_version: str = "2026-11"  # decisions under another version are refused
    # off: nobody may record; manual: the host and moderators start and stop it; auto: as manual, and
    # recording starts by itself when the stage is live and has never recorded (``Stage.recording_due``).
    recording_mode: str = "off"
    # Days a recording of this stage is kept after it stops (0: forever; None: the node's
    # ``recording_retention_days``): the stage's own, else its club's when the stage was created.
    recording_retention_days: int | None = None

    def __post_init__(self) -> None:
        if self.question_max_open < 1 or self.question_max_per_person < 1 or self.question_history < 0:
            raise ValueError("question_max_open >= 1, question_max_per_person >= 1, question_history >= 0")
        if self.recording_mode not in RECORDING_MODES:
            raise ValueError(f"recording_mode is one of {', '.join(RECORDING_MODES)}")
        if self.max_screen_shares < 0:
            raise ValueError("max_screen_shares >= 0 (0: nobody may share a screen)")
        if self.recording_retention_days is not None and self.recording_retention_days < 0:
            raise ValueError("recording_retention_days >= 0 (0: forever), or None")
        if not self.consent_policy_version:
            raise ValueError("consent_policy_version must not be empty")

    def rate_rules(self) -> dict[RateClass, Rate]:
        """The rate of every class of repeatable command, comments' included."""
        return self.rates.rules(Rate(self.comment_rate, self.comment_rate_window_s))
