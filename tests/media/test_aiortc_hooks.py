"""Guard: fails loudly when an aiortc/aioice/pylibsrtp upgrade moves a private attribute we use."""

from __future__ import annotations

import aioice.ice
import aiortc.rtcrtpreceiver

from media import aiortc_hooks


def test_every_private_hook_still_exists() -> None:
    aiortc_hooks.check()


def test_announced_addresses_replace_aioice_gathering() -> None:
    original = aioice.ice.get_host_addresses
    try:
        aiortc_hooks.announce_host_addresses(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
    finally:
        aioice.ice.get_host_addresses = original


def test_decode_counter_counts_every_decoded_frame() -> None:
    """The counter behind medstage_decoded_frames_total sees real decodes (so zero means zero)."""
    import fractions

    import av
    from aiortc.codecs import get_encoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    original = aiortc.rtcrtpreceiver.get_decoder
    try:
        aiortc_hooks.count_decodes()
        codec = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
        encoder = get_encoder(codec)
        frame = av.VideoFrame(width=64, height=48, format="yuv420p")
        frame.pts, frame.time_base = 0, fractions.Fraction(1, 90000)
        payloads, ts = encoder.encode(frame, force_keyframe=True)
        from aiortc.codecs import depayload

        data = b"".join(depayload(codec, p) for p in payloads)
        before = aiortc_hooks.decoded_frames
        decoder = aiortc.rtcrtpreceiver.get_decoder(codec)
        decoder.decode(JitterFrame(data=data, timestamp=ts))
        assert aiortc_hooks.decoded_frames == before + 1
    finally:
        aiortc.rtcrtpreceiver.get_decoder = original
