"""A stage taken over by another node: saved as builtins, through msgpack, rebuilt with nobody present.

People who reconnect keep their identity's consent and role, bans hold, the chat and the stage's
settings are as they were, and the log continues where the shared log is.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from rooms.consent import SCOPES
from rooms.durable import FORMAT, durable_state, restore
from rooms.errors import Banned, DomainError, InvalidDurableState
from rooms.events import ParticipantJoined
from rooms.roles import Role
from rooms.stage import Stage, StageSettings, StageState

POLICY = "2026-11"
SETTINGS = StageSettings(
    max_publishers=3,
    comment_history=3,
    comment_rate=50,
    speaking_requires_consent=True,
    recording_mode="manual",
    consent_policy_version=POLICY,
)
IDENTITIES = ("id-host", "id-mod", "id-speaker", "id-alice", "id-bob", "id-gone", "id-stranger")


def session() -> Stage:
    """A stage that recorded, gathered consents, comments, a ban, a remembered leaver and a lock."""
    s = Stage("s1", "Grand rounds", 5.0, settings=SETTINGS, state=StageState.LIVE)
    for pid, name, role in [
        ("c-host", "Dr Host", Role.HOST),
        ("c-mod", "Dr Mod", Role.MODERATOR),
        ("c-speaker", "Dr Speaker", Role.AUDIENCE),
        ("c-alice", "Alice", Role.AUDIENCE),
        ("c-bob", "Bob", Role.AUDIENCE),
        ("c-gone", "Gone", Role.AUDIENCE),
    ]:
        s.join(pid, name, role, 6, identity="id-" + pid.removeprefix("c-"))
    s.join("c-anon", "Anonymous", Role.AUDIENCE, 6)  # no identity: not remembered
    s.give_consent("c-speaker", frozenset({"media", "comments"}), POLICY, "invitation", 7, "cr-1")
    s.give_consent("c-alice", frozenset({"share"}), POLICY, "join_prompt", 7, "cr-2")
    s.give_consent("c-bob", frozenset({"media"}), POLICY, "join_prompt", 7, "cr-3")
    s.withdraw_consent("c-bob", 8, "cr-4")
    s.give_consent("c-gone", frozenset(), POLICY, "join_prompt", 8, "cr-5")
    s.invite("c-mod", "c-speaker", 9)
    s.accept_invitation("c-speaker", 9)
    s.start_recording("c-host", "rec-1", 10)
    s.start_publishing("c-speaker", ("audio",), 10)
    for i in range(5):
        s.post_comment("c-alice", f"c{i}", f"comment {i}", 11 + i)
    s.pin_comment("c-mod", "c0", 16)  # older than the history: the pin is kept beside it
    s.delete_comment("c-alice", "c3", 17)
    s.set_slow_mode("c-mod", 30, 17)
    s.ban("c-mod", "c-bob", "abuse", 18)
    s.leave("c-gone", 19)
    s.lock("c-host", True, 20)
    return s


def through_msgpack(state: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = msgpack.unpackb(msgpack.packb(state))
    return decoded


def taken_over(s: Stage, last_seq: int = 0) -> Stage:
    return restore(through_msgpack(durable_state(s)), last_seq=last_seq, now=100.0)


def only_builtins(value: object) -> bool:
    if isinstance(value, dict):
        return all(type(k) is str and only_builtins(v) for k, v in value.items())
    if isinstance(value, list):
        return all(only_builtins(v) for v in value)
    return value is None or type(value) in (str, int, float, bool)


def test_the_durable_state_is_builtins_only_with_a_format_version() -> None:
    state = durable_state(session())
    assert only_builtins(state)
    assert state["format"] == FORMAT
    assert msgpack.unpackb(msgpack.packb(state, strict_types=True)) == state


def test_a_restored_stage_is_the_same_stage_with_nobody_present() -> None:
    s = session()
    restored = taken_over(s)
    assert (restored.id, restored.title, restored.created_at) == ("s1", "Grand rounds", 5.0)
    assert restored.state is StageState.LIVE and restored.locked
    assert restored.settings == SETTINGS
    assert not restored.participants
    assert durable_state(restored) == durable_state(s)


def test_a_restored_stage_is_not_recording() -> None:
    restored = taken_over(session())
    assert not restored.recording.active and not restored.recording.sessions


def test_consent_answers_the_same_for_every_identity() -> None:
    s = session()
    restored = taken_over(s)
    for identity in IDENTITIES:
        for scope in SCOPES:
            assert restored.consent.covers(identity, scope, POLICY) == s.consent.covers(
                identity, scope, POLICY
            )
        assert restored.consent.state(identity) == s.consent.state(identity)
    assert restored.consent.record_ids == {"cr-1", "cr-2", "cr-3", "cr-4", "cr-5"}


def test_people_who_reconnect_keep_consent_and_role() -> None:
    restored = taken_over(session())
    restored.locked = False  # the host would unlock; joins are what is tested here
    # Everyone comes back with the token they joined with: the role they had on the stage.
    restored.join("n-speaker", "Dr Speaker", Role.AUDIENCE, 101, identity="id-speaker")
    restored.join("n-host", "Dr Host", Role.HOST, 101, identity="id-host")
    restored.join("n-mod", "Dr Mod", Role.MODERATOR, 101, identity="id-mod")
    restored.join("n-alice", "Alice", Role.AUDIENCE, 101, identity="id-alice")
    restored.join("n-gone", "Gone", Role.AUDIENCE, 101, identity="id-gone")
    roles = {pid: p.role for pid, p in restored.participants.items()}
    assert roles == {
        "n-speaker": Role.SPEAKER,  # promoted on the stage: still a speaker
        "n-host": Role.HOST,
        "n-mod": Role.MODERATOR,
        "n-alice": Role.AUDIENCE,
        "n-gone": Role.AUDIENCE,  # left before the takeover: remembered too
    }
    assert restored.covers("n-speaker", "media") and restored.covers("n-alice", "share")
    assert not restored.covers("n-gone", "media")
    restored.start_publishing("n-speaker", ("audio",), 102)  # consented speaker: may publish at once


def test_a_token_with_another_role_than_the_one_joined_with_wins() -> None:
    """The platform's new decision (a new token) beats what the stage remembered."""
    restored = taken_over(session())
    restored.locked = False
    restored.join("n-speaker", "Dr Speaker", Role.MODERATOR, 101, identity="id-speaker")
    restored.join("n-mod", "Dr Mod", Role.AUDIENCE, 101, identity="id-mod")
    roles = {pid: p.role for pid, p in restored.participants.items()}
    assert roles == {"n-speaker": Role.MODERATOR, "n-mod": Role.AUDIENCE}


def test_a_banned_identity_cannot_join_the_restored_stage() -> None:
    restored = taken_over(session())
    restored.locked = False
    assert restored.banned_identities == {"id-bob"}
    with pytest.raises(Banned):
        restored.join("n-bob", "Bob", Role.AUDIENCE, 101, identity="id-bob")


def test_only_explicit_identities_that_were_not_banned_are_remembered() -> None:
    state = durable_state(session())
    assert state["people"] == {
        "id-host": {"role": "host", "name": "Dr Host", "joined_as": "host"},
        "id-mod": {"role": "moderator", "name": "Dr Mod", "joined_as": "moderator"},
        "id-speaker": {"role": "speaker", "name": "Dr Speaker", "joined_as": "audience"},
        "id-alice": {"role": "audience", "name": "Alice", "joined_as": "audience"},
        "id-gone": {"role": "audience", "name": "Gone", "joined_as": "audience"},
    }


def test_an_identity_on_two_connections_is_remembered_with_its_highest_role() -> None:
    s = Stage("s1", "T", 0.0)
    s.join("c1", "Dr Host", Role.HOST, 0, identity="id-host")
    s.join("c2", "Dr Host (audience view)", Role.AUDIENCE, 0, identity="id-host")
    assert durable_state(s)["people"] == {"id-host": {"role": "host", "name": "Dr Host", "joined_as": "host"}}


def test_the_chat_is_as_a_late_joiner_saw_it() -> None:
    s = session()
    restored = taken_over(s)
    restored.locked = False
    s.locked = False
    s.join("late", "Late", Role.AUDIENCE, 50, identity="id-late")
    restored.join("late", "Late", Role.AUDIENCE, 101, identity="id-late")
    before, after = s.snapshot_for("late"), restored.snapshot_for("late")
    for key in ("comments", "pinned", "slow_mode_s"):
        assert after[key] == before[key]
    assert [c["id"] for c in after["comments"]] == ["c1", "c2", "c4"]  # type: ignore[attr-defined]
    assert after["pinned"]["id"] == "c0"  # type: ignore[index]
    assert after["slow_mode_s"] == 30
    assert after["recording"] == {"mode": "manual", "active": False, "session_id": None}


def test_authors_may_still_delete_their_comments_and_deleted_ids_stay_used() -> None:
    restored = taken_over(session())
    restored.locked = False
    restored.join("n-alice", "Alice", Role.AUDIENCE, 101, identity="id-alice")
    restored.delete_comment("n-alice", "c0", 102)  # hers, and pinned: the pin goes too
    assert restored.chat.pinned is None
    with pytest.raises(DomainError):
        restored.post_comment("n-alice", "c3", "reused id", 200)


@pytest.mark.parametrize(("given", "expected"), [(0, None), (5, None), (1000, 1000)])
def test_the_log_continues_after_the_larger_of_the_two_last_seqs(given: int, expected: int | None) -> None:
    s = session()
    restored = taken_over(s, last_seq=given)
    start = expected if expected is not None else s.log.last_seq
    assert restored.log.last_seq == start and not restored.log.events
    restored.locked = False
    (joined,) = restored.join("n", "N", Role.AUDIENCE, 101, identity="id-n")
    assert isinstance(joined, ParticipantJoined) and joined.seq == start + 1


def test_an_ended_stage_stays_ended() -> None:
    s = session()
    s.end("c-host", 30)
    assert taken_over(s).state is StageState.ENDED


def corrupt(path: tuple[str, ...], value: object) -> dict[str, Any]:
    state = through_msgpack(durable_state(session()))
    target = state
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return state


@pytest.mark.parametrize(
    ("state", "says"),
    [
        (["not", "a", "map"], "a map"),
        (corrupt(("format",), 2), "format 2"),
        (corrupt(("format",), KeyError), "format None"),
        (corrupt(("title",), KeyError), "title"),
        (corrupt(("created_at",), "yesterday"), "created_at"),
        (corrupt(("state",), "paused"), "state"),
        (corrupt(("settings", "recording_mode"), "always"), "recording_mode"),
        (corrupt(("people", "id-host", "role"), "king"), "role"),
        (corrupt(("chat", "slow_mode_s"), -1), "slow_mode_s"),
        (corrupt(("last_seq",), -3), "last_seq"),
        (corrupt(("consent", "last", "id-alice", "identity"), "id-mallory"), "id-mallory"),
    ],
)
def test_unreadable_input_is_a_clear_domain_error(state: Any, says: str) -> None:
    with pytest.raises(InvalidDurableState) as info:
        restore(state, last_seq=0, now=0.0)
    assert info.value.code == "invalid_durable_state"
    assert says in info.value.message


def test_unknown_fields_are_ignored_so_adding_one_needs_no_new_format() -> None:
    state = corrupt(("polls",), {"later": True})
    assert restore(state, last_seq=0, now=0.0).title == "Grand rounds"
