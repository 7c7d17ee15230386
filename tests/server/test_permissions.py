"""The permission matrix on the wire: every role x every stage command, sent by a participant of that
role (its token says the role) on a fresh stage with whatever the command needs (a target, a comment,
a question, a poll, an invitation, a publication), and answered exactly as ``rooms.roles`` says.

The expectation is derived from ``rooms.roles.allows``, so the test and the matrix cannot drift;
``KEY_CELLS`` spells out the cells that matter most, so that a change to the matrix that flips one of
them fails here in plain words. The full matrix runs on the embedded backend; the key cells also run
on Redis and through the relay (``module_node`` in tests/server/conftest.py).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from rooms.roles import Permission, Role, allows
from server import wire
from tests.support.client import use_host_addresses
from tests.support.tokens import bearer, token
from tests.support.ws import Socket

ROLES = ("host", "moderator", "speaker", "audience")
REPLIES = ("ok", "publish.answer")  # what an accepted command is answered with


@pytest.fixture(scope="module")
def node_env(recording_env: dict[str, str]) -> dict[str, str]:
    """These nodes may record (recording.start is refused on a stage that may not, whoever asks)."""
    return recording_env


# --- a fresh stage for each cell ------------------------------------------------------------------


@dataclass
class Person:
    sock: Socket
    pid: str
    policy: str  # the stage's consent policy version, from ``joined``


@dataclass
class Scene:
    """One stage of one cell: the actor, and the people the command needs, joined on demand."""

    session: aiohttp.ClientSession
    node: Any
    stage: str
    people: list[Person] = field(default_factory=list)
    _staff: Person | None = None

    async def join(self, role: str) -> Person:
        sock = Socket(await self.session.ws_connect(self.node.ws_url))
        reply = await sock.request(
            {"type": "join", "id": "join", "stage": self.stage, "token": token(self.stage, role)}
        )
        assert reply["type"] == "joined", reply
        assert reply["participant"]["role"] == role, reply
        person = Person(sock, reply["participant"]["id"], reply["policy"]["version"])
        self.people.append(person)
        return person

    async def staff(self) -> Person:
        """A moderator who sets the scene up (creates the poll, sends the invitation...)."""
        if self._staff is None:
            self._staff = await self.join("moderator")
        return self._staff

    async def ok(self, person: Person, message: dict[str, Any]) -> dict[str, Any]:
        reply = await self.attempt(person, message)
        assert reply["type"] in REPLIES, (message, reply)
        return reply

    async def attempt(self, person: Person, message: dict[str, Any]) -> dict[str, Any]:
        return await person.sock.request({"id": uuid.uuid4().hex[:8], **message})

    async def target(self, role: str = "audience") -> str:
        return (await self.join(role)).pid

    async def comment_by_someone_else(self) -> str:
        author = await self.join("audience")
        return str((await self.ok(author, {"type": "comment.post", "text": "a comment"}))["comment_id"])

    async def question_by_someone_else(self) -> str:
        author = await self.join("audience")
        return str((await self.ok(author, {"type": "question.ask", "text": "a question?"}))["question_id"])

    async def poll(self, *, opened: bool) -> str:
        staff = await self.staff()
        created = await self.ok(staff, {"type": "poll.create", "question": "Best?", "options": ["A", "B"]})
        if opened:
            await self.ok(staff, {"type": "poll.open", "poll_id": created["poll_id"]})
        return str(created["poll_id"])


_offer: str | None = None


async def offer_sdp() -> str:
    """A real publisher offer (audio), made once: the node answers it on a fresh connection each time."""
    global _offer
    if _offer is None:
        use_host_addresses(["127.0.0.1"])
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTrack(AudioStreamTrack())
            await pc.setLocalDescription(await pc.createOffer())
            _offer = pc.localDescription.sdp
        finally:
            await pc.close()
    return _offer


# --- the commands: what each needs, and which permission decides it -------------------------------

Prepare = Callable[[Scene, Person], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Command:
    permission: Permission | None  # None: every role may (about oneself only)
    prepare: Prepare  # sets the scene up; returns the command's fields
    # A refused role's code. Usually not_allowed; for commands on something a refused role can never
    # have (a publication, an invitation) the state is checked first and says so.
    refusal: str = "not_allowed"
    scheduled: bool = False  # the stage is created scheduled (stage.start)


def fields(**values: Any) -> Prepare:
    async def prepare(scene: Scene, me: Person) -> dict[str, Any]:
        return dict(values)

    return prepare


def on(target_role: str, **values: Any) -> Prepare:
    """The command names a participant of ``target_role`` (not the actor)."""

    async def prepare(scene: Scene, me: Person) -> dict[str, Any]:
        return {"participant_id": await scene.target(target_role), **values}

    return prepare


async def raised_hand(scene: Scene, me: Person) -> dict[str, Any]:
    someone = await scene.join("audience")
    await scene.ok(someone, {"type": "hand.raise"})
    return {"participant_id": someone.pid}


async def invited(scene: Scene, me: Person) -> dict[str, Any]:
    # Only the audience can be invited: for other roles the invitation is refused, and so is answering.
    await scene.attempt(await scene.staff(), {"type": "speaker.invite", "participant_id": me.pid})
    return {}


_screen_offer: str | None = None


async def screen_offer_sdp() -> str:
    """A real screen share's offer (video), made once."""
    global _screen_offer
    if _screen_offer is None:
        use_host_addresses(["127.0.0.1"])
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTrack(VideoStreamTrack())
            await pc.setLocalDescription(await pc.createOffer())
            _screen_offer = pc.localDescription.sdp
        finally:
            await pc.close()
    return _screen_offer


async def sharing_speaker(scene: Scene, me: Person) -> dict[str, Any]:
    """A speaker who shares a screen (``moderation.stop_share`` names them)."""
    speaker = await scene.join("speaker")
    await scene.ok(speaker, {"type": "publish.offer", "source": "screen", "sdp": await screen_offer_sdp()})
    return {"participant_id": speaker.pid}


async def publishing(scene: Scene, me: Person) -> dict[str, Any]:
    # Refused for roles that may not publish: they then have no publication to mute or stop.
    await scene.attempt(me, {"type": "publish.offer", "sdp": await offer_sdp()})
    return {}


async def publishing_muted(scene: Scene, me: Person) -> dict[str, Any]:
    return {**await publishing(scene, me), "kind": "audio", "muted": True}


async def an_offer(scene: Scene, me: Person) -> dict[str, Any]:
    return {"sdp": await offer_sdp()}


async def others_comment(scene: Scene, me: Person) -> dict[str, Any]:
    return {"comment_id": await scene.comment_by_someone_else()}


async def others_question(scene: Scene, me: Person) -> dict[str, Any]:
    return {"question_id": await scene.question_by_someone_else()}


async def draft_poll(scene: Scene, me: Person) -> dict[str, Any]:
    return {"poll_id": await scene.poll(opened=False)}


async def open_poll(scene: Scene, me: Person) -> dict[str, Any]:
    return {"poll_id": await scene.poll(opened=True)}


async def open_poll_ballot(scene: Scene, me: Person) -> dict[str, Any]:
    return {"poll_id": await scene.poll(opened=True), "choices": [0]}


async def consent(scene: Scene, me: Person) -> dict[str, Any]:
    return {"scopes": ["comments"], "policy_version": me.policy, "method": "settings"}


async def consented(scene: Scene, me: Person) -> dict[str, Any]:
    await scene.ok(me, {"type": "consent.give", **await consent(scene, me)})
    return {}


async def recording(scene: Scene, me: Person) -> dict[str, Any]:
    await scene.ok(await scene.staff(), {"type": "recording.start"})
    return {}


P = Permission
COMMANDS: dict[str, Command] = {
    "stage.start": Command(P.START_STAGE, fields(), scheduled=True),
    "stage.end": Command(P.END_STAGE, fields()),
    "stage.lock": Command(P.LOCK_STAGE, fields(locked=True)),
    "role.set": Command(P.SET_ROLE, on("audience", role="moderator")),
    "hand.raise": Command(P.RAISE_HAND, fields()),
    "hand.lower": Command(P.LOWER_HANDS, raised_hand),  # someone else's (one's own needs nothing)
    "speaker.invite": Command(P.INVITE, on("audience")),
    "speaker.demote": Command(P.DEMOTE, on("speaker")),
    "invitation.accept": Command(P.ANSWER_INVITATION, invited, refusal="not_invited"),
    "invitation.decline": Command(P.ANSWER_INVITATION, invited, refusal="not_invited"),
    "moderation.mute": Command(P.MODERATE, on("speaker", kind="audio", muted=True)),
    "moderation.stop_share": Command(P.MODERATE, sharing_speaker),
    "moderation.remove": Command(P.MODERATE, on("audience", reason="test")),
    "moderation.ban": Command(P.MODERATE, on("audience", reason="test")),
    "chat.mute": Command(P.MODERATE, on("audience", muted=True)),
    "chat.slow_mode": Command(P.SLOW_MODE, fields(seconds=5)),
    "comment.post": Command(P.COMMENT, fields(text="hello")),
    "comment.delete": Command(P.DELETE_COMMENTS, others_comment),  # someone else's
    "comment.pin": Command(P.PIN_COMMENTS, others_comment),
    "reaction.send": Command(P.REACT, fields(emoji="👏")),
    "question.ask": Command(P.ASK, fields(text="why?")),
    "question.upvote": Command(P.UPVOTE, others_question),
    "question.answer": Command(P.ANSWER_QUESTIONS, others_question),
    "question.dismiss": Command(P.ANSWER_QUESTIONS, others_question),
    "poll.create": Command(P.MANAGE_POLLS, fields(question="Best?", options=["A", "B"])),
    "poll.open": Command(P.MANAGE_POLLS, draft_poll),
    "poll.close": Command(P.MANAGE_POLLS, open_poll),
    "poll.vote": Command(P.VOTE, open_poll_ballot),
    "consent.give": Command(None, consent),
    "consent.withdraw": Command(None, consented),
    "recording.start": Command(P.RECORD, fields()),
    "recording.stop": Command(P.RECORD, recording),
    "publish.offer": Command(P.PUBLISH, an_offer),
    "publish.mute": Command(P.PUBLISH, publishing_muted, refusal="not_publishing"),
    "publish.stop": Command(P.PUBLISH, publishing, refusal="not_publishing"),
}

# The cells that matter most, readable without rooms/roles.py: True = allowed.
KEY_CELLS: dict[tuple[str, str], bool] = {
    ("audience", "moderation.ban"): False,
    ("audience", "moderation.remove"): False,
    ("audience", "poll.create"): False,
    ("audience", "publish.offer"): False,
    ("audience", "recording.start"): False,
    ("audience", "hand.raise"): True,
    ("audience", "comment.post"): True,
    ("audience", "poll.vote"): True,
    ("speaker", "stage.end"): False,
    ("speaker", "moderation.ban"): False,
    ("speaker", "moderation.stop_share"): False,
    ("moderator", "moderation.stop_share"): True,
    ("speaker", "comment.delete"): False,
    ("speaker", "publish.offer"): True,
    ("moderator", "stage.end"): False,
    ("moderator", "role.set"): False,
    ("moderator", "publish.offer"): False,
    ("moderator", "moderation.ban"): True,
    ("moderator", "recording.start"): True,
    ("host", "stage.end"): True,
    ("host", "role.set"): True,
    ("host", "hand.raise"): False,
}


def expected(role: str, command: str) -> bool:
    permission = COMMANDS[command].permission
    return permission is None or allows(Role(role), permission)


CELLS = [pytest.param(role, command, id=f"{role}-{command}") for role in ROLES for command in COMMANDS]
KEY = [pytest.param(role, command, id=f"{role}-{command}") for role, command in KEY_CELLS]


def test_every_stage_command_on_the_wire_is_in_the_matrix() -> None:
    on_the_wire = {tag for tag, cls in wire.TYPES.items() if issubclass(cls, wire.StageCommand)}
    publishing_ = {"publish.offer", "publish.mute", "publish.stop"}
    assert on_the_wire | publishing_ == set(COMMANDS)


def test_the_key_cells_are_what_the_matrix_says() -> None:
    wrong = {cell: allowed for cell, allowed in KEY_CELLS.items() if expected(*cell) != allowed}
    assert wrong == {}, "rooms/roles.py disagrees with these cells"


# --- on the wire ----------------------------------------------------------------------------------


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def play(session: aiohttp.ClientSession, node: Any, role: str, command: str) -> None:
    spec = COMMANDS[command]
    stage = "m-" + uuid.uuid4().hex[:10]
    body = {"id": stage, "state": "scheduled" if spec.scheduled else "live"}
    async with session.post(node.url + "/api/stages", json=body, headers=bearer()) as response:
        assert response.status == 201, await response.text()
    scene = Scene(session, node, stage)
    try:
        me = await scene.join(role)
        message = {"type": command, **await spec.prepare(scene, me)}
        for person in scene.people:
            await person.sock.sync()  # whatever the set-up sent
        reply = await scene.attempt(me, message)
        if expected(role, command):
            assert reply.get("code") != "not_allowed", f"{role} may {command}: {reply}"
            assert reply["type"] in REPLIES, f"{role} may {command}, and the scene allows it: {reply}"
            return
        assert reply["type"] == "error" and reply["code"] == spec.refusal, (
            f"{role} may not {command}: {reply}"
        )
        assert reply["message"]
        for person in scene.people:
            assert await person.sock.sync() == [], "a refused command changes nothing and tells nobody"
    finally:
        for person in scene.people:
            await person.sock.ws.close()


@pytest.mark.parametrize("module_node", ["memory"], indirect=True)
@pytest.mark.parametrize(("role", "command"), CELLS)
async def test_every_role_and_command(
    module_node: Any, session: aiohttp.ClientSession, role: str, command: str
) -> None:
    await play(session, module_node, role, command)


@pytest.mark.parametrize("module_node", ["redis", "relay"], indirect=True)
@pytest.mark.parametrize(("role", "command"), KEY)
async def test_key_cells_on_redis_and_through_the_relay(
    module_node: Any, session: aiohttp.ClientSession, role: str, command: str
) -> None:
    await play(session, module_node, role, command)
