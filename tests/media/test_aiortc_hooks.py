"""Guard: fails loudly when an aiortc/aioice/pylibsrtp upgrade moves a private attribute we use."""

from __future__ import annotations

import operator
from typing import Any

import aioice.ice
import aiortc.rtcrtpreceiver
import pytest
from aiortc import RTCCertificate, RTCDtlsTransport, RTCRtpReceiver
from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import RtpPacket

from media import aiortc_hooks
from media.codecs import frame_is_keyframe


def test_every_private_hook_still_exists() -> None:
    aiortc_hooks.check()


async def test_packets_aiortc_hands_our_sink_carry_their_depayloaded_payload() -> None:
    """The keyframe tests and the recorder read a packet's payload through ``payload``: a real
    receiver, started by aiortc's own ``receive``, takes a VP8 packet through its receive path."""
    dtls = RTCDtlsTransport(
        RTCIceTransport(RTCIceGatherer(iceServers=[])), [RTCCertificate.generateCertificate()]
    )
    receiver = RTCRtpReceiver("video", dtls)
    receiver._track = RemoteStreamTrack(kind="video")  # as RTCPeerConnection does on an offer (948)
    sunk: list[Any] = []

    def sink(packet: Any) -> bool:
        sunk.append(packet)
        return False  # no PLI

    aiortc_hooks.install_packet_sink(receiver, sink, lambda _: None)
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    await receiver.receive(RTCRtpReceiveParameters(codecs=[vp8]))
    try:
        # RFC 7741 §4.2: a one-byte payload descriptor (S=1), then a keyframe's first bytes (P bit 0).
        keyframe = b"\x10\x00\x9d\x01\x2a"
        interframe = b"\x10\x01\x02\x03"
        for seq, rtp in enumerate((keyframe, interframe)):
            packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=0, ssrc=1234, payload=rtp)
            await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    finally:
        await receiver.stop()
    assert len(sunk) == 2, "aiortc no longer hands depayloaded packets to the jitter buffer (our sink)"
    assert aiortc_hooks.payloads(sunk) == [keyframe[1:], interframe[1:]]
    assert aiortc_hooks.payload(sunk[0]) == keyframe[1:]
    assert frame_is_keyframe("video/vp8", sunk[:1]) and not frame_is_keyframe("video/vp8", sunk[1:])


def test_check_fails_loudly_when_depayloaded_packets_lose_their_payload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What an upgrade that renames ``RtpPacket._data`` looks like to ``check()`` (start-up and CI)."""
    monkeypatch.setattr(aiortc_hooks, "payload", operator.attrgetter("_data_renamed"))
    with pytest.raises(aiortc_hooks.HookMissing, match=r"depayloaded RtpPacket\._data"):
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
