"""What the SFU tells a subscriber over the signalling socket: the offer of its receiving connection
and which slot carries whom (docs/protocol.md, "Messages the server sends").

Tagged msgspec structs, encoded as they are by the server: media/ cannot import the server's schemas
(it sits below the server), so its own messages live here and the server's union of outgoing messages
(``server.wire_out``) lists them.
"""

from __future__ import annotations

import msgspec


class MediaMessage(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of the messages media/ asks the server to send to one subscriber."""


class SlotLayout(msgspec.Struct, frozen=True, kw_only=True):
    """One slot of the subscriber connection: a stream id and the transceivers (mids) it uses."""

    slot: int
    stream: str
    audio_mid: str | None
    video_mid: str | None


class SubscriberOffer(MediaMessage, frozen=True, kw_only=True, tag="subscriber.offer"):
    sdp: str
    slots: list[SlotLayout]


class SlotAssigned(MediaMessage, frozen=True, kw_only=True, tag="slot.assigned"):
    """The transceiver ``mid`` now carries ``participant_id``'s ``kind`` track."""

    slot: int
    kind: str  # "audio" or "video"
    mid: str | None
    stream: str
    participant_id: str
    source: str = "camera"  # or "screen": the participant's screen share, in a pair of its own


class SlotReleased(MediaMessage, frozen=True, kw_only=True, tag="slot.released"):
    """That transceiver carries nothing any more."""

    slot: int
    kind: str  # "audio" or "video"
    mid: str | None
    stream: str
    participant_id: str
    source: str = "camera"


MEDIA_MESSAGES: tuple[type[MediaMessage], ...] = (SubscriberOffer, SlotAssigned, SlotReleased)
