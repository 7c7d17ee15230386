"""Reactions: ephemeral, counted per emoji and flushed as one ``reactions`` event per window."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rooms.errors import InvalidMessage

EMOJI = ("👏", "❤️", "👍", "😂", "😮", "🎉", "🙏")
_ALIASES = {"\u2764": "\u2764\ufe0f"}  # a heart without the emoji presentation selector


def normalise(emoji: str) -> str:
    emoji = _ALIASES.get(emoji, emoji)
    if emoji not in EMOJI:
        raise InvalidMessage(f"reactions are one of {' '.join(EMOJI)}")
    return emoji


@dataclass(slots=True)
class ReactionCounter:
    """Counts per emoji since the last flush; at most one flush per ``window_s``, so the shell may
    call ``flush`` as often as it ticks."""

    window_s: float
    counts: Counter[str] = field(default_factory=Counter)
    last_flush: float | None = None

    def add(self, emoji: str) -> None:
        self.counts[emoji] += 1

    def flush(self, now: float) -> dict[str, int]:
        """The counts since the last flush, most frequent first, once the window has passed; else {}."""
        if not self.counts or (self.last_flush is not None and now - self.last_flush < self.window_s):
            return {}
        counts = dict(self.counts.most_common())
        self.counts.clear()
        self.last_flush = now
        return counts

    def clear(self) -> None:
        self.counts.clear()
