"""Self-test of the protocol client (tests/support/client.py) against bench/naive_relay.py."""

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

from bench.naive_relay import make_app
from tests.support.client import MedstageClient, RequestError, use_host_addresses, ws_url
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack


@pytest.fixture
async def relay_url() -> AsyncIterator[str]:
    server = TestServer(make_app(), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url(""))
    finally:
        await server.close()
        use_host_addresses(None)


def test_ws_url_defaults_to_the_ws_path() -> None:
    assert ws_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/ws"
    assert ws_url("https://example.org/") == "wss://example.org/ws"
    assert ws_url("ws://127.0.0.1:8080/ws") == "ws://127.0.0.1:8080/ws"


async def test_viewer_gets_a_slot_and_a_keyframe_first_then_the_release(relay_url: str) -> None:
    async with MedstageClient(relay_url) as host, MedstageClient(relay_url, decode=True) as viewer:
        await host.join("selftest", "Dr Host", "host")
        await host.publish(EncodedAudioTrack(), EncodedVideoTrack())
        joined = await viewer.join("selftest", "Dr Viewer", "audience")
        assert joined["type"] == "joined" and joined["participants"][0]["role"] == "host"

        assigned = await viewer.wait_for("slot.assigned", lambda e: e["kind"] == "video")
        assert viewer.slots[assigned["mid"]]["participant_id"] == host.participant_id
        stats = await viewer.wait_media(assigned["mid"], keyframe=True)
        assert stats.first_frame_keyframe is True
        assert stats.decode_failed == 0

        with pytest.raises(RequestError) as refused:
            await viewer.request({"type": "no.such.message"})
        assert refused.value.code == "unknown_type"

        await host.stop_publishing()
        await viewer.wait_for("slot.released", lambda e: e["mid"] == assigned["mid"])
        assert assigned["mid"] not in viewer.slots
        assert (await viewer.leave())["type"] == "left"
        assert await viewer.wait_closed() == 1000
