"""Someone who comes back with the same token role gets the role they had: a dropped speaker speaks
again, a demoted person stays demoted, the host is host again unless someone else hosts now. A token
with another role than the one they joined with is the platform's new decision and wins. Removal and
bans forget."""

from __future__ import annotations

from rooms.errors import Banned, NotAllowed, StageLocked
from rooms.roles import Role
from rooms.stage import Stage
from tests.rooms.support import refused

HOST_ID, MOD_ID, SPEAKER_ID, ALICE_ID = "id-host", "id-mod", "id-speaker", "id-alice"


def stage() -> Stage:
    """Everyone with an explicit identity (as the browser client sends it); connection ids are ``c*``."""
    s = Stage("s1", "Grand rounds", 0.0)
    s.join("c-host", "Dr Host", Role.HOST, 0, identity=HOST_ID)
    s.join("c-mod", "Dr Mod", Role.MODERATOR, 0, identity=MOD_ID)
    s.join("c-speaker", "Dr Speaker", Role.AUDIENCE, 0, identity=SPEAKER_ID)
    s.join("c-alice", "Alice", Role.AUDIENCE, 0, identity=ALICE_ID)
    s.invite("c-mod", "c-speaker", 1)
    s.accept_invitation("c-speaker", 1)
    return s


def role_after_rejoin(s: Stage, old: str, identity: str, requested: Role) -> Role:
    s.leave(old, 2)
    s.join("c-again", "Back", requested, 3, identity=identity)
    return s.participants["c-again"].role


def test_a_promoted_speaker_who_reconnects_is_a_speaker_again() -> None:
    assert role_after_rejoin(stage(), "c-speaker", SPEAKER_ID, Role.AUDIENCE) is Role.SPEAKER


def test_a_host_who_reconnects_is_host_again() -> None:
    assert role_after_rejoin(stage(), "c-host", HOST_ID, Role.HOST) is Role.HOST


def test_a_token_with_another_role_than_the_one_joined_with_wins() -> None:
    assert role_after_rejoin(stage(), "c-host", HOST_ID, Role.AUDIENCE) is Role.AUDIENCE
    assert role_after_rejoin(stage(), "c-speaker", SPEAKER_ID, Role.MODERATOR) is Role.MODERATOR


def test_a_demoted_person_stays_demoted() -> None:
    s = stage()
    s.move_to_audience("c-mod", "c-speaker", 2)
    assert role_after_rejoin(s, "c-speaker", SPEAKER_ID, Role.AUDIENCE) is Role.AUDIENCE
    s = stage()
    s.set_role("c-host", "c-mod", Role.AUDIENCE, 2)
    assert role_after_rejoin(s, "c-mod", MOD_ID, Role.MODERATOR) is Role.AUDIENCE  # same token


def test_an_audience_member_comes_back_as_host_only_with_a_host_token() -> None:
    s = stage()
    s.leave("c-host", 2)
    assert role_after_rejoin(s, "c-alice", ALICE_ID, Role.AUDIENCE) is Role.AUDIENCE
    assert s.host is None
    s = stage()
    s.leave("c-host", 2)
    assert role_after_rejoin(s, "c-alice", ALICE_ID, Role.HOST) is Role.HOST  # the platform's decision


def test_a_remembered_host_gets_the_requested_role_when_another_host_took_over() -> None:
    s = stage()
    s.leave("c-host", 2)
    s.join("c-new-host", "Dr New", Role.HOST, 2, identity="id-new-host")
    refused(s, NotAllowed, s.join, "c-again", "Dr Host", Role.HOST, 3, HOST_ID)
    s.join("c-again", "Dr Host", Role.AUDIENCE, 3, identity=HOST_ID)
    assert s.participants["c-again"].role is Role.AUDIENCE
    assert s.participants["c-new-host"].role is Role.HOST


def test_a_returning_person_keeps_the_name_they_give() -> None:
    s = stage()
    s.leave("c-speaker", 2)
    assert s.remembered.get(SPEAKER_ID) is not None
    s.join("c-again", "Dr S. Peaker", Role.AUDIENCE, 3, identity=SPEAKER_ID)
    assert s.participants["c-again"].name == "Dr S. Peaker"


def test_once_back_they_are_forgotten_so_a_second_tab_gets_what_it_asks() -> None:
    s = stage()
    s.leave("c-speaker", 2)
    s.join("c-tab1", "Dr Speaker", Role.AUDIENCE, 3, identity=SPEAKER_ID)
    assert SPEAKER_ID not in s.remembered
    s.move_to_audience("c-mod", "c-tab1", 4)  # demoted while present: no stale "speaker" may come back
    s.join("c-tab2", "Dr Speaker", Role.AUDIENCE, 5, identity=SPEAKER_ID)
    assert s.participants["c-tab2"].role is Role.AUDIENCE


def test_a_refused_join_forgets_nothing() -> None:
    s = stage()
    s.leave("c-speaker", 2)
    refused(s, NotAllowed, s.join, "c-alice", "Dup", Role.AUDIENCE, 3, SPEAKER_ID)  # id in use
    s.lock("c-host", True, 3)
    refused(s, StageLocked, s.join, "c-again", "Dr Speaker", Role.AUDIENCE, 3, SPEAKER_ID)
    assert s.remembered.get(SPEAKER_ID) is not None


def test_a_removed_identity_is_forgotten() -> None:
    s = stage()
    s.remove("c-mod", "c-speaker", "off topic", 2)
    assert SPEAKER_ID not in s.remembered
    s.join("c-again", "Dr Speaker", Role.AUDIENCE, 3, identity=SPEAKER_ID)
    assert s.participants["c-again"].role is Role.AUDIENCE


def test_a_banned_identity_is_forgotten_and_refused() -> None:
    s = stage()
    s.ban("c-mod", "c-speaker", "abuse", 2)
    assert SPEAKER_ID not in s.remembered
    refused(s, Banned, s.join, "c-again", "Dr Speaker", Role.AUDIENCE, 3, SPEAKER_ID)


def test_a_ban_forgets_a_tab_that_left_before() -> None:
    s = stage()
    s.join("c-tab2", "Dr Speaker", Role.AUDIENCE, 2, identity=SPEAKER_ID)
    s.leave("c-speaker", 3)  # remembered as speaker
    s.ban("c-mod", "c-tab2", "abuse", 4)
    assert SPEAKER_ID not in s.remembered


def test_people_without_an_explicit_identity_are_not_remembered() -> None:
    s = Stage("s1", "Grand rounds", 0.0)
    s.join("h", "Host", Role.HOST, 0)
    s.join("p", "Anonymous", Role.SPEAKER, 0)
    s.leave("p", 1)
    assert not s.remembered.people
