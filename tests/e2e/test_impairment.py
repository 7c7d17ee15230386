"""Loss recovery under real impairment (tests/support/impair.py), Chromium's getStats as the referee
(tests/support/referee.py): 5 % random loss on one viewer's port (nftables) is repaired by NACK and
retransmission from the forwarding ring, the other viewer sees nothing of it; a viewer flooding
PLIs and FIRs costs the speaker at most ~2 keyframe requests a second; 80 ms ± 30 ms of delay and
jitter (a userspace relay) leaves playback going. Run with viewers in media workers and in-process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc.rtp import RtcpPsfbPacket

from tests.conftest import RunningNode, free_port, start_node
from tests.support.client import MedstageClient
from tests.support.impair import UdpRelay, loss, relay_init_script
from tests.support.referee import delta, sent_frames, video_stats

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

LOSS_WINDOW_S = 10


@pytest.fixture
def media_port() -> int:
    return free_port()


@pytest.fixture(params=["2", "0"], ids=["workers", "in-process"])
def node(request: pytest.FixtureRequest, tmp_path: Path, media_port: int) -> Iterator[RunningNode]:
    """The node, its viewers in two media workers or in its own process; a known media port, so a
    relay can stand for it (worker i on media_port + 1 + i)."""
    running = start_node(
        tmp_path, {"MEDSTAGE_MEDIA_WORKERS": request.param, "MEDSTAGE_MEDIA_PORT": str(media_port)}
    )
    try:
        yield running
    finally:
        assert running.stop() == 0


async def _speaker(open_stage: Any, stage: str) -> tuple[Any, str]:
    host = await open_stage(stage, "host", "Dr Host")
    host_id = await host.join()
    await host.go_on_stage()
    return host, host_id


async def _viewer(
    open_stage: Any, stage: str, name: str, host_id: str, init_script: str | None = None
) -> Any:
    viewer = await open_stage(stage, "audience", name, init_script=init_script)
    await viewer.join()
    video = await viewer.wait_for_video_of(host_id, frames=10, timeout_s=15)
    assert video["ok"], video
    return viewer


async def test_five_percent_loss_on_one_viewer_is_repaired_by_retransmissions(
    open_stage: Any, stage: str, node: RunningNode
) -> None:
    host, host_id = await _speaker(open_stage, stage)
    lossy = await _viewer(open_stage, stage, "Lossy", host_id)
    clean = await _viewer(open_stage, stage, "Clean", host_id)
    port = (await video_stats(lossy.page))["localPort"]
    assert port and port != (await video_stats(clean.page))["localPort"]

    before = {"lossy": await video_stats(lossy.page), "clean": await video_stats(clean.page)}
    sent_before, metrics_before = await sent_frames(host.page), node.metrics()
    with loss(port, 5) as impaired:
        await asyncio.sleep(LOSS_WINDOW_S)
        dropped = impaired.dropped()
        lossy_d = delta(await video_stats(lossy.page), before["lossy"])
        clean_d = delta(await video_stats(clean.page), before["clean"])
        sent = await sent_frames(host.page) - sent_before
    metrics = node.metrics()
    resent = metrics["medstage_retransmissions_total"] - metrics_before["medstage_retransmissions_total"]
    suppressed = (
        metrics["medstage_retransmissions_suppressed_total"]
        - metrics_before["medstage_retransmissions_suppressed_total"]
    )
    decoded_share = lossy_d["framesDecoded"] / clean_d["framesDecoded"]
    freezes_per_minute = lossy_d["freezeCount"] * 60 / lossy_d["seconds"]
    print(
        f"5 % loss for {lossy_d['seconds']:.1f} s: {dropped} datagrams dropped, speaker sent {sent} frames; "
        f"lossy viewer decoded {lossy_d['framesDecoded']:.0f} ({decoded_share:.1%} of the clean one's "
        f"{clean_d['framesDecoded']:.0f}), NACKs {lossy_d['nackCount']:.0f}, PLIs {lossy_d['pliCount']:.0f}, "
        f"freezes {lossy_d['freezeCount']:.0f} ({lossy_d['totalFreezesDuration']:.2f} s), "
        f"the clean one's {clean_d['freezeCount']:.0f}; node resent {resent:.0f} (refused {suppressed:.0f})"
    )
    assert dropped > 20, "the loss was applied"
    assert lossy_d["nackCount"] > 0 and resent > 0, "losses were NACKed and retransmitted"
    assert decoded_share >= 0.95, (lossy_d, clean_d)
    # At most one freeze in the window more than the clean viewer had: on this shared 2-core machine a
    # loaded moment freezes both viewers alike (the clean one's freezes are the machine's, not the loss').
    extra = lossy_d["freezeCount"] - clean_d["freezeCount"]
    assert extra <= 1, f"{freezes_per_minute:.1f} freezes a minute: {lossy_d}, clean: {clean_d}"
    assert clean_d["nackCount"] == 0, ("the other viewer lost nothing", clean_d)
    assert clean_d["framesDecoded"] >= 0.8 * sent, (clean_d, sent)


def _keyframe_requests(pc: Any, fir_seq: list[int]) -> list[asyncio.Future[None]]:
    """One PLI and one FIR (a compound RTCP packet) for every video stream an aiortc subscriber
    connection receives."""
    sends = []
    for receiver in pc.getReceivers():
        sources = receiver._RTCRtpReceiver__active_ssrc
        rtcp_ssrc = receiver._RTCRtpReceiver__rtcp_ssrc
        if receiver.track.kind != "video" or rtcp_ssrc is None:
            continue
        for media_ssrc in list(sources):
            pli = RtcpPsfbPacket(fmt=1, ssrc=rtcp_ssrc, media_ssrc=media_ssrc)
            fir_seq[0] = (fir_seq[0] + 1) % 256
            fci = media_ssrc.to_bytes(4, "big") + bytes([fir_seq[0], 0, 0, 0])
            fir = RtcpPsfbPacket(fmt=4, ssrc=rtcp_ssrc, media_ssrc=0, fci=fci)
            sends.append(asyncio.ensure_future(receiver.transport._send_rtp(bytes(pli) + bytes(fir))))
    return sends


async def test_a_viewer_flooding_plis_and_firs_costs_at_most_two_keyframe_requests_a_second(
    open_stage: Any, stage: str, node: RunningNode
) -> None:
    await _speaker(open_stage, stage)
    async with MedstageClient(node.url) as flooder:
        await flooder.join(stage, "Flooder", "audience")
        await flooder.wait_media(kind="video")
        before, started = node.metrics(), time.monotonic()
        fir_seq = [0]
        seconds, per_second = 4, 50
        for _ in range(seconds * per_second):
            await asyncio.gather(*_keyframe_requests(flooder.subscriber_pc, fir_seq))
            await asyncio.sleep(1 / per_second)
        await asyncio.sleep(0.3)
        after, elapsed = node.metrics(), time.monotonic() - started
    upstream = (
        after["medstage_keyframe_requests_upstream_total"]
        - before["medstage_keyframe_requests_upstream_total"]
    )
    downstream = (
        after["medstage_keyframe_requests_downstream_total"]
        - before["medstage_keyframe_requests_downstream_total"]
    )
    print(
        f"{downstream:.0f} PLI/FIR from the viewer in {seconds} s -> "
        f"{upstream:.0f} keyframe requests upstream"
    )
    assert downstream >= seconds * per_second, "the node saw the flood"
    # pli_interval_ms 500: one at once, then at most one every 0.5 s.
    assert upstream <= 2 * elapsed + 1, (upstream, elapsed)
    assert upstream >= 1, "a keyframe was asked for"


async def test_delay_and_jitter_through_a_relay_leave_playback_going(
    open_stage: Any, stage: str, node: RunningNode, media_port: int
) -> None:
    _host, host_id = await _speaker(open_stage, stage)
    async with UdpRelay(delay=0.08, jitter=0.03) as relay:
        await relay.start([media_port + i for i in range(3)])  # in-process, or worker 0 and 1
        delayed = await _viewer(open_stage, stage, "Far away", host_id, relay_init_script(relay.ports))
        first = await video_stats(delayed.page)
        assert first["remotePort"] in relay.ports.values(), ("through the relay", first, relay.ports)
        await asyncio.sleep(5)
        later = delta(await video_stats(delayed.page), first)
        forwarded = relay.forwarded
    buffered_ms = 1000 * later["jitterBufferDelay"] / max(1, later["jitterBufferEmittedCount"])
    print(
        f"80 ms ± 30 ms each way for {later['seconds']:.1f} s: {forwarded} datagrams relayed, "
        f"{later['framesDecoded']:.0f} frames decoded ({later['framesDecoded'] / later['seconds']:.1f}/s), "
        f"freezes {later['freezeCount']:.0f}, NACKs {later['nackCount']:.0f}, "
        f"jitter buffer {buffered_ms:.0f} ms"
    )
    assert later["framesDecoded"] >= 10 * later["seconds"], later  # the speaker sends ~20-30 fps
    assert later["freezeCount"] <= 1, later
    assert buffered_ms > 20, "the jitter buffer grew to absorb the jitter"
