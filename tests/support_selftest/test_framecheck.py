"""Self-tests of the non-decoding frame assembler (tests/support/framecheck.py)."""

import asyncio
import random
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.codecs import depayload, get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from tests.support.client import use_host_addresses
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, attach_keyframe_requests
from tests.support.framecheck import FrameAssembler, install_frame_assembler, is_keyframe

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)


async def rtp_frames(count: int, start_index: int = 0) -> list[list[RtpPacket]]:
    """``count`` clip frames packetized as aiortc's sender does, depayloaded as its receiver does."""
    track = EncodedVideoTrack()
    track._period = 0
    track._index = start_index
    encoder = get_encoder(VP8)
    seq, frames = 1000, []
    for _ in range(count):
        payloads, timestamp = encoder.pack(await track.recv())
        packets = []
        for i, payload in enumerate(payloads):
            packet = RtpPacket(
                payload_type=96,
                sequence_number=seq & 0xFFFF,
                timestamp=timestamp,
                marker=int(i == len(payloads) - 1),
                payload=payload,
            )
            packet._data = depayload(VP8, payload)
            packets.append(packet)
            seq += 1
        frames.append(packets)
    return frames


async def test_in_order_frames_are_complete_and_the_first_is_a_keyframe() -> None:
    assembler = FrameAssembler("video", {96: VP8}, decode=True)
    for packets in await rtp_frames(10):
        for packet in packets:
            assert assembler.add(packet) == (False, None)  # nothing ever reaches aiortc's decoder
    stats = assembler.stats
    assert (stats.frames_complete, stats.frames_incomplete) == (10, 0)
    assert stats.first_frame_keyframe is True and stats.keyframes == 1
    assert (stats.decoded_ok, stats.decode_failed) == (10, 0)
    assert stats.codec == "VP8" and stats.packets == sum(len(f) for f in await rtp_frames(10))


async def test_reordered_packets_still_make_complete_frames() -> None:
    assembler = FrameAssembler("video", {96: VP8})
    rng = random.Random(7)
    for packets in await rtp_frames(5):
        rng.shuffle(packets)
        for packet in packets:
            assembler.add(packet)
    assert assembler.stats.frames_complete == 5


async def test_a_lost_packet_makes_its_frame_incomplete() -> None:
    assembler = FrameAssembler("video", {96: VP8})
    frames = await rtp_frames(4)
    assert len(frames[0]) > 2
    del frames[0][1]  # a packet of the keyframe
    for packets in frames:
        for packet in packets:
            assembler.add(packet)
    stats = assembler.stats
    assert (stats.frames_complete, stats.frames_incomplete) == (3, 1)
    assert stats.first_frame_keyframe is False


async def test_a_watch_sees_whether_the_first_frame_after_it_is_a_keyframe() -> None:
    frames = await rtp_frames(32)  # GOP 30: frames 0 and 30 are keyframes
    data = [b"".join(p._data for p in packets) for packets in frames]
    assert is_keyframe("VP8", data[30]) and not is_keyframe("VP8", data[29]) and len(frames[29]) > 1

    assembler = FrameAssembler("video", {96: VP8})
    for packets in frames[:5]:
        for packet in packets:
            assembler.add(packet)
    on_key, on_delta, on_half = (assembler.watch_next_frame() for _ in range(3))
    assert not on_key.done
    for packet in frames[30]:
        assembler.add(packet)
    assert on_key.starts_on_keyframe and on_delta.starts_on_keyframe and on_half.starts_on_keyframe

    delta = FrameAssembler("video", {96: VP8})
    watch = delta.watch_next_frame()
    for packets in frames[5:8]:
        for packet in packets:
            delta.add(packet)
    assert watch.done and watch.keyframe is False and not watch.starts_on_keyframe

    # The tail of a delta frame (its first packet not forwarded), then a keyframe: not a clean start.
    half = FrameAssembler("video", {96: VP8})
    watch = half.watch_next_frame()
    for packet in [*frames[29][1:], *frames[30], *frames[31]]:
        half.add(packet)
    assert watch.keyframe is True and watch.first_packet_ts != watch.frame_ts
    assert not watch.starts_on_keyframe


async def test_starting_mid_gop_is_seen_and_fails_to_decode() -> None:
    assembler = FrameAssembler("video", {96: VP8}, decode=True)
    for packets in await rtp_frames(5, start_index=3):
        for packet in packets:
            assembler.add(packet)
    stats = assembler.stats
    assert stats.first_frame_keyframe is False
    assert stats.frames_complete == 5 and stats.decode_failed == 5 and stats.decodable_ratio == 0


async def test_real_peer_connections_get_frames_and_pli_reaches_the_clip() -> None:
    use_host_addresses(["127.0.0.1"])
    sender_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        video, audio = EncodedVideoTrack(), EncodedAudioTrack()
        video_transceiver = sender_pc.addTransceiver(video, direction="sendonly")
        sender_pc.addTransceiver(audio, direction="sendonly")
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await receiver_pc.setRemoteDescription(sender_pc.localDescription)
        progress = asyncio.Event()
        assemblers = {
            t.kind: install_frame_assembler(
                t.receiver, t.kind, decode=(t.kind == "video"), on_frame=lambda _: progress.set()
            )
            for t in receiver_pc.getTransceivers()
        }

        async def until(condition: Callable[[], bool]) -> None:
            while not condition():
                progress.clear()
                await progress.wait()

        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender_pc.setRemoteDescription(receiver_pc.localDescription)
        attach_keyframe_requests(video_transceiver.sender, video)

        async with asyncio.timeout(10):
            await until(lambda: assemblers["video"].stats.frames_complete >= 15)
            receiver = next(t.receiver for t in receiver_pc.getTransceivers() if t.kind == "video")
            ssrc = next(iter(receiver._RTCRtpReceiver__active_ssrc))
            await receiver._send_rtcp_pli(ssrc)
            await until(lambda: assemblers["video"].stats.keyframes >= 2)
        assert video.keyframe_requests == 1
        video_stats = assemblers["video"].stats
        assert video_stats.first_frame_keyframe is True
        assert video_stats.decode_failed == 0 and video_stats.decoded_ok > 0
        assert assemblers["audio"].stats.frames_complete > 0
        # the keyframe came from the request, not from the clip's GOP (frame 30)
        assert video.frames_sent < 30
    finally:
        await sender_pc.close()
        await receiver_pc.close()
        use_host_addresses(None)
