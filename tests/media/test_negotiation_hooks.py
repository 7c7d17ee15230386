"""Codec matching without deep copies (media/negotiation_hooks.py): the same result as aiortc's own,
and a real offer/answer still negotiates every slot's codecs through it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiortc.rtcpeerconnection
import pytest
from aiortc import RTCSessionDescription, sdp

from media import negotiation_hooks
from tests.media.peers import answer, new_subscriber, offer, viewer_side

# Chrome 120's audio and video m-lines (codecs only), as a browser's answer or offer carries them.
CHROME = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 106 107 108 109
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:106 H264/90000
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=106
a=rtpmap:108 H264/90000
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
a=rtpmap:109 rtx/90000
a=fmtp:109 apt=108
"""


def test_the_codec_matching_hook_still_exists_and_agrees_with_aiortc() -> None:
    negotiation_hooks.check()


@pytest.mark.parametrize("kind", ["audio", "video"])
def test_a_browsers_codecs_match_exactly_as_aiortc_matches_them(kind: str) -> None:
    local = aiortc.rtcpeerconnection.CODECS[kind]
    remote = next(m for m in sdp.SessionDescription.parse(CHROME).media if m.kind == kind).rtp.codecs
    table = [(c.payloadType, dict(c.parameters), list(c.rtcpFeedback)) for c in local]
    ours = negotiation_hooks.find_common_codecs(local, remote)
    assert ours == negotiation_hooks._original(local, remote) and ours
    # Copies: what the connection does with its codecs must never change aiortc's codec table.
    for codec in ours:
        codec.payloadType = 1
        codec.parameters["x"] = 1
        codec.rtcpFeedback.clear()
    assert [(c.payloadType, c.parameters, c.rtcpFeedback) for c in local] == table


async def test_a_viewer_answer_is_negotiated_through_our_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def counting(local: Any, remote: Any) -> Any:
        calls.append(remote)
        return negotiation_hooks.find_common_codecs(local, remote)

    monkeypatch.setattr(aiortc.rtcpeerconnection, "find_common_codecs", counting)
    sub, client = new_subscriber(), viewer_side()
    try:
        viewer_answer = await answer(client, await offer(sub))
        calls.clear()  # the viewer's side (aiortc too, in this process) matched the offer
        await sub.pc.setRemoteDescription(RTCSessionDescription(viewer_answer, "answer"))
        assert len(calls) == 12  # one per m-line of the viewer's answer
        await asyncio.sleep(0)
        for pair in sub.pairs:
            for slot in (pair.audio, pair.video):
                # What the answer negotiated (the slot gets it when aiortc starts the sender).
                transceiver = next(t for t in sub.pc.getTransceivers() if t.sender is slot.sender)
                names = {c.mimeType.lower() for c in transceiver._codecs}
                assert names == (
                    {"audio/opus"} if slot.kind == "audio" else {"video/vp8", "video/h264", "video/rtx"}
                )
    finally:
        await asyncio.gather(sub.pc.close(), client.close())
