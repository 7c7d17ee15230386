"""Codec facts the forwarding path needs: keyframe detection and which codecs we accept."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability

from media.aiortc_hooks import payload

AUDIO_CODECS = ("audio/opus",)
VIDEO_CODECS = ("video/VP8", "video/H264")
SUPPORTED = {m.lower() for m in AUDIO_CODECS + VIDEO_CODECS}


def vp8_is_keyframe(data: bytes) -> bool:
    """RFC 7741 §4.3: the P bit of the VP8 payload header is 0 on a keyframe.

    ``data`` is the depayloaded first packet of a frame (the payload descriptor already stripped).
    """
    return bool(data) and (data[0] & 0x01) == 0


def h264_is_keyframe(chunks: Iterable[bytes]) -> bool:
    """An access unit is a keyframe when it carries an IDR slice (NAL type 5) or an SPS (7).

    ``chunks`` are aiortc's depayloaded packets: Annex-B NAL units, where an FU-A continuation carries
    no start code (so only NAL headers that follow a start code are looked at).
    """
    for data in chunks:
        i = data.find(b"\x00\x00\x01")
        while i >= 0 and i + 3 < len(data):
            if data[i + 3] & 0x1F in (5, 7):
                return True
            i = data.find(b"\x00\x00\x01", i + 3)
    return False


def frame_is_keyframe(mime: str, packets: Sequence[Any]) -> bool:
    """``packets``: one frame's, as aiortc depayloaded them (their payloads read through the hook)."""
    if mime == "video/vp8":
        return vp8_is_keyframe(payload(packets[0]))
    if mime == "video/h264":
        return h264_is_keyframe(map(payload, packets))  # lazily: a keyframe's SPS usually leads
    return True


def slot_codecs(kind: str) -> list[RTCRtpCodecCapability]:
    """What a subscriber's slot (media/subscriber.py) offers: Opus; VP8 and H264
    (packetization-mode 1) with their RTX."""
    wanted = {"audio/opus", "video/vp8", "video/h264", "video/rtx"}
    return [
        c
        for c in RTCRtpSender.getCapabilities(kind).codecs
        if c.mimeType.lower() in wanted
        and (c.mimeType.lower() != "video/h264" or c.parameters.get("packetization-mode") == "1")
    ]


SLOT_CODECS = {kind: slot_codecs(kind) for kind in ("audio", "video")}
