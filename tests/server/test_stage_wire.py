"""The stage on the wire (issue 3): permissions enforced, each event to exactly the people who may
see it, late joiners' state, and bad input refused to the sender only. Real node, real WebSockets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import msgpack
import pytest

from tests.conftest import RunningNode
from tests.support.tokens import bearer, signed
from tests.support.ws import Socket

Join = Callable[..., Awaitable[Socket]]


@pytest.fixture
def node(module_node: RunningNode) -> RunningNode:
    return module_node


@pytest.fixture
async def join(node: RunningNode) -> AsyncIterator[Join]:
    """``await join(role, name=..., stage=..., identity=...)``: a joined socket, its backlog read."""
    session = aiohttp.ClientSession()
    stage = "w-" + uuid.uuid4().hex[:10]
    async with session.post(node.url + "/api/stages", json={"id": stage}, headers=bearer()) as response:
        assert response.status == 201
    sockets: list[Socket] = []

    async def open_joined(
        role: str, name: str | None = None, *, stage_id: str | None = None, identity: str | None = None
    ) -> Socket:
        sock = Socket(await session.ws_connect(node.ws_url))
        message: dict[str, Any] = {
            "type": "join",
            "id": "join",
            "stage": stage_id or stage,
            "name": name or f"Dr {role}",
            "role": role,
        }
        if identity is not None:
            message["identity"] = identity
        reply = await sock.request(signed(message))
        assert reply["type"] == "joined", reply
        sock.joined = reply  # type: ignore[attr-defined]
        sock.pid = reply["participant"]["id"]  # type: ignore[attr-defined]
        await sock.sync()
        for other in sockets:
            if not other.ws.closed:
                await other.sync()  # drop their participant.joined about us
        sockets.append(sock)
        return sock

    yield open_joined
    for sock in sockets:
        await sock.ws.close()
    await session.close()


async def ok(sock: Socket, message: dict[str, Any]) -> dict[str, Any]:
    message = {"id": uuid.uuid4().hex[:8], **message}
    reply = await sock.request(message)
    assert reply["type"] == "ok", reply
    return reply


async def refused(sock: Socket, message: dict[str, Any], code: str) -> dict[str, Any]:
    message = {"id": uuid.uuid4().hex[:8], **message}
    reply = await sock.request(message)
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert reply["message"]
    return reply


def of_type(frames: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == type_]


# --- permissions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        {"type": "speaker.invite", "participant_id": "p-x"},
        {"type": "speaker.demote", "participant_id": "p-x"},
        {"type": "moderation.mute", "participant_id": "p-x", "kind": "audio", "muted": True},
        {"type": "moderation.remove", "participant_id": "p-x"},
        {"type": "moderation.ban", "participant_id": "p-x"},
        {"type": "chat.mute", "participant_id": "p-x", "muted": True},
        {"type": "chat.slow_mode", "seconds": 5},
        {"type": "comment.pin", "comment_id": None},
        {"type": "stage.lock", "locked": True},
        {"type": "stage.end"},
        {"type": "role.set", "participant_id": "p-x", "role": "moderator"},
        {"type": "poll.create", "question": "Q", "options": ["a", "b"]},
        {"type": "question.answer", "question_id": "q-1"},
    ],
)
async def test_audience_may_not_moderate(join: Join, command: dict[str, Any]) -> None:
    host = await join("host")
    viewer = await join("audience")
    if "participant_id" in command:
        command = {**command, "participant_id": host.pid}  # type: ignore[attr-defined]
    await refused(viewer, command, "not_allowed")
    assert await host.sync() == [], "a refused command changes nothing and tells nobody"
    await viewer.assert_usable_and_quiet()


async def test_a_command_for_another_stage_is_refused(join: Join) -> None:
    host = await join("host")
    await refused(host, {"type": "comment.post", "stage": "elsewhere", "text": "hi"}, "wrong_stage")
    assert await host.sync() == []


# --- hands and invitations ---------------------------------------------------------------------


async def test_hand_invitation_and_demotion_reach_the_right_people(join: Join) -> None:
    mod = await join("moderator")
    alice = await join("audience", "Dr Alice")
    bob = await join("audience", "Dr Bob")

    await ok(alice, {"type": "hand.raise"})
    for sock in (mod, bob):
        hands = of_type(await sock.sync(), "hands.updated")
        assert hands and hands[-1]["hands"] == [alice.pid]  # type: ignore[attr-defined]
    await alice.sync()

    await ok(mod, {"type": "speaker.invite", "participant_id": alice.pid})  # type: ignore[attr-defined]
    invitation = of_type(await alice.sync(), "invitation")
    assert invitation and invitation[0]["participant_id"] == alice.pid  # type: ignore[attr-defined]
    assert of_type(await mod.sync(), "invitation"), "moderators see invitations"
    assert of_type(await bob.sync(), "invitation") == [], "other audience members do not"

    await ok(alice, {"type": "invitation.accept"})
    updates = of_type(await bob.sync(), "participant.updated")
    assert any(
        u["participant"]["id"] == alice.pid and u["participant"]["role"] == "speaker"  # type: ignore[attr-defined]
        for u in updates
    )
    await mod.sync()

    await ok(mod, {"type": "speaker.demote", "participant_id": alice.pid})  # type: ignore[attr-defined]
    updates = of_type(await bob.sync(), "participant.updated")
    assert updates[-1]["participant"]["role"] == "audience"


async def test_accepting_without_an_invitation_is_refused(join: Join) -> None:
    await join("host")
    viewer = await join("audience")
    await refused(viewer, {"type": "invitation.accept"}, "not_invited")


# --- comments ----------------------------------------------------------------------------------


async def test_comments_reach_everyone_in_order_and_late_joiners_get_history(join: Join) -> None:
    host = await join("host")
    viewer = await join("audience")
    ids = []
    for i in range(3):
        ids.append((await ok(viewer, {"type": "comment.post", "text": f"comment {i}"}))["comment_id"])
    posted = of_type(await host.sync(), "comment.posted")
    assert [p["comment"]["text"] for p in posted] == ["comment 0", "comment 1", "comment 2"]
    seqs = [p["seq"] for p in posted]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3

    await ok(host, {"type": "comment.delete", "comment_id": ids[1]})
    deleted = of_type(await viewer.sync(), "comment.deleted")
    assert deleted and deleted[0]["comment_id"] == ids[1]

    late = await join("audience", "Dr Late")
    history = late.joined["state"]["comments"]  # type: ignore[attr-defined]
    assert [c["text"] for c in history] == ["comment 0", "comment 2"], "deleted stays deleted"


async def test_only_the_author_or_a_moderator_deletes_a_comment(join: Join) -> None:
    await join("host")
    alice = await join("audience")
    bob = await join("audience")
    comment_id = (await ok(alice, {"type": "comment.post", "text": "mine"}))["comment_id"]
    await refused(bob, {"type": "comment.delete", "comment_id": comment_id}, "not_allowed")
    await ok(alice, {"type": "comment.delete", "comment_id": comment_id})
    await refused(alice, {"type": "comment.delete", "comment_id": comment_id}, "not_found")


async def test_slow_mode_and_rate_limit_refuse_with_retry_after(join: Join) -> None:
    host = await join("host")
    viewer = await join("audience")
    await ok(host, {"type": "chat.slow_mode", "seconds": 30})
    assert of_type(await viewer.sync(), "chat.updated")[0]["slow_mode_s"] == 30
    await ok(viewer, {"type": "comment.post", "text": "first"})
    reply = await refused(viewer, {"type": "comment.post", "text": "second"}, "slow_mode")
    assert 0 < reply["retry_after"] <= 30
    await ok(host, {"type": "comment.post", "text": "moderators are exempt"})
    await ok(host, {"type": "comment.post", "text": "from slow mode"})

    await ok(host, {"type": "chat.slow_mode", "seconds": 0})
    other = await join("audience")
    for i in range(5):
        await ok(other, {"type": "comment.post", "text": f"burst {i}"})
    reply = await refused(other, {"type": "comment.post", "text": "one too many"}, "rate_limited")
    assert reply["retry_after"] > 0


async def test_a_chat_muted_person_cannot_post_and_an_overlong_comment_is_refused(join: Join) -> None:
    host = await join("host")
    viewer = await join("audience")
    await refused(viewer, {"type": "comment.post", "text": "x" * 501}, "invalid_message")
    await ok(host, {"type": "chat.mute", "participant_id": viewer.pid, "muted": True})  # type: ignore[attr-defined]
    await refused(viewer, {"type": "comment.post", "text": "hello"}, "chat_muted")
    await refused(viewer, {"type": "question.ask", "text": "hello?"}, "chat_muted")


async def test_pinned_comment_is_shown_to_everyone_and_to_late_joiners(join: Join) -> None:
    host = await join("host")
    viewer = await join("audience")
    comment_id = (await ok(viewer, {"type": "comment.post", "text": "pin me"}))["comment_id"]
    await ok(host, {"type": "comment.pin", "comment_id": comment_id})
    pinned = of_type(await viewer.sync(), "comment.pinned")
    assert pinned[-1]["comment"]["id"] == comment_id
    late = await join("audience")
    assert late.joined["state"]["pinned"]["id"] == comment_id  # type: ignore[attr-defined]


async def test_reactions_are_aggregated(join: Join) -> None:
    host = await join("host")
    viewer = await join("audience")
    for _ in range(3):
        await viewer.send({"type": "reaction.send", "emoji": "👏"})
    await host.send({"type": "reaction.send", "emoji": "❤️"})
    frame = await host.recv_type("reactions", timeout=3)
    counts = frame["counts"]
    if sum(counts.values()) < 4:  # the tick may have split the burst over two windows
        more = (await host.recv_type("reactions", 3))["counts"]
        counts = {k: counts.get(k, 0) + more.get(k, 0) for k in {*counts, *more}}
    assert counts == {"👏": 3, "❤️": 1}


# --- questions -----------------------------------------------------------------------------------


async def test_questions_are_ordered_by_votes_with_one_vote_per_person(join: Join) -> None:
    host = await join("host")
    alice = await join("audience")
    bob = await join("audience")
    q1 = (await ok(alice, {"type": "question.ask", "text": "first?"}))["question_id"]
    q2 = (await ok(alice, {"type": "question.ask", "text": "second?"}))["question_id"]
    await ok(bob, {"type": "question.upvote", "question_id": q2})
    await refused(bob, {"type": "question.upvote", "question_id": q2}, "already_voted")
    await ok(host, {"type": "question.answer", "question_id": q1})
    late = await join("audience")
    questions = late.joined["state"]["questions"]  # type: ignore[attr-defined]
    assert [q["id"] for q in questions][:2] == [q2, q1]
    assert {q["id"]: q["status"] for q in questions}[q1] == "answered"


# --- polls and quizzes ---------------------------------------------------------------------------


async def test_poll_lifecycle_counts_and_results_go_to_the_right_people(join: Join) -> None:
    mod = await join("moderator")
    alice = await join("audience")
    bob = await join("audience")
    poll_id = (await ok(mod, {"type": "poll.create", "question": "Best?", "options": ["A", "B", "C"]}))[
        "poll_id"
    ]
    assert of_type(await mod.sync(), "poll.created")
    assert await alice.types() == [], "a draft is for moderators only"

    await ok(mod, {"type": "poll.open", "poll_id": poll_id})
    assert of_type(await alice.sync(), "poll.opened")[0]["poll"]["id"] == poll_id
    await bob.sync()
    await mod.sync()

    await ok(alice, {"type": "poll.vote", "poll_id": poll_id, "choices": [1]})
    await refused(alice, {"type": "poll.vote", "poll_id": poll_id, "choices": [2]}, "already_voted")
    await refused(bob, {"type": "poll.vote", "poll_id": poll_id, "choices": [0, 1]}, "invalid_choice")
    await refused(bob, {"type": "poll.vote", "poll_id": poll_id, "choices": [7]}, "invalid_choice")
    await ok(bob, {"type": "poll.vote", "poll_id": poll_id, "choices": [1]})
    counts = of_type(await mod.sync(), "poll.counts")
    assert counts[-1]["counts"] == [0, 2, 0] and counts[-1]["ballots"] == 2
    assert of_type(await alice.sync(), "poll.counts") == [], "live counts are for moderators"

    late = await join("audience")
    polls = late.joined["state"]["polls"]  # type: ignore[attr-defined]
    assert [p["id"] for p in polls if p["status"] == "open"] == [poll_id], "late joiners get the poll"

    await ok(mod, {"type": "poll.close", "poll_id": poll_id})
    for sock in (alice, bob, late):
        closed = of_type(await sock.sync(), "poll.closed")
        assert closed[0]["poll"]["results"]["counts"] == [0, 2, 0]
    await refused(late, {"type": "poll.vote", "poll_id": poll_id, "choices": [0]}, "poll_closed")


async def test_quiz_tells_each_voter_and_keeps_a_leaderboard(join: Join) -> None:
    mod = await join("moderator")
    alice = await join("audience", "Dr Alice")
    bob = await join("audience", "Dr Bob")
    poll_id = (
        await ok(
            mod,
            {"type": "poll.create", "question": "2+2?", "options": ["3", "4"], "quiz": True, "correct": [1]},
        )
    )["poll_id"]
    await ok(mod, {"type": "poll.open", "poll_id": poll_id})
    await ok(alice, {"type": "poll.vote", "poll_id": poll_id, "choices": [1]})
    await ok(bob, {"type": "poll.vote", "poll_id": poll_id, "choices": [0]})
    await ok(mod, {"type": "poll.close", "poll_id": poll_id})
    a, b = await alice.sync(), await bob.sync()
    assert of_type(a, "quiz.result")[0]["correct"] is True
    assert of_type(b, "quiz.result")[0]["correct"] is False
    assert len(of_type(a, "quiz.result")) == 1, "each voter learns only their own result"
    board = of_type(b, "quiz.leaderboard")[-1]["entries"]
    assert board[0]["participant_id"] == alice.pid and board[0]["score"] == 1  # type: ignore[attr-defined]


async def test_invalid_polls_are_refused(join: Join) -> None:
    mod = await join("moderator")
    await refused(mod, {"type": "poll.create", "question": "Q", "options": ["only one"]}, "invalid_message")
    await refused(
        mod, {"type": "poll.create", "question": "Q", "options": ["a", "b"], "quiz": True}, "invalid_message"
    )
    await refused(mod, {"type": "poll.open", "poll_id": "poll-999"}, "not_found")


# --- removal, bans, ending -----------------------------------------------------------------------


async def test_removed_people_are_disconnected_and_may_return(join: Join) -> None:
    host = await join("host")
    viewer = await join("audience", identity="id-remove")
    await ok(host, {"type": "moderation.remove", "participant_id": viewer.pid, "reason": "test"})  # type: ignore[attr-defined]
    removed = await viewer.recv_type("participant.removed")
    assert removed["banned"] is False and removed["reason"] == "test"
    msg = await viewer.ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert viewer.ws.close_code == 4003
    again = await join("audience", identity="id-remove")
    assert again.joined["type"] == "joined"  # type: ignore[attr-defined]


async def test_a_banned_identity_never_rejoins(join: Join, node: RunningNode) -> None:
    host = await join("host")
    viewer = await join("audience", identity="id-ban")
    await ok(host, {"type": "moderation.ban", "participant_id": viewer.pid, "reason": "abuse"})  # type: ignore[attr-defined]
    await viewer.recv_type("participant.removed")
    await viewer.ws.receive(timeout=5)
    assert viewer.ws.close_code == 4004
    async with aiohttp.ClientSession() as session:
        sock = Socket(await session.ws_connect(node.ws_url))
        stage = host.joined["stage"]["id"]  # type: ignore[attr-defined]
        await refused(
            sock,
            signed(
                {"type": "join", "stage": stage, "name": "New name", "role": "audience", "identity": "id-ban"}
            ),
            "banned",
        )


async def test_ending_the_stage_tells_everyone_and_closes_sockets(join: Join) -> None:
    host = await join("host")
    viewer = await join("audience")
    await ok(host, {"type": "stage.end"})
    await viewer.recv_type("stage.ended")
    await viewer.ws.receive(timeout=5)
    assert viewer.ws.close_code == 1000


async def test_a_locked_stage_admits_nobody_new(join: Join, node: RunningNode) -> None:
    host = await join("host")
    await ok(host, {"type": "stage.lock", "locked": True})
    async with aiohttp.ClientSession() as session:
        sock = Socket(await session.ws_connect(node.ws_url))
        stage = host.joined["stage"]["id"]  # type: ignore[attr-defined]
        await refused(
            sock, signed({"type": "join", "stage": stage, "name": "A", "role": "audience"}), "stage_locked"
        )


async def test_events_come_in_msgpack_to_a_msgpack_client(join: Join, node: RunningNode) -> None:
    host = await join("host")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(node.ws_url)
        stage = host.joined["stage"]["id"]  # type: ignore[attr-defined]
        await ws.send_bytes(
            msgpack.packb(signed({"type": "join", "id": 1, "stage": stage, "name": "B", "role": "audience"}))
        )
        # Joined before the comment is posted (two sockets: nothing orders them otherwise).
        joined = msgpack.unpackb((await ws.receive(timeout=5)).data)
        assert joined["type"] == "joined", joined
        await ok(host, {"type": "comment.post", "text": "binary?"})
        async with asyncio.timeout(5):
            while True:
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.BINARY
                frame = msgpack.unpackb(msg.data)
                if frame["type"] == "comment.posted":
                    assert frame["comment"]["text"] == "binary?"
                    break


async def test_a_demotion_sends_one_update_and_a_new_moderator_gets_the_moderator_view(join: Join) -> None:
    host = await join("host")
    alice = await join("audience", "Dr Alice")
    bob = await join("audience", "Dr Bob")
    draft = {"type": "poll.create", "question": "Draft?", "options": ["a", "b"]}
    poll_id = (await ok(host, draft))["poll_id"]
    await ok(host, {"type": "speaker.invite", "participant_id": alice.pid})  # type: ignore[attr-defined]
    await ok(alice, {"type": "invitation.accept"})
    await bob.sync()
    await ok(host, {"type": "speaker.demote", "participant_id": alice.pid})  # type: ignore[attr-defined]
    updates = [
        u for u in of_type(await bob.sync(), "participant.updated") if u["participant"]["id"] == alice.pid
    ]  # type: ignore[attr-defined]
    assert len(updates) == 1 and updates[0]["participant"]["role"] == "audience"

    await ok(host, {"type": "role.set", "participant_id": bob.pid, "role": "moderator"})  # type: ignore[attr-defined]
    state = of_type(await bob.sync(), "state")
    assert state, "a promoted moderator gets the moderator view"
    assert poll_id in [p["id"] for p in state[0]["state"]["polls"]], "including drafts"


async def test_a_scheduled_stage_admits_people_but_nobody_publishes_until_it_starts(
    node: RunningNode,
) -> None:
    stage = "s-" + uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            node.url + "/api/stages", json={"id": stage, "state": "scheduled"}, headers=bearer()
        ) as r:
            assert r.status == 201 and (await r.json())["state"] == "scheduled"
        host = Socket(await session.ws_connect(node.ws_url))
        joined = await host.request(
            signed({"type": "join", "id": 1, "stage": stage, "name": "H", "role": "host"})
        )
        assert joined["stage"]["state"] == "scheduled"
        await refused(host, {"type": "publish.offer", "sdp": "v=0\r\n"}, "stage_not_live")
        await ok(host, {"type": "stage.start"})
        updated = await host.recv_type("stage.updated")
        assert updated["stage"]["state"] == "live"


async def test_nobody_gives_consent_for_another_person(join: Join) -> None:
    host = await join("host")
    viewer = await join("audience")
    policy = host.joined["policy"]["version"]  # type: ignore[attr-defined]
    await refused(
        host,
        {"type": "consent.give", "scopes": ["media"], "policy_version": policy, "participant_id": viewer.pid},
        "not_allowed",
    )  # type: ignore[attr-defined]
    assert await viewer.sync() == []
    await refused(
        viewer, {"type": "consent.give", "scopes": ["media"], "policy_version": "1999-01"}, "policy_mismatch"
    )
    await refused(viewer, {"type": "consent.withdraw"}, "no_consent")
    await ok(
        viewer,
        {"type": "consent.give", "scopes": ["media"], "policy_version": policy, "participant_id": viewer.pid},
    )  # type: ignore[attr-defined]
