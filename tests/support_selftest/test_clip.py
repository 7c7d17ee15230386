"""Self-tests of the pre-encoded clip and its tracks (tests/support/clip.py)."""

import asyncio
import itertools

from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from tests.support.clip import (
    AUDIO_PTS_STEP,
    GOP,
    VIDEO_PTS_STEP,
    Clip,
    EncodedAudioTrack,
    EncodedVideoTrack,
    attach_keyframe_requests,
    is_vp8_keyframe,
    load_clip,
)

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)


def test_clip_starts_with_a_keyframe_and_has_one_every_30_frames() -> None:
    clip = load_clip()
    assert is_vp8_keyframe(clip.video[0])
    assert clip.keyframes == tuple(range(0, len(clip.video), GOP))
    assert len(clip.video) == 300
    assert 490 <= len(clip.audio) <= 510  # 10 s of 20 ms Opus frames


def test_clip_bitrate_is_about_one_megabit() -> None:
    assert 0.8e6 < load_clip().video_bitrate < 1.2e6


async def test_video_track_returns_paced_packets_with_increasing_pts() -> None:
    track = EncodedVideoTrack()
    loop = asyncio.get_running_loop()
    start = loop.time()
    packets = [await track.recv() for _ in range(4)]
    assert [p.pts for p in packets] == [0, VIDEO_PTS_STEP, 2 * VIDEO_PTS_STEP, 3 * VIDEO_PTS_STEP]
    assert loop.time() - start >= 3 / 30 - 0.005  # real time, not as fast as possible
    assert is_vp8_keyframe(bytes(packets[0]))
    assert not any(is_vp8_keyframe(bytes(p)) for p in packets[1:])


async def test_keyframe_request_makes_the_next_frame_a_keyframe() -> None:
    clip = load_clip()
    track = EncodedVideoTrack(clip)
    for _ in range(5):
        await track.recv()
    track.request_keyframe()
    packet = await track.recv()
    assert is_vp8_keyframe(bytes(packet))
    assert bytes(packet) == clip.video[GOP]  # the clip's next keyframe
    assert packet.pts == 5 * VIDEO_PTS_STEP  # timestamps do not jump
    assert not is_vp8_keyframe(bytes(await track.recv()))
    assert track.keyframe_requests == 1


async def test_loop_restarts_on_a_keyframe_and_pts_keep_increasing() -> None:
    full = load_clip()
    clip = Clip(video=full.video[:45], audio=full.audio[:10], keyframes=(0, 30))
    track = EncodedVideoTrack(clip)
    track._period = 0  # no pacing
    packets = [await track.recv() for _ in range(50)]
    assert is_vp8_keyframe(bytes(packets[45]))
    assert track.loops == 1
    assert all(b.pts - a.pts == VIDEO_PTS_STEP for a, b in itertools.pairwise(packets))

    audio = EncodedAudioTrack(clip)
    audio._period = 0
    pts = [(await audio.recv()).pts for _ in range(15)]
    assert pts == [i * AUDIO_PTS_STEP for i in range(15)]


def test_attached_sender_forwards_pli_to_the_track() -> None:
    class FakeSender:
        def _send_keyframe(self) -> None:
            raise AssertionError("aiortc's own flag must not be used")

    track = EncodedVideoTrack()
    sender = FakeSender()
    attach_keyframe_requests(sender, track)
    sender._send_keyframe()
    assert track.keyframe_requests == 1


async def test_aiortc_packs_clip_packets_without_encoding() -> None:
    packet = await EncodedVideoTrack().recv()
    payloads, timestamp = get_encoder(VP8).pack(packet)
    assert len(payloads) > 1 and timestamp == 0
    assert sum(map(len, payloads)) > packet.size  # one VP8 payload descriptor per packet
