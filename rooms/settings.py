"""The tunables of one stage, fixed when it is created (the shell builds them from configuration)."""

from __future__ import annotations

from dataclasses import dataclass

RECORDING_MODES = ("off", "manual", "auto")


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
    # Accepting an invitation to speak needs consent to record one's media; so does publishing while
    # the stage records.
    speaking_requires_consent: bool = False
    consent_policy_version: str = "2026-11"  # decisions under another version are refused
    # off: nobody may record; manual: the host and moderators start and stop it; auto: as manual, and
    # recording starts by itself when the stage is live and has never recorded (``Stage.recording_due``).
    recording_mode: str = "off"

    def __post_init__(self) -> None:
        if self.recording_mode not in RECORDING_MODES:
            raise ValueError(f"recording_mode is one of {', '.join(RECORDING_MODES)}")
        if not self.consent_policy_version:
            raise ValueError("consent_policy_version must not be empty")
