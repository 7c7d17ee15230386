"""Events a stage emits and the ordered log that numbers them.

Each event is a frozen msgspec struct tagged with its wire ``type`` (docs/protocol.md, "Stage events"),
so ``msgspec.json.encode(event)`` is the wire message, ``seq`` and ``at`` included. Each event says who
may see it (``audience()``); the shell delivers it to exactly those people.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Union

import msgspec

from rooms.consent import ConsentRecord
from rooms.views import (
    CommentView,
    InvitationView,
    LeaderboardEntry,
    PollResults,
    PollView,
    QuestionView,
    StageView,
)

__all__ = [
    "EVENT_TYPES",
    "EVERYONE",
    "MODERATORS",
    "Audience",
    "ChatUpdated",
    "CommentDeleted",
    "CommentPinned",
    "CommentPosted",
    "CommentView",
    "ConsentRecord",
    "ConsentRecorded",
    "ConsentRequested",
    "Event",
    "EventLog",
    "HandsUpdated",
    "Invitation",
    "InvitationAnswered",
    "InvitationView",
    "LeaderboardEntry",
    "ModerationAudit",
    "ObserverJoined",
    "ObserverLeft",
    "ParticipantJoined",
    "ParticipantLeft",
    "ParticipantRemoved",
    "ParticipantUpdated",
    "PollClosed",
    "PollCounts",
    "PollCreated",
    "PollOpened",
    "PollResults",
    "PollView",
    "PollVoters",
    "PublishingStarted",
    "PublishingStopped",
    "QuestionAsked",
    "QuestionUpdated",
    "QuestionView",
    "QuizLeaderboard",
    "QuizResult",
    "Reactions",
    "RecordingStarted",
    "RecordingStopped",
    "ShareStopped",
    "StageEnded",
    "StageUpdated",
    "StageView",
    "decode_event",
]


@dataclass(frozen=True, slots=True)
class Audience:
    """Who may see an event: everyone present, or the moderators (host and moderators), plus ``persons``."""

    everyone: bool = False
    moderators: bool = False
    persons: frozenset[str] = field(default_factory=frozenset)


EVERYONE = Audience(everyone=True)
MODERATORS = Audience(moderators=True)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """One thing that happened on a stage. ``seq`` is given by the ``EventLog`` (0 until logged)."""

    # Internal events never reach a client as such: the shell turns them into other messages.
    internal: ClassVar[bool] = False

    stage: str = msgspec.field(name="stage_id")  # "stage" on the wire is stage.updated's object
    at: float
    seq: int = 0

    def audience(self) -> Audience:
        return EVERYONE


# --- participants --------------------------------------------------------------------------------
# The shell sends the participant object (Participant.snapshot()) in place of the id for these.


class ParticipantJoined(Event, frozen=True, kw_only=True, tag="participant.joined"):
    participant: str


class ParticipantLeft(Event, frozen=True, kw_only=True, tag="participant.left"):
    participant: str = msgspec.field(name="participant_id")


class ParticipantUpdated(Event, frozen=True, kw_only=True, tag="participant.updated"):
    """Role, publishing, mutes, chat mute or hand changed."""

    participant: str


class PublishingStarted(Event, frozen=True, kw_only=True, tag="publishing.started"):
    """Internal: the shell sends ``participant.updated`` and assigns media slots."""

    internal: ClassVar[bool] = True

    participant: str
    kinds: tuple[str, ...]
    source: str = "camera"  # or "screen": the participant's screen share (rooms/sharing.py)


class PublishingStopped(Event, frozen=True, kw_only=True, tag="publishing.stopped"):
    """Internal: the shell sends ``participant.updated`` and unpublishes the media at once."""

    internal: ClassVar[bool] = True

    participant: str
    source: str = "camera"  # or "screen"


class ShareStopped(Event, frozen=True, kw_only=True, tag="share.stopped"):
    """A moderator stopped this person's screen share: the sharer is told (everyone else sees the
    ``participant.updated`` and their slots released)."""

    participant_id: str
    by: str

    def audience(self) -> Audience:
        return Audience(persons=frozenset({self.participant_id}))


class ParticipantRemoved(Event, frozen=True, kw_only=True, tag="participant.removed"):
    """Removed (may rejoin) or banned (the identity never rejoins); the person is told too."""

    participant_id: str
    banned: bool
    reason: str
    by: str

    def audience(self) -> Audience:
        return Audience(everyone=True, persons=frozenset({self.participant_id}))


class ObserverJoined(Event, frozen=True, kw_only=True, tag="observer.joined"):
    """A moderator console (an observer: not on the stage, not in participant lists) joined."""

    participant_id: str
    name: str
    role: str

    def audience(self) -> Audience:
        return MODERATORS


class ObserverLeft(Event, frozen=True, kw_only=True, tag="observer.left"):
    participant_id: str

    def audience(self) -> Audience:
        return MODERATORS


# --- moderation ----------------------------------------------------------------------------------

AuditDetail = str | int | bool | None


class ModerationAudit(Event, frozen=True, kw_only=True, tag="moderation.audit"):
    """One moderator action (``action``: its wire command type), logged in the batch of its effects.

    ``target`` is a participant, comment, question, poll or recording session id, or null (the stage
    itself); ``target_identity`` and ``target_name`` are set when it is a person. ``details`` holds
    the command's parameters (``{"kind": "audio", "muted": true}``, ``{"seconds": 30}``...).
    """

    actor: str
    actor_identity: str
    actor_name: str
    action: str
    target: str | None = None
    target_identity: str | None = None
    target_name: str | None = None
    reason: str | None = None
    details: dict[str, AuditDetail] = {}

    def audience(self) -> Audience:
        return MODERATORS


# --- the stage -----------------------------------------------------------------------------------


class StageUpdated(Event, frozen=True, kw_only=True, tag="stage.updated"):
    info: StageView = msgspec.field(name="stage")


class StageEnded(Event, frozen=True, kw_only=True, tag="stage.ended"):
    pass


# --- hands and invitations -----------------------------------------------------------------------


class HandsUpdated(Event, frozen=True, kw_only=True, tag="hands.updated"):
    hands: tuple[str, ...]  # participant ids in queue order


class Invitation(Event, frozen=True, kw_only=True, tag="invitation"):
    participant_id: str
    by: str
    by_name: str

    def audience(self) -> Audience:
        return Audience(moderators=True, persons=frozenset({self.participant_id}))


class InvitationAnswered(Event, frozen=True, kw_only=True, tag="invitation.answered"):
    participant_id: str
    accepted: bool

    def audience(self) -> Audience:
        return Audience(moderators=True, persons=frozenset({self.participant_id}))


# --- chat ----------------------------------------------------------------------------------------


class ChatUpdated(Event, frozen=True, kw_only=True, tag="chat.updated"):
    slow_mode_s: int


class CommentPosted(Event, frozen=True, kw_only=True, tag="comment.posted"):
    comment: CommentView


class CommentDeleted(Event, frozen=True, kw_only=True, tag="comment.deleted"):
    comment_id: str
    by: str


class CommentPinned(Event, frozen=True, kw_only=True, tag="comment.pinned"):
    comment: CommentView | None


class Reactions(Event, frozen=True, kw_only=True, tag="reactions"):
    counts: dict[str, int]


# --- questions -----------------------------------------------------------------------------------


class QuestionAsked(Event, frozen=True, kw_only=True, tag="question.asked"):
    question: QuestionView


class QuestionUpdated(Event, frozen=True, kw_only=True, tag="question.updated"):
    question: QuestionView


# --- polls and quizzes ---------------------------------------------------------------------------


class PollCreated(Event, frozen=True, kw_only=True, tag="poll.created"):
    poll: PollView  # a draft

    def audience(self) -> Audience:
        return MODERATORS


class PollOpened(Event, frozen=True, kw_only=True, tag="poll.opened"):
    poll: PollView


class PollCounts(Event, frozen=True, kw_only=True, tag="poll.counts"):
    """Live counts after a ballot. ``public_results`` is on the wire too: it decides the audience."""

    poll_id: str
    counts: tuple[int, ...]
    ballots: int
    public_results: bool

    def audience(self) -> Audience:
        return EVERYONE if self.public_results else MODERATORS


class PollClosed(Event, frozen=True, kw_only=True, tag="poll.closed"):
    poll: PollView  # with results


class PollVoters(Event, frozen=True, kw_only=True, tag="poll.voters"):
    """Who chose what in a named (non-anonymous) poll: moderators only."""

    poll_id: str
    voters: dict[str, tuple[int, ...]]

    def audience(self) -> Audience:
        return MODERATORS


class QuizResult(Event, frozen=True, kw_only=True, tag="quiz.result"):
    """Whether one voter was right, and their total; ``participant_id`` is that voter."""

    participant_id: str
    poll_id: str
    correct: bool
    score: int

    def audience(self) -> Audience:
        return Audience(persons=frozenset({self.participant_id}))


class QuizLeaderboard(Event, frozen=True, kw_only=True, tag="quiz.leaderboard"):
    entries: tuple[LeaderboardEntry, ...]


# --- consent and recording -----------------------------------------------------------------------


class ConsentRecorded(Event, frozen=True, kw_only=True, tag="consent.recorded"):
    """A decision, change or withdrawal: to the person it is about and to moderators."""

    record: ConsentRecord

    def audience(self) -> Audience:
        return Audience(moderators=True, persons=frozenset({self.record.participant_id}))


class ConsentRequested(Event, frozen=True, kw_only=True, tag="consent.requested"):
    """Recording started and this person has not decided under the current policy: ask them."""

    participant_id: str
    policy_version: str
    session_id: str

    def audience(self) -> Audience:
        return Audience(persons=frozenset({self.participant_id}))


class RecordingStarted(Event, frozen=True, kw_only=True, tag="recording.started"):
    """``by`` is the host or moderator who started it, or null when the stage started it by itself."""

    session_id: str
    by: str | None


class RecordingStopped(Event, frozen=True, kw_only=True, tag="recording.stopped"):
    """``by`` is null and ``reason`` says why when the recorder stopped by itself (a full disk...)."""

    session_id: str
    by: str | None
    reason: str | None = None


EVENT_TYPES: tuple[type[Event], ...] = (
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    PublishingStarted,
    PublishingStopped,
    ShareStopped,
    ParticipantRemoved,
    ObserverJoined,
    ObserverLeft,
    ModerationAudit,
    StageUpdated,
    StageEnded,
    HandsUpdated,
    Invitation,
    InvitationAnswered,
    ChatUpdated,
    CommentPosted,
    CommentDeleted,
    CommentPinned,
    Reactions,
    QuestionAsked,
    QuestionUpdated,
    PollCreated,
    PollOpened,
    PollCounts,
    PollClosed,
    PollVoters,
    QuizResult,
    QuizLeaderboard,
    ConsentRecorded,
    ConsentRequested,
    RecordingStarted,
    RecordingStopped,
)

_DECODER: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Union[EVENT_TYPES])  # noqa: UP007


def decode_event(data: bytes | str) -> Event:
    """An event back from its JSON wire form (the log's other readers: recorder, other nodes)."""
    return _DECODER.decode(data)


class EventLog:
    """The stage's ordered log: every event gets the next ``seq`` (1, 2, 3, ... with no gaps).

    A stage another node took over continues the shared log: its first event is ``start_seq + 1``.
    """

    __slots__ = ("events", "start_seq")

    def __init__(self, start_seq: int = 0) -> None:
        if start_seq < 0:
            raise ValueError("start_seq must not be negative")
        self.start_seq = start_seq
        self.events: list[Event] = []

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else self.start_seq

    def append(self, events: list[Event]) -> list[Event]:
        """Number ``events`` in order, keep them, and return the numbered copies."""
        first = self.last_seq + 1
        numbered = [msgspec.structs.replace(e, seq=first + i) for i, e in enumerate(events)]
        self.events.extend(numbered)
        return numbered

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventLog):
            return False
        return (self.start_seq, self.events) == (other.start_seq, other.events)

    __hash__ = None  # type: ignore[assignment]
