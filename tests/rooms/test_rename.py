"""A person's corrected display name on a stage (issue 15, correction): every connection of theirs is
renamed with ``participant.updated``, a console silently, nobody else; a bad name changes nothing."""

from __future__ import annotations

import pytest

from rooms.errors import BadText, InvalidMessage
from rooms.events import ParticipantUpdated
from rooms.roles import Role
from rooms.stage import Stage


def stage() -> Stage:
    s = Stage("s", "S", 0.0)
    s.join("p-1", "Alice", Role.AUDIENCE, 1.0, identity="alice@x")
    s.join("p-2", "Alice", Role.AUDIENCE, 2.0, identity="alice@x")  # a second tab
    s.join("p-3", "Bob", Role.HOST, 3.0, identity="bob@x")
    s.join("c-1", "Alice", Role.MODERATOR, 4.0, identity="alice@x", observer=True)
    return s


def test_every_connection_of_the_person_is_renamed() -> None:
    s = stage()
    events = s.rename("alice@x", "Dr Alice Martin", 5.0)
    assert [(type(e), e.participant) for e in events] == [
        (ParticipantUpdated, "p-1"),
        (ParticipantUpdated, "p-2"),
    ]
    assert [s.participants[p].name for p in ("p-1", "p-2", "p-3")] == ["Dr Alice Martin"] * 2 + ["Bob"]
    assert s.observers["c-1"].name == "Dr Alice Martin"
    assert s.rename("alice@x", "Dr Alice Martin", 6.0) == [], "the same name again changes nothing"
    assert s.rename("nobody@x", "X", 6.0) == []


@pytest.mark.parametrize("name", ["", " ", "x" * 65, "bad\ud800"])
def test_a_bad_name_is_refused_and_changes_nothing(name: str) -> None:
    s = stage()
    with pytest.raises((InvalidMessage, BadText)):
        s.rename("alice@x", name, 5.0)
    assert s.participants["p-1"].name == "Alice"


def test_a_club_member_is_renamed_and_a_stranger_is_not_added() -> None:
    from rooms.clubs import Club

    club = Club("c", "Club", False, 0.0)
    club.add_member("alice@x", "Alice", "member", 1.0)
    renamed = club.rename_member("alice@x", "Dr Alice Martin")
    assert renamed is not None and renamed.name == "Dr Alice Martin" and renamed.joined_at == 1.0
    assert club.rename_member("nobody@x", "X") is None and "nobody@x" not in club.members
    with pytest.raises(InvalidMessage):
        club.rename_member("alice@x", " ")
