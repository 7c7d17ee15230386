"""Clubs, pure: who a public or private club admits, invites (expiry, uses, revocation), members
removed and re-invited, roles and the last admin, and the stored form."""

from __future__ import annotations

import copy
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rooms.clubs import (
    FORMAT,
    Club,
    ClubPrivate,
    InvalidClubState,
    InviteInvalid,
    InviteNotFound,
    LastAdmin,
    MemberNotFound,
)
from rooms.errors import DomainError, InvalidMessage

ADMIN = "id-admin"


def club(private: bool) -> Club:
    made = Club("c1", "Cardiology", private, 100.0)
    made.add_member(ADMIN, "Dr Admin", "admin", 100.0)
    return made


def refused(made: Club, error: type[DomainError], command: Callable[[], object]) -> DomainError:
    """Run ``command``, expect ``error``, and check the club is exactly as it was."""
    before = copy.deepcopy(made.to_builtins())
    with pytest.raises(error) as info:
        command()
    assert made.to_builtins() == before, "a refused command changed the club"
    return info.value


# --- public clubs --------------------------------------------------------------------------------


def test_anyone_joining_a_public_clubs_stage_by_its_link_becomes_a_member() -> None:
    c = club(private=False)
    member = c.admit("id-alice", "Alice", 110.0)
    assert (member.identity, member.name, member.role, member.joined_at, member.via) == (
        "id-alice",
        "Alice",
        "member",
        110.0,
        "link",
    )
    assert c.members["id-alice"] == member


def test_a_member_joining_again_keeps_when_and_how_they_joined_and_gets_their_new_name() -> None:
    c = club(private=False)
    c.admit("id-alice", "Alice", 110.0)
    again = c.admit("id-alice", "Dr Alice", 200.0)
    assert (again.joined_at, again.via, again.name) == (110.0, "link", "Dr Alice")


def test_a_public_club_ignores_a_bad_invite_code_and_counts_a_good_one() -> None:
    c = club(private=False)
    invite = c.create_invite(ADMIN, 100.0, code="good")
    assert c.admit("id-alice", "Alice", 110.0, "no-such-code").via == "link"
    assert c.admit("id-bob", "Bob", 110.0, "good").via == "invite"
    assert c.invites[invite.code].uses == 1


def test_a_member_removed_from_a_public_club_comes_back_by_the_link() -> None:
    c = club(private=False)
    c.admit("id-alice", "Alice", 110.0)
    c.remove_member("id-alice")
    assert c.admit("id-alice", "Alice", 120.0).via == "link"
    assert "id-alice" not in c.removed


# --- private clubs -------------------------------------------------------------------------------


def test_a_private_club_refuses_a_stranger_without_an_invite() -> None:
    c = club(private=True)
    error = refused(c, ClubPrivate, lambda: c.admit("id-eve", "Eve", 110.0))
    assert error.code == "club_private"


def test_a_private_club_admits_its_members_without_an_invite() -> None:
    c = club(private=True)
    c.add_member("id-alice", "Alice", "member", 105.0)
    assert c.admit("id-alice", "Alice", 110.0).via == "added"
    assert c.admit(ADMIN, "Dr Admin", 110.0, "whatever").role == "admin"


def test_an_invite_admits_a_stranger_to_a_private_club_and_counts_the_use() -> None:
    c = club(private=True)
    invite = c.create_invite(ADMIN, 100.0, code="inv-1")
    member = c.admit("id-alice", "Alice", 110.0, "inv-1")
    assert (member.via, member.role) == ("invite", "member")
    assert c.invites["inv-1"].uses == 1 and invite.uses == 0, "invites are values: the club holds the new one"
    c.admit("id-alice", "Alice", 111.0, "inv-1")
    assert c.invites["inv-1"].uses == 1, "a member passing again does not use the invite"


@pytest.mark.parametrize("code", ["no-such-code", ""])
def test_a_private_club_refuses_an_unknown_invite_code(code: str) -> None:
    c = club(private=True)
    c.create_invite(ADMIN, 100.0, code="inv-1")
    error = refused(c, InviteInvalid, lambda: c.admit("id-eve", "Eve", 110.0, code))
    assert error.code == "invite_invalid"


def test_an_invite_expires_after_its_ttl() -> None:
    c = club(private=True)
    invite = c.create_invite(ADMIN, 100.0, ttl_s=60, code="inv-1")
    assert invite.expires_at == 160.0
    c.admit("id-alice", "Alice", 159.9, "inv-1")
    error = refused(c, InviteInvalid, lambda: c.admit("id-bob", "Bob", 160.0, "inv-1"))
    assert "expired" in error.message


def test_an_invite_admits_at_most_max_uses_people() -> None:
    c = club(private=True)
    c.create_invite(ADMIN, 100.0, max_uses=2, code="inv-1")
    c.admit("id-alice", "Alice", 110.0, "inv-1")
    c.admit("id-bob", "Bob", 111.0, "inv-1")
    error = refused(c, InviteInvalid, lambda: c.admit("id-carol", "Carol", 112.0, "inv-1"))
    assert "used" in error.message
    assert c.invites["inv-1"].uses == 2


def test_a_revoked_invite_admits_nobody_but_its_members_stay() -> None:
    c = club(private=True)
    c.create_invite(ADMIN, 100.0, code="inv-1")
    c.admit("id-alice", "Alice", 110.0, "inv-1")
    assert c.revoke_invite("inv-1").code == "inv-1"
    refused(c, InviteInvalid, lambda: c.admit("id-bob", "Bob", 111.0, "inv-1"))
    assert "id-alice" in c.members
    refused(c, InviteNotFound, lambda: c.revoke_invite("inv-1"))


def test_a_removed_member_of_a_private_club_is_refused_until_invited_again() -> None:
    c = club(private=True)
    c.create_invite(ADMIN, 100.0, code="old")  # many uses, no expiry: still valid after the removal
    c.admit("id-alice", "Alice", 110.0, "old")
    c.remove_member("id-alice")
    refused(c, ClubPrivate, lambda: c.admit("id-alice", "Alice", 120.0))
    error = refused(c, InviteInvalid, lambda: c.admit("id-alice", "Alice", 120.0, "old"))
    assert "removed" in error.message
    assert c.admit("id-bob", "Bob", 121.0, "old").via == "invite", "the old link still admits others"

    c.create_invite(ADMIN, 130.0, code="new")
    assert c.admit("id-alice", "Alice", 131.0, "new").via == "invite"
    assert "id-alice" not in c.removed


def test_a_removed_member_added_back_by_an_admin_passes_again() -> None:
    c = club(private=True)
    c.add_member("id-alice", "Alice", "member", 100.0)
    c.remove_member("id-alice")
    c.add_member("id-alice", "Alice", "member", 140.0)
    assert c.admit("id-alice", "Alice", 141.0).via == "added"


def test_removing_someone_who_is_not_a_member_is_refused() -> None:
    c = club(private=True)
    refused(c, MemberNotFound, lambda: c.remove_member("id-nobody"))
    refused(c, MemberNotFound, lambda: c.set_role("id-nobody", "admin"))


# --- roles ---------------------------------------------------------------------------------------


def test_an_admin_can_promote_and_demote_members() -> None:
    c = club(private=True)
    c.add_member("id-alice", "Alice", "member", 100.0)
    assert c.set_role("id-alice", "admin").role == "admin" and c.is_admin("id-alice")
    assert c.set_role(ADMIN, "member").role == "member" and not c.is_admin(ADMIN)


def test_adding_an_existing_member_changes_their_role_and_name_but_not_how_they_joined() -> None:
    c = club(private=False)
    c.admit("id-alice", "Alice", 110.0)
    member = c.add_member("id-alice", "Dr Alice", "admin", 200.0)
    assert (member.role, member.name, member.joined_at, member.via) == ("admin", "Dr Alice", 110.0, "link")


def test_the_last_admin_can_be_neither_removed_nor_demoted() -> None:
    c = club(private=True)
    assert refused(c, LastAdmin, lambda: c.remove_member(ADMIN)).code == "last_admin"
    refused(c, LastAdmin, lambda: c.set_role(ADMIN, "member"))
    refused(c, LastAdmin, lambda: c.add_member(ADMIN, "Dr Admin", "member", 110.0))
    c.add_member("id-alice", "Alice", "admin", 110.0)
    c.remove_member(ADMIN)
    assert not c.is_admin(ADMIN)


@pytest.mark.parametrize(
    "command",
    [
        lambda c: c.add_member("id-x", "X", "owner", 1.0),
        lambda c: c.add_member("", "X", "member", 1.0),
        lambda c: c.add_member("id-x", "   ", "member", 1.0),
        lambda c: c.admit("x" * 129, "X", 1.0),
        lambda c: c.create_invite(ADMIN, 1.0, ttl_s=0, code="a"),
        lambda c: c.create_invite(ADMIN, 1.0, max_uses=0, code="a"),
        lambda c: c.create_invite(ADMIN, 1.0, code="not a code"),
        lambda c: c.create_invite(ADMIN, 1.0, code="taken"),
    ],
)
def test_invalid_values_are_refused(command: Callable[[Club], object]) -> None:
    c = club(private=True)
    c.create_invite(ADMIN, 0.0, code="taken")
    refused(c, InvalidMessage, lambda: command(c))


@pytest.mark.parametrize("club_id", ["", "a/b", "x" * 65, "ms:{club:x}"])
def test_a_club_id_is_safe_in_a_url_and_a_key(club_id: str) -> None:
    with pytest.raises(InvalidMessage):
        Club(club_id, "Name", False, 0.0)


# --- the stored form -----------------------------------------------------------------------------


def busy_club() -> Club:
    c = club(private=True)
    c.create_invite(ADMIN, 100.0, ttl_s=3600, max_uses=5, code="inv-1")
    c.create_invite(ADMIN, 101.0, code="inv-2")
    c.admit("id-alice", "Alice", 110.0, "inv-1")
    c.add_member("id-bob", "Bob", "admin", 111.0)
    c.add_member("id-carol", "Carol", "member", 112.0)
    c.remove_member("id-carol")
    return c


def test_a_club_survives_its_stored_form_through_msgpack() -> None:
    c = busy_club()
    data = c.to_builtins()
    assert data["format"] == FORMAT
    back = Club.from_builtins(msgpack.unpackb(msgpack.packb(data)))
    assert back == c
    # and it behaves the same: the removal still bars the old invite, uses are still counted
    refused(back, InviteInvalid, lambda: back.admit("id-carol", "Carol", 120.0, "inv-1"))
    back.admit("id-dave", "Dave", 120.0, "inv-1")
    assert back.invites["inv-1"].uses == 2


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(format=FORMAT + 1),
        lambda d: d.pop("format"),
        lambda d: d.update(id="bad id"),
        lambda d: d.update(members="everyone"),
        lambda d: d["members"][0].update(role="owner"),
        lambda d: d["members"].append(dict(d["members"][0])),
        lambda d: d["invites"][0].update(uses=-1),
    ],
)
def test_a_stored_club_this_node_cannot_read_is_refused(
    damage: Callable[[dict[str, object]], object],
) -> None:
    data = busy_club().to_builtins()
    damage(data)
    with pytest.raises(InvalidClubState) as info:
        Club.from_builtins(data)
    assert info.value.code == "invalid_club_state"


def test_a_stored_club_must_be_a_map() -> None:
    with pytest.raises(InvalidClubState):
        Club.from_builtins([1, 2])


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["admit", "invite", "remove", "add", "revoke"]),
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["i0", "i1", "i2", None]),
        ),
        max_size=30,
    ),
    st.booleans(),
)
def test_any_history_round_trips_and_refusals_change_nothing(
    steps: list[tuple[str, str, str | None]], private: bool
) -> None:
    c = club(private)
    now = 100.0
    for command, who, code in steps:
        now += 1
        before = c.to_builtins()
        try:
            if command == "admit":
                c.admit(who, who.upper(), now, code)
            elif command == "invite":
                c.create_invite(ADMIN, now, ttl_s=5, max_uses=2, code=f"i{int(now) % 3}")
            elif command == "remove":
                c.remove_member(who)
            elif command == "add":
                c.add_member(who, who.upper(), "member", now)
            else:
                c.revoke_invite(code or "i0")
        except DomainError:
            assert c.to_builtins() == before
        assert Club.from_builtins(msgpack.unpackb(msgpack.packb(c.to_builtins()))) == c
        assert any(m.role == "admin" for m in c.members.values())
        for invite in c.invites.values():
            assert invite.max_uses is None or invite.uses <= invite.max_uses


def test_a_clubs_recording_retention_is_stored_and_checked() -> None:
    club = Club("cardio", "Cardiology", False, 0.0, recording_retention_days=30)
    assert (
        Club.from_builtins(msgpack.unpackb(msgpack.packb(club.to_builtins()))).recording_retention_days == 30
    )
    club.set_retention(None)  # back to the node's default
    assert Club.from_builtins(club.to_builtins()).recording_retention_days is None
    with pytest.raises(InvalidMessage):
        club.set_retention(-1)
    stored = club.to_builtins()
    del stored["recording_retention_days"]  # a club stored before retention existed
    assert Club.from_builtins(stored).recording_retention_days is None
