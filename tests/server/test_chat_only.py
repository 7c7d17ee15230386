"""Chat-only sockets (``join`` with ``media: false``, and consoles): no subscriber peer connection at
all, counted on a real node (``server.app.create_app`` served in this process, so its aiortc objects
are ours to count with ``gc``); they still chat, and still publish when promoted; ``subscriber.*``
from them is refused with ``chat_only``."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack

from server.host.node import Node
from tests.support.client import MedstageClient
from tests.support.inprocess import serve
from tests.support.tokens import signed, token
from tests.support.ws import Socket


def node_peer_connections(*clients: MedstageClient) -> int:
    """RTCPeerConnection objects alive in this process, the test clients' own left out."""
    gc.collect()
    theirs = {id(pc) for c in clients for pc in (c.subscriber_pc, c.publisher_pc) if pc is not None}
    return sum(1 for o in gc.get_objects() if isinstance(o, RTCPeerConnection) and id(o) not in theirs)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Node]]:
    async with serve(tmp_path) as running:
        yield running.url, running.node


async def _socket(session: aiohttp.ClientSession, url: str, path: str = "/ws") -> Socket:
    return Socket(await session.ws_connect(url.replace("http", "ws", 1) + path))


async def test_a_chat_only_join_and_a_console_create_no_peer_connection(served: tuple[str, Node]) -> None:
    url, node = served
    stage = "chat-" + uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as session, MedstageClient(url) as host:
        await host.join(stage, "Host", "host")
        await host.request({"type": "stage.start"}, check=False)  # live already, or now
        live = node.stages[stage]
        # The control: a join with media (the default) costs the node one subscriber peer connection.
        with_media = node_peer_connections(host)
        assert with_media >= 1 and host.participant_id in live.media.viewers

        bot = await _socket(session, url)
        joined = await bot.request(
            signed(
                {"type": "join", "id": "j", "stage": stage, "name": "Bot", "role": "audience", "media": False}
            )
        )
        assert joined["type"] == "joined", joined
        assert await bot.types() == [], "no subscriber.offer, nothing else"
        console = await _socket(session, url, "/console")
        joined = await console.request(
            signed({"type": "join", "id": "j", "stage": stage, "role": "moderator"})
        )
        assert joined["type"] == "joined", joined
        assert "subscriber.offer" not in await console.types()

        assert node_peer_connections(host) == with_media
        assert set(live.media.viewers) == {host.participant_id}

        # It chats like anyone: its comment reaches the host, the host's reaches it.
        posted = await bot.request({"type": "comment.post", "id": "c", "text": "from a bot"})
        assert posted["type"] == "ok", posted
        await host.request({"type": "comment.post", "text": "to everyone"})
        texts = [f["comment"]["text"] for f in await bot.sync() if f["type"] == "comment.posted"]
        assert texts == ["from a bot", "to everyone"]


@pytest.mark.parametrize(
    "request_",
    [
        {"type": "subscriber.answer", "id": "s", "sdp": "v=0\r\n"},
        {
            "type": "ice.candidate",
            "id": "s",
            "pc": "subscriber",
            "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"},
        },
    ],
)
async def test_subscriber_messages_from_a_chat_only_socket_are_refused_chat_only(
    served: tuple[str, Node], request_: dict[str, Any]
) -> None:
    url, _ = served
    stage = "chat-" + uuid.uuid4().hex[:8]
    async with aiohttp.ClientSession() as session:
        host = await _socket(session, url)
        assert (
            await host.request(
                signed({"type": "join", "id": "j", "stage": stage, "role": "host", "media": False})
            )
        )["type"] == "joined"
        for sock in (host, await _socket(session, url, "/console")):
            if sock is not host:
                joined = await sock.request(
                    signed({"type": "join", "id": "j", "stage": stage, "role": "moderator"})
                )
                assert joined["type"] == "joined", joined
            refused = await sock.request(request_)
            assert (refused["type"], refused["code"]) == ("error", "chat_only"), refused
            assert "media: false" in refused["message"]
            await sock.assert_usable_and_quiet()
        assert node_peer_connections() == 0


async def test_a_chat_only_participant_promoted_to_speaker_publishes_on_its_own_connection(
    served: tuple[str, Node],
) -> None:
    url, node = served
    stage = "chat-" + uuid.uuid4().hex[:8]
    async with MedstageClient(url) as host, MedstageClient(url) as speaker:
        await host.join(stage, "Host", "host")
        await host.request({"type": "stage.start"}, check=False)  # live already, or now
        joined = await speaker.request(
            {
                "type": "join",
                "stage": stage,
                "media": False,
                "token": token(stage, "audience", name="Dr Chat"),
            }
        )
        pid = joined["participant"]["id"]
        before = node_peer_connections(host, speaker)
        await host.request({"type": "speaker.invite", "participant_id": pid})
        await speaker.request({"type": "invitation.accept"})

        answer = await speaker.publish(AudioStreamTrack())
        assert answer["type"] == "publish.answer", answer
        assert node_peer_connections(host, speaker) == before + 1, "its publisher connection, only"
        assigned = await host.wait_for("slot.assigned", lambda m: m["participant_id"] == pid)
        assert assigned["kind"] == "audio"
        assert pid not in node.stages[stage].media.viewers
