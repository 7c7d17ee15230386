"""A viewer's layer preference (``layer.set``) with real node processes and real aiortc peers: "audio"
stops its video slots and keeps its audio, in the node's process and through media workers; back to
"auto", the video resumes on a keyframe. And the viewer's REMB reaches its estimate."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningNode, start_node
from tests.support.client import MedstageClient, RequestError
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.waiting import eventually


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


def _node(tmp_path: Path, workers: int, single_port: bool = True) -> Iterator[RunningNode]:
    env = {"MEDSTAGE_MEDIA_WORKERS": str(workers), "MEDSTAGE_MEDIA_SINGLE_PORT": "1" if single_port else "0"}
    node = start_node(tmp_path, env)
    try:
        yield node
    finally:
        code = node.stop()
        assert code == 0, f"node exited with {code}:\n{node.log()[-4000:]}"


# The viewer's RTCP (its REMB) arrives on the shared media port (media/rtcpin.py), in the node's
# process and in workers, or through aiortc's own routing (media/aiortc_hooks.py) without it.
@pytest.mark.parametrize(("workers", "single_port"), [(0, True), (2, True), (0, False)])
async def test_audio_only_stops_the_video_keeps_the_audio_and_auto_resumes_on_a_keyframe(
    tmp_path: Path, clip: Any, workers: int, single_port: bool
) -> None:
    for node in _node(tmp_path, workers, single_port):
        await _audio_only_then_auto(node, clip)


async def _audio_only_then_auto(node: RunningNode, clip: Any) -> None:
    stage = "lay-" + uuid.uuid4().hex[:8]
    async with MedstageClient(node.url) as speaker, MedstageClient(node.url) as viewer:
        await speaker.join(stage, "Dr Speaker", "host")
        await viewer.join(stage, "Dr Viewer", "audience")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        video = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        audio = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "audio")
        await viewer.wait_media(video["mid"], timeout=10)
        await viewer.wait_media(audio["mid"], timeout=10)
        # The aiortc viewer estimates its bandwidth from the abs-send-time the node writes on video
        # and sends REMB: it reaches the viewer's estimate (counted in the process that serves it).
        await eventually(lambda: node.metrics()["medstage_remb_received_total"] > 0, 10, interval=0.3)

        reply = await viewer.request({"type": "layer.set", "preference": "audio"})
        assert reply["type"] == "ok", reply
        await asyncio.sleep(0.3)  # in-flight packets land
        v, a = viewer.stats(video["mid"]), viewer.stats(audio["mid"])
        video_before, audio_before = v.packets, a.packets
        await asyncio.sleep(1.0)
        assert v.packets == video_before, "audio only: no video is forwarded"
        assert a.packets >= audio_before + 30, "and the audio goes on (50 packets a second)"

        first = viewer.watch_next_frame(video["mid"])
        reply = await viewer.request({"type": "layer.set", "preference": "auto"})
        assert reply["type"] == "ok", reply
        await eventually(lambda: first.done, 5)
        assert first.starts_on_keyframe, first
        assert v.packets > video_before

        # A per-speaker preference does the same for that speaker only.
        await viewer.request(
            {"type": "layer.set", "preference": "audio", "participant_id": speaker.participant_id}
        )
        await asyncio.sleep(0.3)
        held = v.packets
        await asyncio.sleep(0.6)
        assert v.packets == held

        # Bad input: a typed error, the connection stays.
        with pytest.raises(RequestError) as refused:
            await viewer.request({"type": "layer.set", "preference": "4k"})
        assert refused.value.reply["code"] == "invalid_message"
        assert (await viewer.ping())["type"] == "pong"


async def test_layer_set_is_rate_limited(tmp_path: Path) -> None:
    for node in _node(tmp_path, 0):
        stage = "lay-" + uuid.uuid4().hex[:8]
        async with MedstageClient(node.url) as viewer:
            await viewer.join(stage, "Dr Host", "host")
            for _ in range(20):
                assert (await viewer.request({"type": "layer.set", "preference": "low"}))["type"] == "ok"
            with pytest.raises(RequestError) as refused:
                await viewer.request({"type": "layer.set", "preference": "high"})
            assert refused.value.reply["code"] == "rate_limited"
            assert refused.value.reply["retry_after"] > 0
