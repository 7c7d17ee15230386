"""Padding probes on the wire (media/subscriber.py, media/bwe.py ``Probe``): a node-side viewer
connection sends padding-only packets on its video slot's RTX stream to a real aiortc viewer, which
parses them (padding, abs-send-time), counts their bytes in its bandwidth estimate, NACKs none and
takes none for media."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from aiortc import RTCSessionDescription

from media.bwe import Probe
from media.padding import PADDING_BYTES
from media.publication import Fanout
from tests.media.peers import answer, connected, loopback_ice, new_subscriber, offer, viewer_side
from tests.support.waiting import eventually


async def test_padding_goes_on_the_rtx_stream_with_abs_send_time_at_the_probes_rate() -> None:
    with loopback_ice():
        sub, client = new_subscriber(slots=1), viewer_side()
        try:
            await sub.pc.setRemoteDescription(
                RTCSessionDescription(await answer(client, await offer(sub)), "answer")
            )
            assert await connected(sub.pc, client) == ["connected", "connected"]
            await eventually(sub.on_connected, 5)
            slot = sub.pairs[0].video
            fanout = Fanout("speaker", "video", renumber=True)
            fanout.mime = "video/vp8"
            slot.publication = fanout  # assigned, not started: the padding takes the slot's own lines
            slot.pt = slot.pts["video/vp8"]
            assert slot.can_pad(), (slot.rtx_ssrc, slot.rtx_pts)
            receiver = next(t.receiver for t in client.getTransceivers() if t.kind == "video")
            got: list[Any] = []
            original = receiver._handle_rtp_packet

            async def handle(packet: Any, arrival_time_ms: int) -> None:
                got.append(packet)
                await original(packet, arrival_time_ms=arrival_time_ms)

            receiver._handle_rtp_packet = handle
            nacks: list[Any] = []
            send_nack = receiver._send_rtcp_nack

            async def record_nack(media_ssrc: int, lost: list[int]) -> None:
                nacks.append(lost)
                await send_nack(media_ssrc, lost)

            receiver._send_rtcp_nack = record_nack
            frames: list[Any] = []
            track = receiver.track

            async def drain() -> None:
                while True:
                    frames.append(await track.recv())

            draining = asyncio.ensure_future(drain())

            # A probe at 400 kbit/s for half a second, through the subscriber's padding bursts.
            now = time.monotonic()
            sub.layers.probe = Probe("speaker", 0, [1], [400_000.0], now, step_at=now)
            sub.pad_while_probing(now)
            await asyncio.sleep(0.5)
            sub.layers.probe = None
            await asyncio.sleep(0.1)
            elapsed = time.monotonic() - now
            draining.cancel()

            assert got, "padding arrived"
            rtx_pt = slot.rtx_pts[slot.pt]
            assert {(p.ssrc, p.payload_type) for p in got} == {(slot.rtx_ssrc, rtx_pt)}
            assert all(p.payload == b"" and p.padding_size == PADDING_BYTES for p in got)
            assert all(p.extensions.abs_send_time is not None for p in got)
            seqs = [p.sequence_number for p in got]
            assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), seqs[:10]
            # 400 kbit/s of RTP (header, extension and padding) for the 0.5 s, within a burst or two.
            rate = sub.padding_octets * 8 / 0.5
            assert 0.8 * 400_000 <= rate <= 1.2 * 400_000, (rate, len(got), elapsed)
            assert sub.padding_octets == len(got) * (20 + PADDING_BYTES)
            assert sub.padding.timer is None, "the bursts stop with the probe"
            assert not nacks and not frames, "no NACK for padding, nothing taken for media"
        finally:
            sub.close()
            await sub.pc.close()
            await client.close()
