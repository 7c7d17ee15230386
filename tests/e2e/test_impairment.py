"""Loss recovery under real impairment (tests/support/impair.py), Chromium's getStats as the referee
(tests/support/referee.py): 5 % random loss on one viewer's port (nftables) is repaired by NACK and
retransmission from the forwarding ring, the other viewer sees nothing of it; a viewer flooding
PLIs and FIRs costs the speaker at most ~2 keyframe requests a second; 80 ms ± 30 ms of delay and
jitter (a userspace relay) leaves playback going. Run with viewers in media workers and in-process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiortc.rtp import RtcpPsfbPacket
from playwright.async_api import async_playwright

from tests.conftest import RunningNode, free_port, start_node
from tests.e2e.conftest import CHROMIUM, StagePage, chromium_args
from tests.support.client import MedstageClient
from tests.support.impair import UdpRelay, loss, rate_cap, relay_init_script
from tests.support.referee import delta, sent_frames, video_stats
from tests.support.tokens import bearer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

CAPPED_WATCH_S = 8  # under the cap after the down-switch: a probe or two (every 2-6 s) end by delay
LOSS_WINDOW_S = 20  # the issue counts freezes a minute: 10 s measured the first reports as much as the loss


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
    probes = metrics["medstage_probes_started_total"] - metrics_before["medstage_probes_started_total"]
    copies = metrics["medstage_redundant_copies_total"] - metrics_before["medstage_redundant_copies_total"]
    decoded_share = lossy_d["framesDecoded"] / clean_d["framesDecoded"]
    freezes_per_minute = lossy_d["freezeCount"] * 60 / lossy_d["seconds"]
    print(
        f"5 % loss for {lossy_d['seconds']:.1f} s: {dropped} datagrams dropped, speaker sent {sent} frames; "
        f"lossy viewer decoded {lossy_d['framesDecoded']:.0f} ({decoded_share:.1%} of the clean one's "
        f"{clean_d['framesDecoded']:.0f}), NACKs {lossy_d['nackCount']:.0f}, PLIs {lossy_d['pliCount']:.0f}, "
        f"freezes {lossy_d['freezeCount']:.0f} ({lossy_d['totalFreezesDuration']:.2f} s), "
        f"the clean one's {clean_d['freezeCount']:.0f}; node resent {resent:.0f} (refused {suppressed:.0f}), "
        f"sent {copies:.0f} copies of frames' last packets; "
        f"lossy height {before['lossy'].get('frameHeight')} -> {lossy_d.get('frameHeight')}, "
        f"probes {probes:.0f}"
    )
    assert dropped > 20, "the loss was applied"
    # Repaired by NACK and retransmission, and, once the viewer's reports show the loss lasting, by
    # copies of each frame's last packet (media/redundancy.py), whose loss a NACK would repair late.
    assert lossy_d["nackCount"] > 0 and resent > 0, "losses were NACKed and retransmitted"
    assert copies > 0, "the lasting loss was met with copies of frames' last packets"
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


# The workers' path only (production's default on 2 cores): what this checks does not depend on
# where the viewer's connection lives, and the suite's time is counted.
@pytest.mark.parametrize("node", ["2"], ids=["workers"], indirect=True)
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


# The workers' path only (production's default on 2 cores): what this checks does not depend on
# where the viewer's connection lives, and the suite's time is counted.
@pytest.mark.parametrize("node", ["2"], ids=["workers"], indirect=True)
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


# --- a capped viewer, then the cap lifted: padding probes find it (media/bwe.py, Probe) ---------

# The speaker keeps its resolution under load (frames are dropped instead), so that its layers need
# the link (bench/impairment.py does the same).
_KEEP_RESOLUTION = """async () => {
  for (const sender of window.medstage.publisherPc.getSenders()) {
    if (sender.track?.kind !== 'video') continue;
    const params = sender.getParameters();
    params.degradationPreference = 'maintain-resolution';
    await sender.setParameters(params);
  }
}"""


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A moving 1280x720 test pattern Chromium's fake camera plays in a loop: its simulcast layers
    need ~150 / 500 / 1,500 kbit/s (Chromium's own fake pattern compresses to ~100 kbit/s in all)."""
    path = tmp_path_factory.mktemp("camera") / "camera.y4m"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
         "-t", "2", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    return str(path)


async def _heights(page: Any, seconds: float) -> list[float]:
    """The viewer's decoded frame height every 0.2 s for ``seconds``."""
    heights = []
    for _ in range(int(seconds / 0.2)):
        heights.append((await video_stats(page))["frameHeight"])
        await asyncio.sleep(0.2)
    return heights


async def test_a_capped_viewer_takes_the_low_layer_and_the_high_one_within_10_s_of_the_lift(
    tmp_path: Path, camera_clip: str
) -> None:
    node = start_node(tmp_path, {"MEDSTAGE_MEDIA_WORKERS": "2"})
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[*chromium_args(), f"--use-file-for-fake-video-capture={camera_clip}"],
            )
            try:
                await _cap_and_lift(browser, node)
            finally:
                await browser.close()
    finally:
        assert node.stop() == 0


async def _open(browser: Any, node: RunningNode, stage: str, role: str, name: str) -> StagePage:
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    await page.goto(f"{node.url}/s/{stage}?role={role}&camera=720p")
    await page.wait_for_function("window.medstage !== undefined", timeout=10_000)
    stage_page = StagePage(page=page, name=name)
    await stage_page.join()
    return stage_page


def _create_stage(node: RunningNode) -> str:
    stage = f"lift-{uuid.uuid4().hex[:8]}"
    request = urllib.request.Request(
        f"{node.url}/api/stages",
        data=json.dumps({"id": stage, "title": "lift"}).encode(),
        headers={"Content-Type": "application/json", **bearer()},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5):
        return stage


async def _cap_and_lift(browser: Any, node: RunningNode) -> None:
    stage = _create_stage(node)
    host = await _open(browser, node, stage, "host", "Speaker")
    await host.go_on_stage()
    await host.page.evaluate(_KEEP_RESOLUTION)
    viewer = await _open(browser, node, stage, "audience", "Viewer")
    assert (await viewer.wait_for_media(timeout_s=15, need_audio=False))["videoAt"] is not None
    # The top layer first (a new viewer starts on the highest the estimate allows).
    top = 0.0
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and top < 720:
        top = (await video_stats(viewer.page))["frameHeight"]
        await asyncio.sleep(0.2)
    assert top >= 720, top
    port = (await video_stats(viewer.page))["localPort"]
    before = node.metrics()
    with rate_cap(port, 300) as cap:
        # Down to the low layer within a few seconds, and there while the cap lasts. The tbf's queue
        # (≈ 40 KB) fills first: the loss reads in the hold region for a few seconds before it
        # binds, so the switch comes 3-6 s after the cap: 9 s leave it time to show it holds.
        heights = await _heights(viewer.page, 9)
        low = min(heights)
        assert low <= 180 and heights[-5:] == [low] * 5, heights
        # Held there while probes try the higher layers: their padding ends as soon as it queues
        # (transport feedback, media/twcc.py), so the capped viewer keeps decoding its frames.
        capped_from = await video_stats(viewer.page)
        heights += await _heights(viewer.page, CAPPED_WATCH_S)
        capped = delta(await video_stats(viewer.page), capped_from)
        assert heights[-5:] == [low] * 5, heights
        cap.lift()
        lifted = time.monotonic()
        back = None
        while time.monotonic() - lifted < 12 and back is None:
            if (await video_stats(viewer.page))["frameHeight"] >= 720:
                back = time.monotonic() - lifted
            await asyncio.sleep(0.2)
    after = node.metrics()

    def grew(name: str) -> float:
        return after[f"medstage_{name}_total"] - before[f"medstage_{name}_total"]

    capped_fps = capped["framesDecoded"] / capped["seconds"]
    print(
        f"capped: {heights}; {capped_fps:.1f} fps on the low layer, {capped['freezeCount']:.0f} freezes; "
        f"back on the high layer {back} s after the lift; probes {grew('probes_started'):.0f} "
        f"({grew('probes_succeeded'):.0f} through, {grew('probes_ended_by_delay'):.0f} ended by delay, "
        f"{grew('transport_feedback'):.0f} transport feedback), "
        f"{grew('padding_packets_sent'):.0f} padding packets"
    )
    assert back is not None and back <= 10.0, back
    assert grew("probes_succeeded") >= 1 and grew("padding_packets_sent") > 0
    # Chromium answered with the extension and sent feedback on the padding, and the probes under
    # the cap ended on it. The 15 fps is a bench figure (docs/benchmarks.md: 19.8 fps); here,
    # on a machine shared with the rest of the suite, a floor that the queue-filling probes of before
    # (6-14 fps, freezes of seconds) did not keep.
    assert grew("transport_feedback") > 0 and grew("probes_ended_by_delay") >= 1
    assert capped_fps >= 12 and capped["freezeCount"] <= 1, capped
    for page in (host, viewer):
        await page.page.context.close()
