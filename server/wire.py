"""Frames on the signalling socket: JSON text or msgpack binary, validated against one schema per type.

One place decodes and validates; handlers receive typed messages, never raw dicts.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from rooms.text import bad_text_message, find_bad_text, is_valid, scrub
from server.nesting import MAX_DEPTH, json_refusal, msgpack_refusal

log = logging.getLogger(__name__)

RequestId = Annotated[str, Meta(max_length=64)] | int | None
StageId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
DisplayName = Annotated[str, Meta(min_length=1, max_length=64)]
Identity = Annotated[str, Meta(min_length=1, max_length=64)]
ParticipantId = Annotated[str, Meta(min_length=1, max_length=64)]
ItemId = Annotated[str, Meta(min_length=1, max_length=64)]
# Text limits that depend on configuration (comment length) are checked by the domain; these bounds
# only stop absurd frames early.
Text = Annotated[str, Meta(min_length=1, max_length=10_000)]
Reason = Annotated[str, Meta(max_length=500)]
Sdp = Annotated[str, Meta(min_length=1, max_length=64 * 1024)]
Kind = Literal["audio", "video"]
# A participant's publisher connections: the camera (and microphone), and a screen share beside it.
Source = Literal["camera", "screen"]


class Message(Struct, tag_field="type", kw_only=True, forbid_unknown_fields=False):
    id: RequestId = None


class Join(Message, tag="join", kw_only=True):
    stage: StageId
    token: Annotated[str, Meta(max_length=4096)] | None = None  # or ?access_token= on the socket's URL
    name: DisplayName | None = None  # shown when the token carries no name
    # Role and identity come from the token; these are accepted (older clients send them) and ignored.
    role: Literal["host", "moderator", "speaker", "audience"] | None = None
    identity: Identity | None = None
    observer: bool = False  # a moderator console (docs/console.md)
    # False: a chat-only socket (bots, viewers who only chat and vote): no subscriber peer connection.
    media: bool = True
    invite: Annotated[str, Meta(min_length=1, max_length=64)] | None = None  # a private club's invite code


class SubscriberAnswer(Message, tag="subscriber.answer", kw_only=True):
    sdp: Sdp


class PublishOffer(Message, tag="publish.offer", kw_only=True):
    sdp: Sdp
    source: Source = "camera"


class PublishMute(Message, tag="publish.mute", kw_only=True):
    kind: Kind
    muted: bool
    source: Source = "camera"


class PublishStop(Message, tag="publish.stop", kw_only=True):
    source: Source = "camera"


class IceCandidateInit(Struct, forbid_unknown_fields=False):
    candidate: Annotated[str, Meta(max_length=1024)]
    sdpMid: str | None = None
    sdpMLineIndex: int | None = None


class IceCandidate(Message, tag="ice.candidate", kw_only=True):
    pc: Literal["publisher", "subscriber", "screen"]  # "screen": the screen share's publisher connection
    candidate: IceCandidateInit | None = None


class Leave(Message, tag="leave", kw_only=True):
    pass


class Ping(Message, tag="ping", kw_only=True):
    pass


class LayerSet(Message, tag="layer.set", kw_only=True):
    """Which video layer this viewer wants: for every speaker, or for ``participant_id`` only."""

    preference: Literal["auto", "high", "low", "audio"]
    participant_id: ParticipantId | None = None


class HistoryGet(Message, tag="history.get", kw_only=True):
    """Older comments or questions than ``joined`` carried (a request, not a stage command)."""

    stage: StageId | None = None
    kind: Literal["comments", "questions"]
    before: ItemId | None = None  # an id; none: the latest
    limit: Annotated[int, Meta(ge=1, le=100)] = 50


# --- stage commands (issue 3): every one may name its stage; another stage is refused ---------


class StageCommand(Message, kw_only=True):
    stage: StageId | None = None


class StageStart(StageCommand, tag="stage.start", kw_only=True):
    pass


class StageEnd(StageCommand, tag="stage.end", kw_only=True):
    pass


class StageLock(StageCommand, tag="stage.lock", kw_only=True):
    locked: bool


class RoleSet(StageCommand, tag="role.set", kw_only=True):
    participant_id: ParticipantId
    role: Literal["moderator", "audience"]


class HandRaise(StageCommand, tag="hand.raise", kw_only=True):
    pass


class HandLower(StageCommand, tag="hand.lower", kw_only=True):
    participant_id: ParticipantId | None = None


class SpeakerInvite(StageCommand, tag="speaker.invite", kw_only=True):
    participant_id: ParticipantId


class InvitationAccept(StageCommand, tag="invitation.accept", kw_only=True):
    pass


class InvitationDecline(StageCommand, tag="invitation.decline", kw_only=True):
    pass


class SpeakerDemote(StageCommand, tag="speaker.demote", kw_only=True):
    participant_id: ParticipantId


class ModerationMute(StageCommand, tag="moderation.mute", kw_only=True):
    participant_id: ParticipantId
    kind: Kind
    muted: bool


class ModerationStopShare(StageCommand, tag="moderation.stop_share", kw_only=True):
    participant_id: ParticipantId


class ModerationRemove(StageCommand, tag="moderation.remove", kw_only=True):
    participant_id: ParticipantId
    reason: Reason = ""


class ModerationBan(StageCommand, tag="moderation.ban", kw_only=True):
    participant_id: ParticipantId
    reason: Reason = ""


class ChatMute(StageCommand, tag="chat.mute", kw_only=True):
    participant_id: ParticipantId
    muted: bool


class ChatSlowMode(StageCommand, tag="chat.slow_mode", kw_only=True):
    seconds: Annotated[int, Meta(ge=0, le=3600)]


class CommentPost(StageCommand, tag="comment.post", kw_only=True):
    text: Text


class CommentDelete(StageCommand, tag="comment.delete", kw_only=True):
    comment_id: ItemId


class CommentPin(StageCommand, tag="comment.pin", kw_only=True):
    comment_id: ItemId | None


class ReactionSend(StageCommand, tag="reaction.send", kw_only=True):
    emoji: Annotated[str, Meta(min_length=1, max_length=16)]


class QuestionAsk(StageCommand, tag="question.ask", kw_only=True):
    text: Text


class QuestionUpvote(StageCommand, tag="question.upvote", kw_only=True):
    question_id: ItemId


class QuestionAnswer(StageCommand, tag="question.answer", kw_only=True):
    question_id: ItemId


class QuestionDismiss(StageCommand, tag="question.dismiss", kw_only=True):
    question_id: ItemId


class PollCreate(StageCommand, tag="poll.create", kw_only=True):
    question: Annotated[str, Meta(min_length=1, max_length=500)]
    options: Annotated[
        list[Annotated[str, Meta(min_length=1, max_length=200)]], Meta(min_length=2, max_length=10)
    ]
    multiple: bool = False
    anonymous: bool = True
    duration_s: Annotated[int, Meta(ge=5, le=3600)] | None = None
    public_results: bool = False
    quiz: bool = False
    correct: Annotated[list[Annotated[int, Meta(ge=0, le=9)]], Meta(max_length=10)] = []


class ConsentGive(StageCommand, tag="consent.give", kw_only=True):
    scopes: Annotated[list[Literal["media", "comments", "share"]], Meta(max_length=3)]
    policy_version: Annotated[str, Meta(min_length=1, max_length=64)]
    method: Literal["join_prompt", "recording_prompt", "settings", "invitation"] = "settings"
    # A record is always about the sender; naming someone else is refused, not ignored.
    participant_id: ParticipantId | None = None


class ConsentWithdraw(StageCommand, tag="consent.withdraw", kw_only=True):
    pass


class RecordingStart(StageCommand, tag="recording.start", kw_only=True):
    pass


class RecordingStop(StageCommand, tag="recording.stop", kw_only=True):
    pass


class PollOpen(StageCommand, tag="poll.open", kw_only=True):
    poll_id: ItemId


class PollClose(StageCommand, tag="poll.close", kw_only=True):
    poll_id: ItemId


class PollVote(StageCommand, tag="poll.vote", kw_only=True):
    poll_id: ItemId
    choices: Annotated[list[Annotated[int, Meta(ge=0, le=9)]], Meta(min_length=1, max_length=10)]


Request = (
    Join
    | SubscriberAnswer
    | PublishOffer
    | PublishMute
    | PublishStop
    | IceCandidate
    | Leave
    | Ping
    | HistoryGet
    | LayerSet
    | StageStart
    | StageEnd
    | StageLock
    | RoleSet
    | HandRaise
    | HandLower
    | SpeakerInvite
    | InvitationAccept
    | InvitationDecline
    | SpeakerDemote
    | ModerationMute
    | ModerationStopShare
    | ModerationRemove
    | ModerationBan
    | ChatMute
    | ChatSlowMode
    | CommentPost
    | CommentDelete
    | CommentPin
    | ReactionSend
    | QuestionAsk
    | QuestionUpvote
    | QuestionAnswer
    | QuestionDismiss
    | PollCreate
    | PollOpen
    | PollClose
    | PollVote
    | ConsentGive
    | ConsentWithdraw
    | RecordingStart
    | RecordingStop
)
TYPES: dict[str, type[Message]] = {cls.__struct_config__.tag: cls for cls in Request.__args__}


class WireError(Exception):
    """A frame that cannot become a request. ``request_id`` is echoed when it could be read."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


_json_decoder = msgspec.json.Decoder()
_msgpack_decoder = msgspec.msgpack.Decoder()
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


def check_depth(data: str | bytes, max_depth: int = MAX_DEPTH, *, binary: bool | None = None) -> None:
    """Refuse a frame nested deeper than ``max_depth`` before any decoder recurses into it (a node
    relaying a frame checks this much before passing it on; server/nesting.py)."""
    if binary is None:
        binary = not isinstance(data, str)
    if binary and isinstance(data, bytes):
        refusal = msgpack_refusal(data, max_depth)
    else:
        refusal = json_refusal(data, max_depth)
    if refusal is not None:
        raise WireError("bad_frame", f"the frame is {refusal}")


def loads(data: str | bytes, *, binary: bool = False, max_depth: int = MAX_DEPTH) -> Any:
    """JSON (a text frame, or an HTTP body's bytes) or, with ``binary``, msgpack, as builtins whose every
    string is valid Unicode. The one reader of what clients send: frames (``decode``) and HTTP bodies.

    Raises WireError: ``bad_frame`` when it is not JSON or msgpack, ``bad_text`` when a string is not
    valid Unicode (a lone UTF-16 surrogate such as the escape "\\ud800", or bytes that are not UTF-8):
    no encoder after us could send it, and one such name once froze a stage. Nesting deeper than
    ``max_depth`` is ``bad_frame`` too, refused before decoding (the decoders recurse).
    """
    check_depth(data, max_depth, binary=binary)
    try:
        raw = (
            _msgpack_decoder.decode(data)
            if binary and isinstance(data, bytes)
            else _json_decoder.decode(data)
        )
    except msgspec.DecodeError as exc:
        raise _not_decoded(data, binary, exc) from None
    except UnicodeEncodeError:  # a str that holds a surrogate itself (aiohttp's text frames never do)
        raise WireError("bad_text", bad_text_message("the frame")) from None
    except RecursionError:  # the last resort: a limit set too high for the stack left here
        raise WireError("bad_frame", "the frame is nested too deep for this node") from None
    # msgspec refuses lone surrogates today; checked in case a version ever does not. In JSON that is
    # valid UTF-8 one can only come from a \u escape: a frame without one is not walked.
    escaped = b"\\u" in data if isinstance(data, bytes) else "\\u" in data
    where = find_bad_text(raw) if binary or escaped else None
    if where is not None:
        raise WireError("bad_text", bad_text_message(where), _request_id(raw))
    return raw


def _not_decoded(data: str | bytes, binary: bool, exc: msgspec.DecodeError) -> WireError:
    """Why msgspec refused ``data``: its message for a lone surrogate escape is "Input data was
    truncated" or "invalid utf-16 surrogate pair", so the standard json module (which accepts them)
    looks again and says where it is; invalid UTF-8 bytes are bad text too."""
    if "UTF-8" in str(exc):
        return WireError("bad_text", "a string is not valid UTF-8")
    if not binary:
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError):
            raw = None
        where = find_bad_text(raw)
        if where is not None:
            return WireError("bad_text", bad_text_message(where), _request_id(raw))
    return WireError("bad_frame", f"frame is not valid {'msgpack' if binary else 'JSON'}: {exc}")


def _request_id(raw: Any) -> str | int | None:
    """The frame's ``id``, to echo in its reply or error, when it is one (see ``RequestId``)."""
    request_id = raw.get("id") if isinstance(raw, dict) else None
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
        return None
    if isinstance(request_id, str) and (len(request_id) > 64 or not is_valid(request_id)):
        return None
    return request_id


def decode(data: str | bytes, max_depth: int = MAX_DEPTH) -> Message:
    """Text frames are JSON, binary frames msgpack. Raises WireError with a precise code."""
    raw = loads(data, binary=not isinstance(data, str), max_depth=max_depth)
    if not isinstance(raw, dict):
        raise WireError("bad_frame", "a frame must be an object")
    request_id = _request_id(raw)
    type_ = raw.get("type")
    cls = TYPES.get(type_) if isinstance(type_, str) else None
    if cls is None:
        shown = type_ if isinstance(type_, str) and len(type_) <= 64 else "?"
        raise WireError("unknown_type", f"unknown message type {shown!r}", request_id)
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise WireError("invalid_message", f"{type_}: {exc}", request_id) from None
    except RecursionError:
        raise WireError("bad_frame", "the frame is nested too deep for this node", request_id) from None


def decode_builtins(data: bytes) -> dict[str, Any]:
    """A server message in msgpack, as a dict (trusted: it comes from another node)."""
    message: dict[str, Any] = _msgpack_decoder.decode(data)
    return message


def encode(message: Struct | dict[str, Any], binary: bool) -> str | bytes:
    """Never raises on text: one frame that cannot be encoded would stop its connection's writer."""
    try:
        if binary:
            return _msgpack_encoder.encode(message)
        return _json_encoder.encode(message).decode()
    except UnicodeEncodeError:
        # Text that is not valid Unicode got past the door (rooms/text.py) and into a message: send it
        # with U+FFFD in its place, and say so loudly, for that is a bug to fix at the door.
        builtins = msgspec.to_builtins(message)
        log.error("a message held text that is not valid Unicode", extra={"type": builtins.get("type")})
        return encode(scrub(builtins), binary)


def ws_frame(payload: bytes, binary: bool) -> bytes:
    """``payload`` as one whole WebSocket data frame from a server (RFC 6455 section 5.2: FIN set, no
    extension bits, opcode 1 text or 2 binary, never masked). A server's frame does not depend on its
    recipient, so one broadcast is framed once per framing and the same bytes go to every socket."""
    first = 0x82 if binary else 0x81
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return _FRAME_HEADER_16.pack(first, 126, size) + payload
    return _FRAME_HEADER_64.pack(first, 127, size) + payload


_FRAME_HEADER_16 = struct.Struct("!BBH")
_FRAME_HEADER_64 = struct.Struct("!BBQ")


class Outgoing:
    """A message sent to many connections: encoded lazily, at most once per framing, and framed as a
    WebSocket frame at most once per framing (``frame``: the bytes a direct write sends).

    ``message`` is one of the schemas the server sends (``server.wire_out.ServerMessage``), or, for a
    message relayed from the stage's node, the dict its bytes decode to (``from_msgpack``).
    """

    __slots__ = ("_json", "_json_frame", "_msgpack", "_msgpack_frame", "message")

    def __init__(self, message: Struct | dict[str, Any]) -> None:
        self.message = message
        self._json: str | None = None
        self._msgpack: bytes | None = None
        self._json_frame: bytes | None = None
        self._msgpack_frame: bytes | None = None

    @classmethod
    def from_msgpack(cls, data: bytes) -> Outgoing:
        """A message that arrives encoded (relayed from another node): decoded once, and its binary
        framing is the bytes themselves."""
        outgoing = cls(decode_builtins(data))
        outgoing._msgpack = data
        return outgoing

    @property
    def type(self) -> str:
        """The message's ``type`` (the outbox's drop policy reads it)."""
        if isinstance(self.message, dict):
            return str(self.message.get("type"))
        return str(self.message.__struct_config__.tag)

    def encoded(self, binary: bool) -> str | bytes:
        if binary:
            if self._msgpack is None:
                self._msgpack = encode(self.message, True)  # type: ignore[assignment]
            return self._msgpack  # type: ignore[return-value]
        if self._json is None:
            self._json = encode(self.message, False)  # type: ignore[assignment]
        return self._json  # type: ignore[return-value]

    def frame(self, binary: bool) -> bytes:
        """The whole WebSocket frame of ``encoded(binary)``, header included (``ws_frame``)."""
        if binary:
            if self._msgpack_frame is None:
                self._msgpack_frame = ws_frame(self.encoded(True), True)  # type: ignore[arg-type]
            return self._msgpack_frame
        if self._json_frame is None:
            self._json_frame = ws_frame(self.encoded(False).encode(), False)  # type: ignore[union-attr]
        return self._json_frame
