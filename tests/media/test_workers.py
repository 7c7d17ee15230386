"""Media workers: viewers' connections in worker processes, fed once per worker over the forwarding
link (media/link.py), with real node and worker processes and real aiortc peers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc.rtp import RtcpSrPacket

from tests.conftest import RunningNode, start_node
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.loss import log_incoming
from tests.support.waiting import eventually

MEDIA_LOST = 4012


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


def _node(tmp_path: Path, workers: int) -> Iterator[RunningNode]:
    node = start_node(tmp_path, {"MEDSTAGE_MEDIA_WORKERS": str(workers)})
    try:
        yield node
    finally:
        code = node.stop()
        assert code == 0, f"node exited with {code}:\n{node.log()[-4000:]}"


@pytest.fixture
def node2(tmp_path: Path) -> Iterator[RunningNode]:
    yield from _node(tmp_path, 2)


def worker_pids(node: RunningNode) -> list[int]:
    """The node's child processes: its media workers."""
    pid = node.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def worker_viewers(node: RunningNode) -> dict[str, float]:
    """``medstage_media_worker_viewers`` by worker index."""
    with urllib.request.urlopen(node.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("medstage_media_worker_viewers{"):
            labels, value = line.rsplit(" ", 1)
            out[labels.split('worker="')[1].split('"')[0]] = float(value)
    return out


def stage_id() -> str:
    return "wrk-" + uuid.uuid4().hex[:8]


@pytest.mark.parametrize("workers", [0, 2])
async def test_viewers_start_on_a_keyframe_in_process_and_through_workers(
    tmp_path: Path, clip: Any, workers: int
) -> None:
    for node in _node(tmp_path, workers):
        stage = stage_id()
        async with MedstageClient(node.url) as speaker:
            await speaker.join(stage, "Dr Speaker", "host")
            await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
            viewers = [MedstageClient(node.url) for _ in range(4)]
            try:
                await asyncio.gather(*(v.connect() for v in viewers))
                await asyncio.gather(*(v.join(stage, f"Dr V{i}", "audience") for i, v in enumerate(viewers)))
                for v in viewers:
                    stats = await v.wait_media(kind="video", timeout=20)
                    assert stats.first_frame_keyframe is True
                    await v.wait_media(kind="audio", timeout=10)
                metrics = node.metrics()
                if workers:
                    # The audience is spread over both workers; the speaker's own receiving
                    # connection stays in the node's process (a worker's death must not bounce it).
                    assert worker_viewers(node) == {"0": 2.0, "1": 2.0}
                    assert metrics["medstage_link_datagrams_sent_total"] > 0
                else:
                    assert "medstage_link_datagrams_sent_total" not in metrics or (
                        metrics["medstage_link_datagrams_sent_total"] == 0
                    )
                assert metrics["medstage_decoded_frames_total"] == 0
            finally:
                await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)


async def test_each_packet_crosses_the_link_once_per_worker_whatever_the_viewers(
    node2: RunningNode, clip: Any
) -> None:
    stage = stage_id()
    async with MedstageClient(node2.url) as speaker:
        await speaker.join(stage, "Dr Speaker", "host")
        viewers = [MedstageClient(node2.url) for _ in range(7)]
        try:
            await asyncio.gather(*(v.connect() for v in viewers))
            await asyncio.gather(*(v.join(stage, f"Dr V{i}", "audience") for i, v in enumerate(viewers)))
            await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
            await asyncio.gather(*(v.wait_media(kind="video", timeout=20) for v in viewers))
            before = node2.metrics()
            await asyncio.sleep(2)
            after = node2.metrics()
        finally:
            await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
    datagrams = after["medstage_link_datagrams_sent_total"] - before["medstage_link_datagrams_sent_total"]
    received = after["medstage_rtp_packets_received_total"] - before["medstage_rtp_packets_received_total"]
    sent = after["medstage_rtp_packets_sent_total"] - before["medstage_rtp_packets_sent_total"]
    # 7 viewers on 2 workers: every packet from the speaker goes to each worker once (2 datagrams),
    # and the workers send it to 7 viewers. Counters are read a moment apart: 15 % slack.
    assert 1.7 * received <= datagrams <= 2.3 * received, (datagrams, received)
    assert 6 * received <= sent <= 8 * received, (sent, received)
    assert after["medstage_link_send_errors_total"] == 0


async def test_a_killed_worker_loses_only_its_viewers_who_reconnect_while_the_others_see_no_gap(
    node2: RunningNode, clip: Any
) -> None:
    stage = stage_id()
    async with MedstageClient(node2.url) as speaker:
        await speaker.join(stage, "Dr Speaker", "host")  # on stage: in the node's process
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        viewers = [MedstageClient(node2.url) for _ in range(4)]  # workers 0, 1, 0, 1
        rejoined: list[MedstageClient] = []
        try:
            for i, v in enumerate(viewers):
                await v.connect()
                await v.join(stage, f"Dr V{i}", "audience", identity=f"viewer-{i}")
            await asyncio.gather(*(v.wait_media(kind="video", timeout=20) for v in viewers))
            pids = worker_pids(node2)
            assert len(pids) == 2, pids
            restarts = node2.metrics()["medstage_media_worker_restarts_total"]

            # Watch every viewer's video from now on, then kill one worker outright.
            watched = {
                id(v): (v.received("video").frames_complete, v.received("video").frames_incomplete)
                for v in viewers
            }
            longest_stall = {id(v): 0.0 for v in viewers}
            last_frames = {id(v): (v.received("video").frames_complete, time.monotonic()) for v in viewers}
            os.kill(pids[0], signal.SIGKILL)
            killed_at = time.monotonic()
            while time.monotonic() - killed_at < 3:
                await asyncio.sleep(0.05)
                now = time.monotonic()
                for v in viewers:
                    frames = v.received("video").frames_complete
                    count, since = last_frames[id(v)]
                    if frames != count:
                        last_frames[id(v)] = (frames, now)
                    elif not v.closed:
                        longest_stall[id(v)] = max(longest_stall[id(v)], now - since)

            lost = [v for v in viewers if v.closed]
            kept = [v for v in viewers if not v.closed]
            assert lost and kept, "both workers held viewers: one set is lost, the other is not"
            for v in lost:
                assert v.close_code == MEDIA_LOST, v.close_code
            for v in kept:
                # No gap: frames kept coming at the clip's pace, none abandoned for a missing packet.
                complete, incomplete = watched[id(v)]
                assert v.received("video").frames_complete > complete + 30
                assert v.received("video").frames_incomplete == incomplete
                assert longest_stall[id(v)] < 0.5, longest_stall[id(v)]

            # The lost viewers join again (the browser does so by itself on 4012) and get media,
            # from a restarted worker or the surviving one, within 5 s of the kill.
            for v in lost:
                index = viewers.index(v)
                again = MedstageClient(node2.url)
                rejoined.append(again)
                await again.connect()
                await again.join(stage, f"Dr V{index}", "audience", identity=f"viewer-{index}")
            for again in rejoined:
                stats = await again.wait_media(kind="video", timeout=10)
                assert stats.first_frame_keyframe is True
            assert time.monotonic() - killed_at < 5 + 3, "reconnected viewers waited too long"
            await eventually(lambda: len(worker_pids(node2)) == 2, 20)
            assert node2.metrics()["medstage_media_worker_restarts_total"] == restarts + 1
            assert pids[0] not in worker_pids(node2)
        finally:
            await asyncio.gather(*(v.close() for v in viewers + rejoined), return_exceptions=True)


async def test_sender_reports_from_a_worker_map_its_timestamps_to_wall_clock(
    node2: RunningNode, clip: Any
) -> None:
    stage = stage_id()
    async with MedstageClient(node2.url) as speaker, MedstageClient(node2.url) as viewer:
        await speaker.join(stage, "Dr Speaker", "host")
        await viewer.join(stage, "Dr Viewer", "audience")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        slot = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        await viewer.wait_media(slot["mid"], timeout=20)
        assert viewer.subscriber_pc is not None
        receiver = next(t.receiver for t in viewer.subscriber_pc.getTransceivers() if t.mid == slot["mid"])
        reports: list[tuple[float, RtcpSrPacket, int]] = []
        original = receiver._handle_rtcp_packet

        async def handle(packet: Any) -> None:
            if isinstance(packet, RtcpSrPacket):
                reports.append((time.monotonic(), packet, viewer.stats(slot["mid"]).packets))
            await original(packet)

        receiver._handle_rtcp_packet = handle
        await eventually(lambda: len(reports) >= 3, 8)
    (t1, first, received1), (t3, last, received3) = reports[0], reports[-1]
    ntp_s = ((last.sender_info.ntp_timestamp - first.sender_info.ntp_timestamp) & (2**64 - 1)) / 2**32
    rtp_s = ((last.sender_info.rtp_timestamp - first.sender_info.rtp_timestamp) & 0xFFFFFFFF) / 90000
    # The RTP clock advances with wall-clock time between reports (what lip sync needs) ...
    assert abs(ntp_s - rtp_s) < 0.1, (ntp_s, rtp_s)
    assert abs(ntp_s - (t3 - t1)) < 0.25, (ntp_s, t3 - t1)
    # ... and the packet counts are those the viewer was sent (give or take what is in flight).
    for _, report, received in reports:
        assert received - 40 <= report.sender_info.packet_count <= received + 40, (
            report.sender_info.packet_count,
            received,
        )
    assert last.sender_info.packet_count > first.sender_info.packet_count
    assert received3 > received1


def test_a_signal_to_the_whole_process_group_leaves_the_workers_to_the_nodes_orderly_stop(
    node2: RunningNode,
) -> None:
    """Ctrl+C or systemd's SIGTERM reach the workers too: they wait for the node to end them (its
    clients get 1001, not 4012 and a worker restart), which the node does as it stops (exit 0)."""
    pids = worker_pids(node2)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
    time.sleep(1.0)
    assert worker_pids(node2) == pids
    assert node2.metrics()["medstage_media_worker_restarts_total"] == 0
    assert node2.stop() == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


async def test_a_viewers_pli_crosses_the_link_to_the_publisher_and_brings_a_keyframe(
    node2: RunningNode, clip: Any
) -> None:
    stage = stage_id()
    async with MedstageClient(node2.url) as speaker, MedstageClient(node2.url) as viewer:
        await speaker.join(stage, "Dr Speaker", "host")
        await viewer.join(stage, "Dr Viewer", "audience")  # served by a worker
        video = EncodedVideoTrack(clip)
        await speaker.publish(EncodedAudioTrack(clip), video)
        slot = await viewer.wait_for("slot.assigned", lambda m: m["kind"] == "video")
        stats = await viewer.wait_media(slot["mid"], keyframe=True, timeout=20)
        assert viewer.subscriber_pc is not None
        receiver = next(t.receiver for t in viewer.subscriber_pc.getTransceivers() if t.mid == slot["mid"])
        seen = log_incoming(receiver)
        await eventually(lambda: seen.ssrc is not None, 5)
        await asyncio.sleep(1.0)  # past the policy's interval since the joiner's own request
        requests, keyframes = video.keyframe_requests, stats.keyframes
        downstream = node2.metrics()["medstage_keyframe_requests_downstream_total"]
        assert seen.ssrc is not None
        await receiver._send_rtcp_pli(seen.ssrc)  # the viewer's decoder asks (a real RTCP PLI)
        await eventually(lambda: video.keyframe_requests > requests, 3)
        await eventually(lambda: stats.keyframes > keyframes, 3)
        assert node2.metrics()["medstage_keyframe_requests_downstream_total"] == downstream + 1
