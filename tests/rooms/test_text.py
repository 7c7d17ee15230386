"""Text that is not valid Unicode (a lone UTF-16 surrogate) never enters a stage or a club: every command
that takes text refuses it with ``bad_text`` and changes nothing, so nothing the domain holds can make
an encoder fail (issue 11, item 1). Valid text from the whole of Unicode still passes."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest

from rooms.clubs import Club
from rooms.errors import BadText
from rooms.polls import PollSpec
from rooms.roles import Role
from rooms.stage import Stage
from rooms.text import find_bad_text, is_valid, require_text
from tests.rooms.support import ALICE, HOST, MOD, populated, refused

LONE = ["\ud800", "\udfff", "Dr \udc80 Who", "\ud83d"]  # high, low, embedded, half of an emoji's pair
VALID = ["Dr Ada", "Dr Åsa Ødegård", "心臓内科", "👩‍⚕️ rounds", "\u0000 nul is valid Unicode", "\uffff"]


@pytest.mark.parametrize("text", LONE)
def test_a_lone_surrogate_is_not_valid_text(text: str) -> None:
    assert not is_valid(text)
    with pytest.raises(UnicodeEncodeError):
        text.encode("utf-8")  # why it matters: no encoder downstream could send it


@pytest.mark.parametrize("text", VALID)
def test_text_from_all_of_unicode_is_valid(text: str) -> None:
    assert is_valid(text)
    assert find_bad_text({"name": text, "options": [text]}) is None
    msgspec.json.encode(text)


def test_the_walk_names_where_the_bad_text_is_without_quoting_it() -> None:
    assert find_bad_text("\ud800", "name") == "name"
    assert find_bad_text({"type": "poll.create", "options": ["a", "b\ud800"]}) == "options[1]"
    assert find_bad_text({"candidate": {"sdpMid": "\udc00"}}) == "candidate.sdpMid"
    assert find_bad_text({"\ud800": 1}) == "a key"
    assert find_bad_text({"x" * 100: "\ud800"}) == "…"
    assert find_bad_text([1, 2.5, None, True, b"\xff", "ok"]) is None
    with pytest.raises(BadText) as info:
        require_text(["ok", "\ud800"], "options")
    assert info.value.code == "bad_text" and "options[1]" in info.value.message
    info.value.message.encode("utf-8")  # the error itself can be sent


def test_the_walk_does_not_recurse_so_depth_does_not_matter() -> None:
    deep: object = "\ud800"
    for _ in range(100_000):
        deep = [deep]
    assert find_bad_text(deep) is not None


@pytest.mark.parametrize("bad", LONE)
def test_stage_commands_that_take_text_refuse_a_lone_surrogate(bad: str) -> None:
    stage = populated()
    commands: dict[str, Callable[[], object]] = {
        "join name": lambda: stage.join("x", bad, Role.AUDIENCE, 1),
        "join identity": lambda: stage.join("x", "Dr X", Role.AUDIENCE, 1, identity=bad),
        "console name": lambda: stage.join("x", bad, Role.MODERATOR, 1, observer=True),
        "comment": lambda: stage.post_comment(ALICE, "c1", bad, 1),
        "question": lambda: stage.ask_question(ALICE, "q1", bad, 1),
        "poll question": lambda: stage.create_poll(MOD, "p1", PollSpec(bad, ("a", "b")), 1),
        "poll option": lambda: stage.create_poll(MOD, "p1", PollSpec("Q?", ("a", bad)), 1),
        "remove reason": lambda: stage.remove(HOST, ALICE, bad, 1),
        "ban reason": lambda: stage.ban(MOD, ALICE, bad, 1),
    }
    for what, command in commands.items():
        error = refused(stage, BadText, command)
        assert error.code == "bad_text", what
    # Nothing the stage holds fails an encoder, and it still takes valid text.
    msgspec.msgpack.encode(stage.snapshot())
    stage.post_comment(ALICE, "c1", "Dr Åsa 👩‍⚕️", 2)


def test_a_stage_title_must_be_valid_text() -> None:
    with pytest.raises(BadText):
        Stage("s1", "Rounds \ud800", 0.0)
    assert Stage("s1", "心臓内科 rounds", 0.0).title == "心臓内科 rounds"


def test_club_names_and_identities_must_be_valid_text() -> None:
    with pytest.raises(BadText):
        Club("c1", "Cardio\ud800", False, 0.0)
    club = Club("c1", "Cardiology", False, 0.0)
    for command in (
        lambda: club.admit("u-\ud800", "Dr X", 1.0),
        lambda: club.admit("u-1", "Dr \ud800", 1.0),
        lambda: club.add_member("u-2", "\udc00", "member", 1.0),
    ):
        with pytest.raises(BadText):
            command()
    assert club.members == {}
