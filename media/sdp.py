"""Checks on a publisher's offer before aiortc sees it, so bad input gets a precise error."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc import sdp as aiortc_sdp

from media.codecs import SUPPORTED
from media.errors import BadSdp, NoMedia, UnsupportedCodec

_LINE = re.compile(r"^[a-z]=.*$")
MAX_SDP_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class OfferSummary:
    sending: tuple[str, ...]  # kinds the offer sends, e.g. ("audio", "video")


def check_sdp_text(text: str) -> None:
    """The checks that need no parse: starts with v=0, size, every line ``x=value``.

    Enough before ``setRemoteDescription``, which parses the SDP itself before it changes anything
    (aiortc 1.16 rtcpeerconnection.py 888) and whose errors the caller maps to ``BadSdp``: a viewer's
    answer parsed here too cost as much as aiortc's whole ``setRemoteDescription`` (a join's profile).
    """
    if not isinstance(text, str) or not text.startswith("v=0"):
        raise BadSdp("SDP must start with v=0")
    if len(text) > MAX_SDP_BYTES:
        raise BadSdp(f"SDP larger than {MAX_SDP_BYTES} bytes")
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    for number, line in enumerate(lines, 1):
        if not _LINE.match(line):
            raise BadSdp(f"SDP line {number} is not of the form x=value")


def parse_sdp(text: str) -> aiortc_sdp.SessionDescription:
    check_sdp_text(text)
    try:
        return aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:
        raise BadSdp(f"SDP could not be parsed: {exc}") from None


def check_publish_offer(text: str) -> OfferSummary:
    """The offer must send audio and/or video with at least one codec we forward."""
    description = parse_sdp(text)
    sending = []
    for media in description.media:
        if media.kind not in ("audio", "video"):
            continue
        if (media.direction or "sendrecv") not in ("sendonly", "sendrecv") or media.port == 0:
            continue
        codecs = {c.mimeType.lower() for c in media.rtp.codecs}
        if not codecs & SUPPORTED:
            offered = ", ".join(sorted(codecs)) or "none"
            raise UnsupportedCodec(f"{media.kind} offers {offered}; supported: opus, VP8, H264")
        sending.append(media.kind)
    if not sending:
        raise NoMedia("the offer sends no audio or video")
    if len(sending) != len(set(sending)):
        raise NoMedia("one audio and one video track at most per publisher")
    return OfferSummary(tuple(sending))
