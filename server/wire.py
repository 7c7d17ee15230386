"""Frames on the signalling socket: JSON text or msgpack binary, validated against one schema per type.

One place decodes and validates; handlers receive typed messages, never raw dicts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

RequestId = Annotated[str, Meta(max_length=64)] | int | None
StageId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
DisplayName = Annotated[str, Meta(min_length=1, max_length=64)]
Sdp = Annotated[str, Meta(min_length=1, max_length=64 * 1024)]
Kind = Literal["audio", "video"]


class Message(Struct, tag_field="type", kw_only=True, forbid_unknown_fields=False):
    id: RequestId = None


class Join(Message, tag="join"):
    stage: StageId
    name: DisplayName
    role: Literal["host", "speaker", "audience"]


class SubscriberAnswer(Message, tag="subscriber.answer"):
    sdp: Sdp


class PublishOffer(Message, tag="publish.offer"):
    sdp: Sdp


class PublishMute(Message, tag="publish.mute"):
    kind: Kind
    muted: bool


class PublishStop(Message, tag="publish.stop"):
    pass


class IceCandidateInit(Struct, forbid_unknown_fields=False):
    candidate: Annotated[str, Meta(max_length=1024)]
    sdpMid: str | None = None
    sdpMLineIndex: int | None = None


class IceCandidate(Message, tag="ice.candidate"):
    pc: Literal["publisher", "subscriber"]
    candidate: IceCandidateInit | None = None


class Leave(Message, tag="leave"):
    pass


class Ping(Message, tag="ping"):
    pass


Request = Join | SubscriberAnswer | PublishOffer | PublishMute | PublishStop | IceCandidate | Leave | Ping
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


def decode(data: str | bytes) -> Message:
    """Text frames are JSON, binary frames msgpack. Raises WireError with a precise code."""
    try:
        raw = _json_decoder.decode(data) if isinstance(data, str) else _msgpack_decoder.decode(data)
    except msgspec.DecodeError as exc:
        kind = "JSON" if isinstance(data, str) else "msgpack"
        raise WireError("bad_frame", f"frame is not valid {kind}: {exc}") from None
    if not isinstance(raw, dict):
        raise WireError("bad_frame", "a frame must be an object")
    request_id = raw.get("id")
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
        request_id = None
    elif isinstance(request_id, str) and len(request_id) > 64:
        request_id = None
    type_ = raw.get("type")
    cls = TYPES.get(type_) if isinstance(type_, str) else None
    if cls is None:
        shown = type_ if isinstance(type_, str) and len(type_) <= 64 else "?"
        raise WireError("unknown_type", f"unknown message type {shown!r}", request_id)
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise WireError("invalid_message", f"{type_}: {exc}", request_id) from None


def encode(message: dict[str, Any], binary: bool) -> str | bytes:
    if binary:
        return _msgpack_encoder.encode(message)
    return _json_encoder.encode(message).decode()


def error(code: str, message: str, request_id: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        frame["id"] = request_id
    return frame
