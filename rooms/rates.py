"""Rate limits: how often one person may repeat a command, per class of commands.

One sliding window per (identity, class): at most ``count`` accepted commands in any ``window_s``
seconds. Keyed by identity, not by connection, so reconnecting or a second tab does not reset it.
A command is checked before it runs and counted only once it was accepted, so a refused command
(bad text, no permission, over the limit) costs nothing and changes nothing.

Commands that take something back (lowering one's hand, muting oneself, stopping publishing,
withdrawing consent) are never limited: refusing them would keep someone exposed against their
will, and each needs the limited command that put it up first, so toggles stay bounded.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from rooms.errors import RateLimited


class RateClass(enum.StrEnum):
    """Commands that share one limit (docs/protocol.md, "Rate limits")."""

    COMMENT = "comment"  # comment.post
    QUESTION = "question"  # question.ask
    VOTE = "vote"  # question.upvote, poll.vote
    HAND = "hand"  # hand.raise
    REACTION = "reaction"  # reaction.send
    CONSENT = "consent"  # consent.give
    MEDIA = "media"  # publish.offer, publish.mute unmuting
    MODERATION = "moderation"  # every host and moderator command
    JOIN = "join"  # join
    HISTORY = "history"  # history.get
    LAYER = "layer"  # layer.set


_NOUNS = {
    RateClass.COMMENT: "comments",
    RateClass.QUESTION: "questions",
    RateClass.VOTE: "votes",
    RateClass.HAND: "raised hands",
    RateClass.REACTION: "reactions",
    RateClass.CONSENT: "consent decisions",
    RateClass.MEDIA: "publications or unmutes",
    RateClass.MODERATION: "moderator actions",
    RateClass.JOIN: "joins",
    RateClass.HISTORY: "history requests",
    RateClass.LAYER: "layer preferences",
}


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` commands in any ``window_s`` seconds."""

    count: int
    window_s: float

    def __post_init__(self) -> None:
        if self.count < 1 or not self.window_s > 0:
            raise ValueError("a rate is at least 1 command per a window longer than 0 s")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The limit of every class but comments (``StageSettings.comment_rate`` has those, from before).

    Defaults: well above what a person does by hand, far below a script's flood.
    """

    question: Rate = Rate(3, 30.0)
    vote: Rate = Rate(30, 10.0)
    hand: Rate = Rate(5, 30.0)
    reaction: Rate = Rate(30, 10.0)
    consent: Rate = Rate(10, 60.0)
    media: Rate = Rate(20, 10.0)
    moderation: Rate = Rate(100, 10.0)
    join: Rate = Rate(30, 60.0)
    history: Rate = Rate(20, 10.0)
    layer: Rate = Rate(20, 10.0)

    def rules(self, comment: Rate) -> dict[RateClass, Rate]:
        """Every class's rate, comments' included."""
        rules = {RateClass.COMMENT: comment}
        for kind in RateClass:
            if kind is not RateClass.COMMENT:
                rules[kind] = getattr(self, kind.value)
        return rules


_SWEEP_MIN = 256


@dataclass(slots=True)
class RateLimiter:
    """The recent accepted commands of each (identity, class), within its window.

    Memory stays bounded: each key keeps at most ``count`` times, and keys whose window has emptied
    are swept once the table has doubled since the last sweep (amortised O(1) per command).
    """

    rules: Mapping[RateClass, Rate]
    recent: dict[tuple[str, RateClass], tuple[float, ...]] = field(default_factory=dict)
    sweep_at: int = _SWEEP_MIN

    def check(self, identity: str, kind: RateClass, now: float) -> None:
        """Raise ``RateLimited`` (with ``retry_after``) if one more would exceed the rate; changes nothing."""
        rule = self.rules[kind]
        recent = self._within(identity, kind, now)
        if len(recent) >= rule.count:
            retry_after = recent[-rule.count] + rule.window_s - now
            raise RateLimited(
                f"at most {rule.count} {_NOUNS[kind]} per {rule.window_s:g} s", max(retry_after, 0.001)
            )

    def spend(self, identity: str, kind: RateClass, now: float) -> None:
        """Count an accepted command."""
        key = (identity, kind)
        self.recent[key] = (*self._within(identity, kind, now), now)[-self.rules[kind].count :]
        if len(self.recent) > self.sweep_at:
            self._sweep(now)

    def _within(self, identity: str, kind: RateClass, now: float) -> tuple[float, ...]:
        start = now - self.rules[kind].window_s
        return tuple(t for t in self.recent.get((identity, kind), ()) if t > start)

    def _sweep(self, now: float) -> None:
        self.recent = {
            key: times
            for key, times in self.recent.items()
            if times and times[-1] > now - self.rules[key[1]].window_s
        }
        self.sweep_at = max(_SWEEP_MIN, 2 * len(self.recent))
