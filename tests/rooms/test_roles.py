"""The permission matrix is the protocol's table, and every command asks it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rooms.errors import NotAllowed
from rooms.polls import PollSpec
from rooms.roles import MODERATOR_ROLES, Permission, Role, allows, is_moderator
from rooms.stage import Stage, StageState
from tests.rooms.support import ALICE, BOB, HOST, MOD, SPEAKER, populated, refused

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
COLUMNS = (Role.HOST, Role.MODERATOR, Role.SPEAKER, Role.AUDIENCE)

# The first cell of each row of the protocol's permission table -> the permissions it stands for.
ROWS: dict[str, tuple[Permission, ...]] = {
    "publish (`publish.*`)": (Permission.PUBLISH,),
    "`stage.start`, `stage.end`, `role.set`": (
        Permission.START_STAGE,
        Permission.END_STAGE,
        Permission.SET_ROLE,
    ),
    "`stage.lock`": (Permission.LOCK_STAGE,),
    "`speaker.invite`, `speaker.demote`, `hand.lower` for someone else": (
        Permission.INVITE,
        Permission.DEMOTE,
        Permission.LOWER_HANDS,
    ),
    "`moderation.mute`, `moderation.remove`, `moderation.ban`, `chat.mute`": (Permission.MODERATE,),
    "`comment.delete` of another's comment, `comment.pin`, `chat.slow_mode`": (
        Permission.DELETE_COMMENTS,
        Permission.PIN_COMMENTS,
        Permission.SLOW_MODE,
    ),
    "`question.answer`, `question.dismiss`": (Permission.ANSWER_QUESTIONS,),
    "`poll.create`, `poll.open`, `poll.close`": (Permission.MANAGE_POLLS,),
    "`recording.start`, `recording.stop`": (Permission.RECORD,),  # commands: tests/rooms/test_consent.py
    "`hand.raise`, `hand.lower` (own)": (Permission.RAISE_HAND,),
    "`invitation.accept`, `invitation.decline`": (Permission.ANSWER_INVITATION,),
    "`comment.post`, `comment.delete` (own), `reaction.send`, `question.ask`, `question.upvote`, "
    "`poll.vote`": (
        Permission.COMMENT,
        Permission.REACT,
        Permission.ASK,
        Permission.UPVOTE,
        Permission.VOTE,
    ),
}


def protocol_matrix() -> dict[str, set[Role]]:
    text = PROTOCOL.read_text()
    table = text.split("The permission matrix", 1)[1].split("\n\n", 2)[1]
    rows: dict[str, set[Role]] = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = {role for role, cell in zip(COLUMNS, cells[1:], strict=True) if "✓" in cell}
    return rows


def test_the_matrix_is_the_protocol_table() -> None:
    documented = protocol_matrix()
    assert set(documented) == set(ROWS), "a row of the protocol's table has no permission here"
    for row, roles in documented.items():
        for permission in ROWS[row]:
            assert {r for r in Role if allows(r, permission)} == roles, (row, permission)


def test_every_permission_is_in_the_table_but_subscribe() -> None:
    covered = {p for permissions in ROWS.values() for p in permissions}
    assert set(Permission) - covered == {Permission.SUBSCRIBE}
    assert all(allows(role, Permission.SUBSCRIBE) for role in Role)


def test_moderators_are_the_host_and_moderators() -> None:
    assert MODERATOR_ROLES == {Role.HOST, Role.MODERATOR}
    assert [r for r in Role if is_moderator(r)] == [Role.HOST, Role.MODERATOR]


# --- every command refuses the roles the matrix refuses, and admits the others ----------------------

ACTORS = {Role.HOST: HOST, Role.MODERATOR: MOD, Role.SPEAKER: SPEAKER, Role.AUDIENCE: ALICE}
SPEC = PollSpec(question="Q?", options=("A", "B"))


def _setup(stage: Stage) -> None:
    """Things for the commands to act on: Bob's comment, question and raised hand; polls."""
    stage.post_comment(BOB, "c-bob", "hello", 1)
    stage.ask_question(BOB, "q-bob", "why?", 1)
    stage.raise_hand(BOB, 1)
    stage.create_poll(HOST, "draft", SPEC, 1)
    stage.create_poll(HOST, "open", SPEC, 1)
    stage.open_poll(HOST, "open", 1)


Command = Callable[[Stage, str], object]
COMMANDS: list[tuple[str, Permission, Command, StageState]] = [
    ("stage.start", Permission.START_STAGE, lambda s, a: s.start(a, 2), StageState.SCHEDULED),
    ("stage.end", Permission.END_STAGE, lambda s, a: s.end(a, 2), StageState.LIVE),
    ("stage.lock", Permission.LOCK_STAGE, lambda s, a: s.lock(a, True, 2), StageState.LIVE),
    ("role.set", Permission.SET_ROLE, lambda s, a: s.set_role(a, BOB, Role.MODERATOR, 2), StageState.LIVE),
    ("speaker.invite", Permission.INVITE, lambda s, a: s.invite(a, BOB, 2), StageState.LIVE),
    ("speaker.demote", Permission.DEMOTE, lambda s, a: s.move_to_audience(a, SPEAKER, 2), StageState.LIVE),
    ("hand.lower other", Permission.LOWER_HANDS, lambda s, a: s.lower_hand(a, BOB, 2), StageState.LIVE),
    (
        "moderation.mute",
        Permission.MODERATE,
        lambda s, a: s.moderator_mute(a, SPEAKER, "audio", True, 2),
        StageState.LIVE,
    ),
    ("moderation.remove", Permission.MODERATE, lambda s, a: s.remove(a, BOB, "", 2), StageState.LIVE),
    ("moderation.ban", Permission.MODERATE, lambda s, a: s.ban(a, BOB, "", 2), StageState.LIVE),
    ("chat.mute", Permission.MODERATE, lambda s, a: s.chat_mute(a, BOB, True, 2), StageState.LIVE),
    (
        "comment.delete other",
        Permission.DELETE_COMMENTS,
        lambda s, a: s.delete_comment(a, "c-bob", 2),
        StageState.LIVE,
    ),
    ("comment.pin", Permission.PIN_COMMENTS, lambda s, a: s.pin_comment(a, "c-bob", 2), StageState.LIVE),
    ("chat.slow_mode", Permission.SLOW_MODE, lambda s, a: s.set_slow_mode(a, 10, 2), StageState.LIVE),
    (
        "question.answer",
        Permission.ANSWER_QUESTIONS,
        lambda s, a: s.answer_question(a, "q-bob", 2),
        StageState.LIVE,
    ),
    (
        "question.dismiss",
        Permission.ANSWER_QUESTIONS,
        lambda s, a: s.dismiss_question(a, "q-bob", 2),
        StageState.LIVE,
    ),
    ("poll.create", Permission.MANAGE_POLLS, lambda s, a: s.create_poll(a, "new", SPEC, 2), StageState.LIVE),
    ("poll.open", Permission.MANAGE_POLLS, lambda s, a: s.open_poll(a, "draft", 2), StageState.LIVE),
    ("poll.close", Permission.MANAGE_POLLS, lambda s, a: s.close_poll(a, "open", 2), StageState.LIVE),
    ("hand.raise", Permission.RAISE_HAND, lambda s, a: s.raise_hand(a, 2), StageState.LIVE),
    ("comment.post", Permission.COMMENT, lambda s, a: s.post_comment(a, "c-new", "hi", 2), StageState.LIVE),
    ("reaction.send", Permission.REACT, lambda s, a: s.react(a, "👏", 2), StageState.LIVE),
    ("question.ask", Permission.ASK, lambda s, a: s.ask_question(a, "q-new", "how?", 2), StageState.LIVE),
    ("question.upvote", Permission.UPVOTE, lambda s, a: s.upvote_question(a, "q-bob", 2), StageState.LIVE),
    ("poll.vote", Permission.VOTE, lambda s, a: s.vote(a, "open", [0], 2), StageState.LIVE),
    ("publish", Permission.PUBLISH, lambda s, a: s.start_publishing(a, ("audio",), 2), StageState.LIVE),
]


@pytest.mark.parametrize("role", COLUMNS, ids=str)
@pytest.mark.parametrize(("name", "permission", "command", "state"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_each_command_admits_exactly_the_roles_the_matrix_allows(
    name: str, permission: Permission, command: Command, state: StageState, role: Role
) -> None:
    stage = populated(state=state)
    _setup(stage)
    actor = ACTORS[role]
    if allows(role, permission):
        command(stage, actor)
    else:
        refused(stage, NotAllowed, lambda: command(stage, actor))
