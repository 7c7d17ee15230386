"""The abs-send-time header extension the forwarding path writes on video (viewers' REMB estimators
time our sends with it): the id our offer gives it, and what aiortc reads back from a forwarded
packet."""

from __future__ import annotations

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from media.publication import ABS_SEND_TIME_ID, abs_send_time_extension
from tests.media.peers import loopback_ice, new_subscriber, offer

URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


async def test_every_video_section_of_a_viewers_offer_gives_abs_send_time_our_id() -> None:
    with loopback_ice():
        sub = new_subscriber(slots=3)
        try:
            sdp = await offer(sub)
        finally:
            await sub.pc.close()
    sections = sdp.split("\r\nm=")[1:]
    video = [s for s in sections if s.startswith("video")]
    assert len(video) == 3
    for section in video:
        assert f"a=extmap:{ABS_SEND_TIME_ID} {URI}" in section, section


def test_a_forwarded_video_packets_extension_reads_back_as_its_send_time() -> None:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        type("P", (), {"headerExtensions": [RTCRtpHeaderExtensionParameters(id=ABS_SEND_TIME_ID, uri=URI)]})()
    )
    header = bytearray(12)
    header[0] = 0x90
    header[1] = 96
    data = bytes(header) + abs_send_time_extension(1234.5) + b"\x10payload"
    packet = RtpPacket.parse(data, extensions)
    assert packet.extensions.abs_send_time == int(1234.5 * 262144) & 0xFFFFFF
    assert packet.payload == b"\x10payload"
