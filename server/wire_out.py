"""Frames the server sends on the signalling socket, one msgspec schema per ``type``: the counterpart
of the requests in ``server.wire``.

Three families share the ``type`` tag and make one union, ``ServerMessage`` (docs/protocol.md,
"Messages the server sends", documents every one of them, field by field):
- replies (``ServerFrame``: ``id`` echoes the request) and notices (``Notice``), defined here;
- the SFU's messages to a subscriber, defined by media/ (``media.messages``: media sits below the
  server and cannot import these);
- stage events that go out as the domain made them (``rooms.events``), ``seq`` and ``at`` included.
  ``participant.joined`` and ``participant.updated`` are the exception: the domain names the person,
  the wire carries their participant object, so those two are defined here.

The browser (server/static/stage.js) and the console (server/console/model.py) read the same shapes.
A field that is sometimes absent is ``UNSET`` (never sent as null), as it was when frames were dicts.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec
from msgspec import UNSET, Struct, UnsetType

from media.messages import MEDIA_MESSAGES, SlotLayout
from rooms.consent import ConsentRecord
from rooms.events import EVENT_TYPES, ParticipantJoined, ParticipantUpdated
from rooms.views import (
    CommentView,
    ConsentSummary,
    ConsentView,
    InvitationView,
    LeaderboardEntry,
    PollResults,
    PollView,
    QuestionView,
    RecordingView,
    StageView,
)

RequestId = str | int


# --- nested objects ------------------------------------------------------------------------------


class Kinds(Struct, kw_only=True):
    audio: bool
    video: bool


class ParticipantInfo(Struct, kw_only=True):
    """A participant object (``rooms.stage.Participant.snapshot()``); ``observer`` only for a console."""

    id: str
    name: str
    role: Literal["host", "moderator", "speaker", "audience"]
    publishing: Kinds
    muted: Kinds
    moderator_muted: Kinds
    sharing: Kinds
    share_muted: Kinds
    chat_muted: bool
    hand_raised: bool
    quality: Literal["excellent", "good", "poor", "lost"] | None  # None until measured
    observer: bool | UnsetType = UNSET


class QuestionSnapshot(QuestionView, frozen=True, kw_only=True):
    """A question as its reader sees it in ``state`` and ``history``: ``voted`` by them."""

    voted: bool


class PollSnapshot(PollView, frozen=True, kw_only=True):
    """A poll in ``state``: the reader's own ``my_choices``; ``voters`` for moderators, closed named polls."""

    my_choices: list[int] | None
    voters: dict[str, list[int]] | UnsetType = UNSET


class ConsentSnapshot(Struct, kw_only=True):
    """The reader's own decision under the current policy (null until they decide); moderators also
    get ``summary``."""

    policy_version: str
    mine: ConsentView | None
    summary: ConsentSummary | UnsetType = UNSET


class StageSnapshot(Struct, kw_only=True):
    """The stage as one person may see it (``rooms.stage.Stage.snapshot_for``): ``joined.state``,
    ``state.state``."""

    seq: int
    comments: list[CommentView]
    pinned: CommentView | None
    slow_mode_s: int
    questions: list[QuestionSnapshot]
    more_comments: bool
    more_questions: bool
    hands: list[str]
    invitation: InvitationView | None
    polls: list[PollSnapshot]
    leaderboard: list[LeaderboardEntry]
    recording: RecordingView
    consent: ConsentSnapshot


class HistoryItem(Struct, kw_only=True):
    """A comment, or a question (which adds ``votes``, ``status`` and ``voted``)."""

    id: str
    author_id: str
    author_name: str
    text: str
    at: float
    votes: int | UnsetType = UNSET
    status: str | UnsetType = UNSET
    voted: bool | UnsetType = UNSET


class IceServerInfo(Struct, kw_only=True):
    """An entry for the browser's ``RTCPeerConnection({iceServers})``."""

    urls: list[str]
    username: str | UnsetType = UNSET
    credential: str | UnsetType = UNSET


class Policy(Struct, kw_only=True):
    """The stage's consent policy: its version (what ``consent.give`` names) and its text."""

    version: str
    text: str


# --- replies and notices -------------------------------------------------------------------------


class ServerFrame(Struct, kw_only=True, tag_field="type"):
    """A message from the server itself. ``id`` echoes the request it answers; absent otherwise."""

    id: RequestId | UnsetType = UNSET


class Notice(Struct, kw_only=True, tag_field="type"):
    """A message the server sends of itself, answering nothing."""


class Joined(ServerFrame, kw_only=True, tag="joined"):
    participant: ParticipantInfo
    stage: StageView
    participants: list[ParticipantInfo]  # the others present
    observers: list[ParticipantInfo] | UnsetType = UNSET  # moderators only: consoles watching
    ice_servers: list[IceServerInfo]
    ice_transport_policy: Literal["all", "relay"]  # for the browser's RTCPeerConnection
    nodes: list[str]  # the live nodes' public URLs, this one first: where to go if it dies
    state: StageSnapshot
    policy: Policy


class Ok(ServerFrame, kw_only=True, tag="ok"):
    """A request done. Commands that create something name it."""

    comment_id: str | UnsetType = UNSET  # comment.post
    question_id: str | UnsetType = UNSET  # question.ask
    poll_id: str | UnsetType = UNSET  # poll.create
    record_id: str | UnsetType = UNSET  # consent.give, consent.withdraw
    session_id: str | UnsetType = UNSET  # recording.start


class Pong(ServerFrame, kw_only=True, tag="pong"):
    pass


class Left(ServerFrame, kw_only=True, tag="left"):
    pass


class SubscriberReady(ServerFrame, kw_only=True, tag="subscriber.ready"):
    pass


class PublishAnswer(ServerFrame, kw_only=True, tag="publish.answer"):
    sdp: str


class History(ServerFrame, kw_only=True, tag="history"):
    kind: Literal["comments", "questions"]
    items: list[HistoryItem]  # oldest first
    more: bool  # older ones are kept


class State(Notice, kw_only=True, tag="state"):
    """The reader's whole view changed (they became, or stopped being, a moderator)."""

    state: StageSnapshot


class Nodes(Notice, kw_only=True, tag="nodes"):
    """The live nodes changed (one came or went): their public URLs, the stage's node first."""

    nodes: list[str]


class Error(ServerFrame, kw_only=True, tag="error"):
    code: str
    message: str
    retry_after: float | UnsetType = UNSET  # seconds, for codes that say to come back later


class ParticipantEvent(Notice, kw_only=True):
    """A participant event with the person's object in place of their id (``rooms.events``)."""

    stage_id: str
    seq: int
    at: float
    participant: ParticipantInfo


class ParticipantJoinedMessage(ParticipantEvent, kw_only=True, tag="participant.joined"):
    pass


class ParticipantUpdatedMessage(ParticipantEvent, kw_only=True, tag="participant.updated"):
    """Role, publishing, mutes, chat mute or hand changed."""


SERVER_FRAMES: tuple[type[Struct], ...] = (
    Joined,
    Ok,
    Pong,
    Left,
    SubscriberReady,
    PublishAnswer,
    History,
    State,
    Nodes,
    Error,
    ParticipantJoinedMessage,
    ParticipantUpdatedMessage,
)

# Events the shell sends as something else, or not at all.
_NOT_SENT_AS_IS = (ParticipantJoined, ParticipantUpdated)
EVENTS_SENT: tuple[type[Struct], ...] = tuple(
    e for e in EVENT_TYPES if not e.internal and e not in _NOT_SENT_AS_IS
)

SERVER_MESSAGES: tuple[type[Struct], ...] = (*SERVER_FRAMES, *MEDIA_MESSAGES, *EVENTS_SENT)
ServerMessage: Any = Union[SERVER_MESSAGES]  # noqa: UP007  (a runtime union of the tuple)


# The objects inside them, by the name docs/protocol.md ("Objects in messages") gives each.
OBJECTS: dict[str, type[Struct]] = {
    "participant": ParticipantInfo,
    "kinds": Kinds,
    "stage": StageView,
    "state": StageSnapshot,
    "comment": CommentView,
    "question": QuestionView,
    "question (state, history)": QuestionSnapshot,
    "poll": PollView,
    "poll (state)": PollSnapshot,
    "poll results": PollResults,
    "leaderboard entry": LeaderboardEntry,
    "invitation": InvitationView,
    "recording": RecordingView,
    "consent": ConsentSnapshot,
    "consent decision": ConsentView,
    "consent summary": ConsentSummary,
    "consent record": ConsentRecord,
    "history item": HistoryItem,
    "slot": SlotLayout,
    "ice server": IceServerInfo,
    "policy": Policy,
}


def tag_of(cls: type[Struct]) -> str:
    return str(cls.__struct_config__.tag)


# --- building them from the domain's builtins ----------------------------------------------------
# rooms/ keeps its snapshots as builtins (the console, the HTTP API and the durable state read them);
# converting them here checks, on every send, that what goes out is what the schema says.


def participant(snapshot: dict[str, object]) -> ParticipantInfo:
    return msgspec.convert(snapshot, ParticipantInfo)


def stage_state(snapshot: dict[str, object]) -> StageSnapshot:
    return msgspec.convert(snapshot, StageSnapshot)


def history(page: dict[str, object]) -> History:
    return msgspec.convert(page, History)


def stage_info(snapshot: dict[str, object]) -> StageView:
    return msgspec.convert(snapshot, StageView)


def ice_server(entry: dict[str, object]) -> IceServerInfo:
    return msgspec.convert(entry, IceServerInfo)
