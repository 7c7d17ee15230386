"""What people see of comments, questions, polls and the stage: the nested objects of the wire.

Frozen msgspec structs, so an event that carries one encodes straight to its wire message.
"""

from __future__ import annotations

import msgspec


class View(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the nested wire objects."""


class StageView(View, frozen=True, kw_only=True):
    id: str
    title: str
    state: str
    locked: bool


class CommentView(View, frozen=True, kw_only=True):
    id: str
    author_id: str
    author_name: str
    text: str
    at: float


class QuestionView(View, frozen=True, kw_only=True):
    """A question as everyone sees it; a snapshot adds ``voted`` for its reader."""

    id: str
    author_id: str
    author_name: str
    text: str
    votes: int
    status: str  # open | answered | dismissed
    at: float


class PollResults(View, frozen=True, kw_only=True, omit_defaults=True):
    """Votes per option and the number of ballots; ``correct`` only for a closed quiz."""

    counts: tuple[int, ...]
    ballots: int
    correct: tuple[int, ...] | None = None


class PollView(View, frozen=True, kw_only=True):
    """A poll as its reader may see it; ``results`` is null until they may see them.

    ``correct`` is shown to moderators only (in drafts and their snapshots); everyone else learns it
    from the results when a quiz closes. A snapshot adds ``my_choices``.
    """

    id: str
    question: str
    options: tuple[str, ...]
    multiple: bool
    anonymous: bool
    public_results: bool
    quiz: bool
    status: str  # draft | open | closed
    duration_s: int | None
    closes_at: float | None
    results: PollResults | None = None
    correct: tuple[int, ...] | None = None


class LeaderboardEntry(View, frozen=True, kw_only=True):
    participant_id: str
    name: str
    score: int


class InvitationView(View, frozen=True, kw_only=True):
    participant_id: str
    by: str
    by_name: str
    at: float


class RecordingView(View, frozen=True, kw_only=True):
    """Whether the stage records now (``mode``: off, manual or auto)."""

    mode: str
    active: bool
    session_id: str | None


class ConsentView(View, frozen=True, kw_only=True):
    """A person's own current decision, as their snapshot shows it."""

    scopes: tuple[str, ...]
    decision: str
    at: float


class ConsentSummary(View, frozen=True, kw_only=True):
    """For moderators: people present (by identity) who granted a scope, declined or withdrew, or have
    not decided under the current policy."""

    granted: int
    declined: int
    none: int
