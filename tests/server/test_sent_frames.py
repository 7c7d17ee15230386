"""Real frames from a real node (on memory, Redis and through the relay) match the schemas of what the
server sends (``server.wire_out.ServerMessage``) exactly: a host who publishes, a moderator, a console,
and a viewer on msgpack framing go through a stage's life, and every frame any of them received is
converted into the union (an unknown type or a wrong shape fails) and must convert back to itself (an
undocumented extra field, or a null where the field used to be absent, fails too)."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import msgspec
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from server import wire_out
from tests.support.client import MedstageClient
from tests.support.tokens import bearer, token


@pytest.fixture(scope="module")
def node_env(recording_env: dict[str, str]) -> dict[str, str]:
    """These nodes may record (recording.start is refused on a stage that may not, whoever asks)."""
    return recording_env


class Recorder(MedstageClient):
    """A client that keeps every frame it receives, replies included."""

    def __init__(self, url: str, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.frames: list[Any] = []

    async def _dispatch(self, frame: Any) -> None:
        self.frames.append(frame)
        await super()._dispatch(frame)


def mismatch(frame: Any) -> str | None:
    """Why ``frame`` is not a message of the union, or None."""
    try:
        message = msgspec.convert(frame, wire_out.ServerMessage)
    except msgspec.ValidationError as exc:
        return f"{exc}: {frame}"
    again = msgspec.json.decode(msgspec.json.encode(message))  # tuples as lists, as they arrive
    if again != frame:
        return f"not the same after a round trip through {type(message).__name__}: {frame} != {again}"
    return None


# Every type the scenario below makes somebody receive.
EXPECTED = {
    "joined", "ok", "pong", "error", "history", "state", "left", "subscriber.offer", "subscriber.ready",
    "publish.answer", "slot.assigned", "slot.released", "participant.joined", "participant.updated",
    "participant.left", "participant.removed", "observer.joined", "observer.left", "moderation.audit",
    "stage.updated", "stage.ended", "hands.updated", "invitation", "invitation.answered", "chat.updated",
    "comment.posted", "comment.deleted", "comment.pinned", "reactions", "question.asked",
    "question.updated", "poll.created", "poll.opened", "poll.counts", "poll.closed", "poll.voters",
    "quiz.result", "quiz.leaderboard", "consent.recorded", "consent.requested", "recording.started",
    "recording.stopped", "share.stopped",
}  # fmt: skip


async def test_every_frame_of_a_stage_s_life_matches_the_schemas(module_node: Any) -> None:
    node = module_node
    stage = "out-" + uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as session:
        async with session.post(node.url + "/api/stages", json={"id": stage}, headers=bearer()) as r:
            assert r.status == 201, await r.text()
    url = node.ws_url
    host, mod, console = Recorder(url), Recorder(url), Recorder(url)
    viewer, other = Recorder(url, framing="msgpack"), Recorder(url)
    clients = [host, mod, console, viewer, other]
    for client in clients:
        await client.connect()
    try:
        await host.join(stage, "Dr Host", "host")
        await host.publish(AudioStreamTrack())
        await console.request(
            {"type": "join", "stage": stage, "observer": True, "token": token(stage, "moderator")}
        )
        await mod.join(stage, "Dr Mod", "moderator")  # its joined lists the console
        joined = await viewer.join(stage, "Dr View", "audience")
        await other.join(stage, "Dr Other", "audience")
        await viewer.wait_for("slot.assigned")
        vid, oid = viewer.participant_id, other.participant_id

        async def ok(client: Recorder, message: dict[str, Any]) -> dict[str, Any]:
            reply = await client.request(message)
            assert reply["type"] == "ok", reply
            return reply

        await viewer.ping()
        assert (await viewer.request({"type": "hand.lower"}, check=False))["type"] == "error"
        comment = (await ok(viewer, {"type": "comment.post", "text": "Which guideline?"}))["comment_id"]
        await ok(host, {"type": "comment.pin", "comment_id": comment})
        await ok(viewer, {"type": "reaction.send", "emoji": "👏"})
        await viewer.wait_for("reactions")
        question = (await ok(viewer, {"type": "question.ask", "text": "And the dose?"}))["question_id"]
        await ok(other, {"type": "question.upvote", "question_id": question})
        await viewer.request({"type": "history.get", "kind": "questions"})
        await viewer.request({"type": "history.get", "kind": "comments"})
        await ok(viewer, {"type": "hand.raise"})
        await ok(host, {"type": "speaker.invite", "participant_id": vid})
        await ok(viewer, {"type": "invitation.decline"})
        await ok(mod, {"type": "chat.slow_mode", "seconds": 0})
        await ok(mod, {"type": "stage.lock", "locked": True})
        await ok(mod, {"type": "stage.lock", "locked": False})
        poll = (
            await ok(
                host,
                {"type": "poll.create", "question": "Which?", "options": ["A", "B"], "anonymous": False,
                 "quiz": True, "correct": [1]},
            )
        )["poll_id"]  # fmt: skip
        await ok(host, {"type": "poll.open", "poll_id": poll})
        await ok(viewer, {"type": "poll.vote", "poll_id": poll, "choices": [1]})
        await ok(host, {"type": "poll.close", "poll_id": poll})
        await ok(host, {"type": "role.set", "participant_id": vid, "role": "moderator"})  # state, to them
        await ok(host, {"type": "role.set", "participant_id": vid, "role": "audience"})
        policy = joined["policy"]["version"]
        await ok(other, {"type": "consent.give", "scopes": ["comments"], "policy_version": policy})
        await ok(host, {"type": "recording.start"})
        await viewer.wait_for("consent.requested")
        await ok(host, {"type": "recording.stop"})
        await ok(mod, {"type": "comment.delete", "comment_id": comment})
        await ok(host, {"type": "question.answer", "question_id": question})
        # A screen share beside the camera, ended by a moderator (share.stopped, to the host).
        share_pc = RTCPeerConnection(host._configuration())
        share_pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await share_pc.setLocalDescription(await share_pc.createOffer())
        offer = share_pc.localDescription.sdp
        answer = await host.request({"type": "publish.offer", "source": "screen", "sdp": offer})
        await share_pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await viewer.wait_for("slot.assigned", lambda m: m["source"] == "screen")
        await ok(mod, {"type": "moderation.stop_share", "participant_id": host.participant_id})
        await host.wait_for("share.stopped")
        await viewer.wait_for("slot.released", lambda m: m["source"] == "screen")
        await share_pc.close()
        await host.mute("audio", True)
        await host.stop_publishing()
        await viewer.wait_for("slot.released")
        await ok(mod, {"type": "moderation.remove", "participant_id": oid, "reason": "test"})
        await console.leave()
        await viewer.leave()
        await ok(host, {"type": "stage.end"})
        for client in (host, mod):
            await client.wait_for("stage.ended")
    finally:
        for client in clients:
            await client.close()

    frames = [f for c in clients for f in c.frames]
    wrong = [why for why in map(mismatch, frames) if why is not None]
    assert not wrong, "\n".join(wrong)
    seen = {f["type"] for f in frames}
    assert EXPECTED <= seen, sorted(EXPECTED - seen)
    # msgpack framing too: the viewer's frames are the same schemas.
    assert {"joined", "ok", "slot.assigned", "comment.posted"} <= {f["type"] for f in viewer.frames}
