"""Every message the server sends is a schema (server/wire_out.py, media/messages.py, rooms/events.py),
each is documented field by field in docs/protocol.md ("Messages the server sends", "Objects in
messages"), and ``wire.Outgoing`` encodes a schema once per framing, as the dicts it replaces did."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import pytest

from media.messages import MediaMessage, SlotAssigned, SubscriberOffer
from rooms.events import (
    EVENT_TYPES,
    CommentPosted,
    Event,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
)
from rooms.views import CommentView
from server import wire_out
from server.signalling.outbox import Outbox
from server.wire import Outgoing

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
ABSTRACT = {wire_out.ServerFrame, wire_out.Notice, wire_out.ParticipantEvent, MediaMessage, Event}


def subclasses(base: type) -> set[type]:
    found: set[type] = set()
    sub: type
    for sub in base.__subclasses__():
        found |= {sub} | subclasses(sub)
    return found


def wire_names(cls: type[msgspec.Struct]) -> set[str]:
    names = {f.encode_name for f in msgspec.structs.fields(cls)}
    return names


def doc_table(heading: str) -> dict[str, str]:
    """First column -> last column of the table under ``### heading`` in docs/protocol.md."""
    text = PROTOCOL.read_text()
    assert f"### {heading}\n" in text, f"docs/protocol.md has no section {heading!r}"
    section = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[0]) <= {"-"}:
            continue
        if cells[0] in ("type", "object"):  # the header
            continue
        name = cells[0].strip("`")
        assert name not in rows, f"{heading}: {name} documented twice"
        rows[name] = cells[-1]
    return rows


def documented_fields(cell: str) -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", cell))


def test_every_schema_the_server_can_send_is_in_the_union_once() -> None:
    sent = set(wire_out.SERVER_MESSAGES)
    tags = [wire_out.tag_of(c) for c in wire_out.SERVER_MESSAGES]
    assert len(tags) == len(set(tags)), sorted(t for t in tags if tags.count(t) > 1)
    # A schema defined but left out of the union would never be checked against real frames.
    concrete = (
        subclasses(wire_out.ServerFrame) | subclasses(wire_out.Notice) | subclasses(MediaMessage)
    ) - ABSTRACT
    assert concrete <= sent, concrete - sent
    # Domain events go out as they are, except the internal ones and the two the shell rewrites.
    events = {e for e in EVENT_TYPES if not e.internal}
    assert events - sent == {ParticipantJoined, ParticipantUpdated}
    assert {"participant.joined", "participant.updated"} <= set(tags)


def test_every_message_type_is_documented_with_exactly_its_fields() -> None:
    rows = doc_table("Messages the server sends")
    tags = {wire_out.tag_of(c): c for c in wire_out.SERVER_MESSAGES}
    assert set(rows) == set(tags), (
        f"undocumented: {sorted(set(tags) - set(rows))}, never sent: {sorted(set(rows) - set(tags))}"
    )
    for tag, cls in tags.items():
        assert documented_fields(rows[tag]) == wire_names(cls), tag


def nested_structs(cls: type[msgspec.Struct]) -> set[type[msgspec.Struct]]:
    """The struct types a message's fields hold, at any depth."""
    found: set[type[msgspec.Struct]] = set()

    def walk(t: msgspec.inspect.Type) -> None:
        if isinstance(t, msgspec.inspect.StructType):
            if t.cls not in found:
                found.add(t.cls)
                for f in t.fields:
                    walk(f.type)
        elif isinstance(t, msgspec.inspect.UnionType):
            for member in t.types:
                walk(member)
        elif isinstance(t, (msgspec.inspect.ListType, msgspec.inspect.VarTupleType)):
            walk(t.item_type)
        elif isinstance(t, msgspec.inspect.DictType):
            walk(t.value_type)

    walk(msgspec.inspect.type_info(cls))
    return found - {cls}


def test_every_object_inside_a_message_is_documented_with_exactly_its_fields() -> None:
    rows = doc_table("Objects in messages")
    assert set(rows) == set(wire_out.OBJECTS), set(rows) ^ set(wire_out.OBJECTS)
    for name, cls in wire_out.OBJECTS.items():
        assert documented_fields(rows[name]) == wire_names(cls), name
    inside: set[type[msgspec.Struct]] = set()
    for message in wire_out.SERVER_MESSAGES:
        inside |= nested_structs(message)
    assert inside <= set(wire_out.OBJECTS.values()), inside - set(wire_out.OBJECTS.values())


# --- Outgoing ----------------------------------------------------------------------------------


def comment_event() -> CommentPosted:
    view = CommentView(id="c-1", author_id="p-1", author_name="Dr A", text="Hi", at=5.0)
    return CommentPosted(stage="s1", at=5.0, seq=7, comment=view)


@pytest.mark.parametrize(
    ("message", "type_", "expected"),
    [
        (wire_out.Pong(), "pong", {"type": "pong"}),
        (wire_out.Ok(id="r1", comment_id="c-3"), "ok", {"type": "ok", "id": "r1", "comment_id": "c-3"}),
        (wire_out.Error(code="x", message="m"), "error", {"type": "error", "code": "x", "message": "m"}),
        (
            wire_out.Error(id=4, code="rate_limited", message="m", retry_after=1.5),
            "error",
            {"type": "error", "id": 4, "code": "rate_limited", "message": "m", "retry_after": 1.5},
        ),
        (
            SlotAssigned(slot=0, kind="video", mid=None, stream="slot-0", participant_id="p-1"),
            "slot.assigned",
            {
                "type": "slot.assigned",
                "slot": 0,
                "kind": "video",
                "mid": None,
                "stream": "slot-0",
                "participant_id": "p-1",
                "source": "camera",
            },
        ),
        (
            ParticipantLeft(stage="s1", at=2.0, seq=3, participant="p-1"),
            "participant.left",
            {"type": "participant.left", "stage_id": "s1", "at": 2.0, "seq": 3, "participant_id": "p-1"},
        ),
    ],
)
def test_outgoing_encodes_a_schema_as_the_old_dicts_were(
    message: Any, type_: str, expected: dict[str, Any]
) -> None:
    """Optional fields left unset are absent, not null; ``type`` is the tag."""
    outgoing = Outgoing(message)
    assert outgoing.type == type_
    assert msgspec.json.decode(outgoing.encoded(False)) == expected
    assert msgpack.unpackb(outgoing.encoded(True)) == expected


def test_outgoing_encodes_once_per_framing() -> None:
    outgoing = Outgoing(comment_event())
    assert outgoing.encoded(False) is outgoing.encoded(False)
    assert outgoing.encoded(True) is outgoing.encoded(True)
    # Relayed bytes keep their framing and their type.
    relayed = Outgoing.from_msgpack(outgoing.encoded(True))  # type: ignore[arg-type]
    assert relayed.type == "comment.posted" and relayed.encoded(True) is outgoing.encoded(True)
    assert msgspec.json.decode(relayed.encoded(False)) == msgspec.json.decode(outgoing.encoded(False))


def test_the_outbox_drops_fresh_only_schemas_at_its_limit_and_keeps_the_rest() -> None:
    outbox = Outbox(limit=1)
    assert outbox.put(Outgoing(wire_out.Pong()))
    assert not outbox.put(Outgoing(comment_event()))  # comment.posted: fresh only
    assert outbox.put(Outgoing(wire_out.Error(code="x", message="m")))


def test_the_union_refuses_unknown_types_and_wrong_shapes() -> None:
    offer = {
        "type": "subscriber.offer",
        "sdp": "v=0",
        "slots": [{"slot": 0, "stream": "s", "audio_mid": "0", "video_mid": "1"}],
    }
    assert isinstance(msgspec.convert(offer, wire_out.ServerMessage), SubscriberOffer)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**offer, "type": "subscriber.offered"}, wire_out.ServerMessage)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**offer, "slots": [{"slot": "0", "stream": "s"}]}, wire_out.ServerMessage)
