"""Sender reports from one node-wide ticker (media/reportticker.py ``ReportTicker``): each viewer keeps
its own RFC 3550 randomized interval, and what arrives at a real aiortc viewer maps RTP time to
wall-clock time correctly."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

from aiortc.rtp import RtcpSrPacket

from media.reportticker import ReportTicker
from tests.conftest import RunningNode
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.waiting import eventually

NTP_EPOCH = 2208988800  # 1900-01-01 to 1970-01-01, s


class Viewer:
    """Stands for a Subscriber: what the ticker uses of one (``closed``, ``send_reports``)."""

    def __init__(self) -> None:
        self.closed = False
        self.participant_id = "v"
        self.sent: list[float] = []

    async def send_reports(self) -> None:
        self.sent.append(asyncio.get_running_loop().time())


async def test_one_task_reports_every_viewer_at_its_own_randomized_interval() -> None:
    ticker = ReportTicker()
    before = len(asyncio.all_tasks())
    viewers = [Viewer() for _ in range(30)]
    for v in viewers:
        ticker.add(v)  # type: ignore[arg-type]
    assert len(asyncio.all_tasks()) == before + 1
    await asyncio.sleep(3.2)
    # The ticker wakes once per report at most (not in a spin around each due time: uvloop's timers
    # have a millisecond resolution and may fire a fraction of one early).
    reported = sum(len(v.sent) for v in viewers)
    assert ticker.wakeups <= reported, (ticker.wakeups, reported)
    viewers[0].closed = True
    stopped_at = len(viewers[0].sent)
    await asyncio.sleep(1.6)
    assert len(viewers[0].sent) == stopped_at, "a closed viewer was still reported"
    gaps = [b - a for v in viewers for a, b in zip(v.sent, v.sent[1:], strict=False)]
    assert all(v.sent for v in viewers) and len(gaps) >= 60
    assert 0.45 <= min(gaps) and max(gaps) <= 1.6, (min(gaps), max(gaps))  # 0.5-1.5 s, loop jitter
    # Randomized per viewer: viewers that connected together do not report together.
    firsts = sorted(v.sent[0] for v in viewers)
    assert firsts[-1] - firsts[0] > 0.5
    for v in viewers:
        v.closed = True
    await asyncio.sleep(1.6)
    assert not ticker.running and len(asyncio.all_tasks()) == before, "the ticker outlived its viewers"


async def test_a_viewer_added_while_the_ticker_sleeps_is_reported_on_time() -> None:
    ticker = ReportTicker()
    late, early = Viewer(), Viewer()
    ticker.add(late)  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    ticker.add(early)  # type: ignore[arg-type]
    added = asyncio.get_running_loop().time()
    await eventually(lambda: bool(early.sent), 2)
    assert early.sent[0] - added <= 1.55
    late.closed = early.closed = True


async def test_a_viewer_receives_sender_reports_mapping_rtp_time_to_wall_clock(node: RunningNode) -> None:
    clip = load_clip()
    stage = "sr-" + uuid.uuid4().hex[:8]
    async with MedstageClient(node.url) as speaker, MedstageClient(node.url) as viewer:
        await speaker.join(stage, "Dr Speaker", "host")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await viewer.join(stage, "Dr Viewer", "audience")
        assert viewer.subscriber_pc is not None
        reports: list[tuple[float, Any]] = []  # (arrival, SR), time.time()
        latest: dict[int, tuple[float, int, int]] = {}  # ssrc -> (arrival, RTP timestamp, clock rate)

        for transceiver in viewer.subscriber_pc.getTransceivers():
            receiver, rate = transceiver.receiver, 90000 if transceiver.kind == "video" else 48000
            on_rtcp, on_rtp = receiver._handle_rtcp_packet, receiver._handle_rtp_packet

            async def rtcp(packet: Any, on_rtcp: Any = on_rtcp) -> None:
                if isinstance(packet, RtcpSrPacket):
                    reports.append((time.time(), packet))
                await on_rtcp(packet)

            async def rtp(packet: Any, arrival_time_ms: int, on_rtp: Any = on_rtp, rate: int = rate) -> None:
                latest[packet.ssrc] = (time.time(), packet.timestamp, rate)
                await on_rtp(packet, arrival_time_ms)

            receiver._handle_rtcp_packet = rtcp  # type: ignore[method-assign]
            receiver._handle_rtp_packet = rtp  # type: ignore[method-assign]

        await viewer.wait_media(kind="video", timeout=15)
        await viewer.wait_media(kind="audio", timeout=5)
        # Reports of both forwarding slots, at least 4 each (0.5-1.5 s apart: within ~6 s).
        await eventually(lambda: all(sum(sr.ssrc == s for _, sr in reports) >= 4 for s in latest), 10)
        assert len(latest) == 2, "one audio and one video stream forwarded"
        for ssrc, (_, _, rate) in latest.items():
            mine = [(at, sr.sender_info) for at, sr in reports if sr.ssrc == ssrc]
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(mine)]
            assert all(0.4 <= g <= 1.7 for g in gaps), gaps  # RFC 3550: 0.5-1.5 x 1 s
            for at, info in mine:
                ntp = (info.ntp_timestamp >> 32) - NTP_EPOCH + (info.ntp_timestamp & 0xFFFFFFFF) / 2**32
                assert abs(ntp - at) < 0.5, "the SR's wall-clock time is off"
                assert info.packet_count > 0 and info.octet_count > 0
            # RTP time advances at the clock rate against the SRs' wall-clock time ...
            (_, a), (_, b) = mine[0], mine[-1]
            seconds = (b.ntp_timestamp - a.ntp_timestamp) / 2**32
            ticks = (b.rtp_timestamp - a.rtp_timestamp) & 0xFFFFFFFF
            assert abs(ticks / seconds - rate) < rate * 0.05, (ssrc, ticks / seconds)
            # ... and is the stream's own time: the last SR and the last packet agree on "now".
            arrival, ts, _ = latest[ssrc]
            ntp = (b.ntp_timestamp >> 32) - NTP_EPOCH + (b.ntp_timestamp & 0xFFFFFFFF) / 2**32
            ahead = ((b.rtp_timestamp - ts + 2**31) & 0xFFFFFFFF) - 2**31
            assert abs(ahead / rate - (ntp - arrival)) < 0.3, (ssrc, ahead / rate, ntp - arrival)
