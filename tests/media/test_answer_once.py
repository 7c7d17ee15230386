"""A viewer's answer is parsed once per join (by aiortc's setRemoteDescription), and an answer that
cannot be parsed still gets ``BadSdp`` and leaves the offer waiting for a good one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc import sdp

from media.errors import BadSdp
from media.messages import MediaMessage
from media.peer import MediaConfig
from media.room import MediaRoom
from tests.media.peers import answer, connected, loopback_ice, viewer_side


def room() -> MediaRoom:
    def notify(participant_id: str, message: MediaMessage) -> None:
        pass

    return MediaRoom("stage", MediaConfig(ice_addresses=["127.0.0.1"]), notify)


async def test_a_viewers_answer_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with loopback_ice():
        media, client = room(), viewer_side()
        try:
            offer = await media.subscribe("viewer")
            viewer_answer = await answer(client, offer.sdp)
            parse = sdp.SessionDescription.parse
            parsed: list[str] = []

            def counting(text: str) -> Any:
                parsed.append(text)
                return parse(text)

            monkeypatch.setattr(sdp.SessionDescription, "parse", counting)
            await media.subscriber_answer("viewer", viewer_answer)
            assert len(parsed) == 1
            assert await connected(media.subscriber_peer("viewer"), client) == ["connected", "connected"]
        finally:
            await asyncio.gather(media.close(), client.close())


async def test_an_answer_aiortc_cannot_parse_is_bad_sdp_and_a_good_one_still_applies() -> None:
    with loopback_ice():
        media, client = room(), viewer_side()
        try:
            offer = await media.subscribe("viewer")
            good = await answer(client, offer.sdp)
            broken = good.replace("a=rtpmap:", "a=rtpmap:x", 1)  # passes the line checks, not aiortc's parse
            with pytest.raises(BadSdp, match="could not be applied"):
                await media.subscriber_answer("viewer", broken)
            await media.subscriber_answer("viewer", good)
            assert await connected(media.subscriber_peer("viewer"), client) == ["connected", "connected"]
        finally:
            await asyncio.gather(media.close(), client.close())
