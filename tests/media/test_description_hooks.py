"""A viewer's connection forgets aiortc's parsed offer and answer once connected
(media/description_hooks.py), and stays usable: trickled candidates, a refused second answer, close."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCSessionDescription
from aiortc.exceptions import InvalidStateError
from aiortc.sdp import candidate_from_sdp

from media import description_hooks
from tests.media.peers import answer, connected, loopback_ice, new_subscriber, offer, viewer_side
from tests.support.waiting import eventually


def test_the_description_hook_still_exists() -> None:
    description_hooks.check()


def test_check_fails_loudly_when_aiortc_renames_its_descriptions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(description_hooks, "_LOCAL", "_RTCPeerConnection__renamed")
    with pytest.raises(description_hooks.HookMissing, match="renamed"):
        description_hooks.check()


async def test_a_connected_viewer_forgets_its_descriptions_and_stays_usable() -> None:
    with loopback_ice():
        sub, client = new_subscriber(), viewer_side()
        try:
            viewer_answer = await answer(client, await offer(sub))
            assert not description_hooks.forget_descriptions(sub.pc)  # an offer is pending: kept
            assert sub.pc.localDescription is not None
            await sub.pc.setRemoteDescription(RTCSessionDescription(viewer_answer, "answer"))
            assert await connected(sub.pc, client) == ["connected", "connected"]
            await eventually(sub.on_connected, 5)
            assert sub.pc.localDescription is None and sub.pc.remoteDescription is None
            # A candidate trickled late, and the end of candidates, are still taken.
            candidate = candidate_from_sdp("candidate:1 1 udp 2130706431 127.0.0.1 9 typ host")
            candidate.sdpMid = sub.pairs[0].audio.mid
            await sub.pc.addIceCandidate(candidate)
            await sub.pc.addIceCandidate(None)
            # A second answer is refused by the signalling state, as before.
            with pytest.raises(InvalidStateError):
                await sub.pc.setRemoteDescription(RTCSessionDescription(viewer_answer, "answer"))
            assert sub.pc.connectionState == "connected"
        finally:
            async with asyncio.timeout(5):
                await sub.pc.close()
            await client.close()
