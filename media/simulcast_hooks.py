"""Every reach into aiortc's private attributes that receiving simulcast needs, in one place.

aiortc 1.16 receives one RTP stream per m-section. What it already does for several SSRCs arriving at
one receiver (read from 1.16.0):
- ``RtpRouter.route_rtp`` (rtcdtlstransport.py 309) routes an unknown SSRC to the only receiver of its
  payload type: every encoding of the video m-section, and their RTX, reach the video receiver;
- ``RTCRtpReceiver._handle_rtp_packet`` keeps receiver statistics per SSRC (so its receiver reports
  cover each encoding), feeds the REMB estimator with every SSRC, and PLIs go to any SSRC we name;
- ``HeaderExtensionsMap`` (rtp.py 52) already parses the RID and repaired-RID extensions once they
  are negotiated.
What it lacks, and this module adds per receiver:
- the RID extensions in the answer: the transceiver's ``_headerExtensions`` (rtcpeerconnection.py 932,
  read by ``__remoteRtp`` and ``createAnswer``) gets the offered ones (``negotiate_rid_extensions``);
- SSRC -> rid, learnt from the RID extension of an encoding's first packets, and RTX SSRC -> media
  SSRC from the repaired-RID extension, put where aiortc unwraps RTX (``__rtx_ssrc``, rtcrtpreceiver.py
  518): ``route_encodings`` wraps the receiver's ``_handle_rtp_packet`` (looked up on the instance by
  the DTLS transport, rtcdtlstransport.py 630);
- NACKs per SSRC: aiortc's ``NackGenerator`` follows one sequence space; three interleaved would
  produce nonsense NACKs (``__nack_generator`` becomes ``NacksPerSsrc``).

``check()`` verifies each of these; tests/media/test_simulcast_hooks.py runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiortc.rtcrtpreceiver
from aiortc import RTCRtpReceiver
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from media.simulcast import REPAIRED_RID_URI, RID_URI

_NACK = "_RTCRtpReceiver__nack_generator"
_RTX = "_RTCRtpReceiver__rtx_ssrc"
_REMB = "_RTCRtpReceiver__remote_bitrate_estimator"
MAX_SSRCS = 16  # SSRCs learnt per receiver (media and RTX): a hostile publisher cannot grow the tables


class HookMissing(RuntimeError):
    """aiortc no longer looks the way the simulcast receive path was written against."""


def check() -> None:
    """Fail loudly if anything used here moved (run at start-up and by a test)."""
    problems: list[str] = []
    if not callable(getattr(aiortc.rtcrtpreceiver, "NackGenerator", None)):
        problems.append("aiortc.rtcrtpreceiver.NackGenerator is gone")
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        from aiortc import RTCCertificate, RTCDtlsTransport, RTCRtpTransceiver
        from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport

        dtls = RTCDtlsTransport(
            RTCIceTransport(RTCIceGatherer(iceServers=[])), [RTCCertificate.generateCertificate()]
        )
        receiver = RTCRtpReceiver("video", dtls)
        for name in (_NACK, _RTX, _REMB):
            if not hasattr(receiver, name):
                problems.append(f"RTCRtpReceiver.{name} is gone")
        if not isinstance(getattr(receiver, _RTX, None), dict):
            problems.append("RTCRtpReceiver's RTX table is no longer a dict")
        if not callable(getattr(receiver, "_handle_rtp_packet", None)):
            problems.append("RTCRtpReceiver._handle_rtp_packet is gone")
        transceiver = RTCRtpTransceiver("video", receiver, None)  # type: ignore[arg-type]
        if not isinstance(getattr(transceiver, "_headerExtensions", None), list):
            problems.append("RTCRtpTransceiver._headerExtensions is gone")
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    problems += _check_extension_parsing()
    if problems:
        raise HookMissing("; ".join(problems))


def _check_extension_parsing() -> list[str]:
    """A packet with RID and repaired-RID extensions must parse into ``extensions``."""
    ext_map = HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=10, uri=RID_URI),
                RTCRtpHeaderExtensionParameters(id=11, uri=REPAIRED_RID_URI),
            ]
        )
    )
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=2, ssrc=3, payload=b"\x10")
    packet.extensions.rtp_stream_id = "h"
    packet.extensions.repaired_rtp_stream_id = "m"
    try:
        parsed = RtpPacket.parse(packet.serialize(ext_map), ext_map)
        read = (parsed.extensions.rtp_stream_id, parsed.extensions.repaired_rtp_stream_id)
    except Exception as exc:  # the API itself moved
        return [f"RID header extensions no longer parse: {exc!r}"]
    if read != ("h", "m"):
        return [f"RID header extensions parse as {read!r}"]
    return []


def negotiate_rid_extensions(transceiver: Any, offered: tuple[tuple[int, str], ...]) -> None:
    """Accept the offer's RID / repaired-RID extensions (aiortc only knows mid, abs-send-time...).

    Between ``setRemoteDescription`` and ``createAnswer``: the answer and the receive parameters
    (hence the DTLS transport's extension map) are built from ``_headerExtensions``.
    """
    have = {e.uri for e in transceiver._headerExtensions}
    for ext_id, uri in offered:
        if uri not in have:
            transceiver._headerExtensions.append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))
            have.add(uri)


class NacksPerSsrc:
    """In place of aiortc's ``NackGenerator``: one per SSRC, same interface (``add``, ``missing``)."""

    def __init__(self) -> None:
        self._generators: dict[int, Any] = {}
        self.missing: set[int] = set()

    def add(self, packet: Any) -> bool:
        generator = self._generators.get(packet.ssrc)
        if generator is None:
            if len(self._generators) >= MAX_SSRCS:
                self.missing = set()
                return False
            generator = self._generators[packet.ssrc] = aiortc.rtcrtpreceiver.NackGenerator()
        missed: bool = generator.add(packet)
        self.missing = generator.missing
        return missed


def route_encodings(
    receiver: RTCRtpReceiver, rids: tuple[str, ...], on_ssrc: Callable[[str, int], None]
) -> None:
    """Learn each encoding's SSRC from the RID extension (``on_ssrc(rid, ssrc)``, once per new SSRC)
    and each RTX SSRC from the repaired-RID extension; NACK per SSRC. Packets then go on through
    aiortc's receive path as before (SRTP done, RTX unwrapped, NACKs, reports) to the packet sink."""
    setattr(receiver, _NACK, NacksPerSsrc())
    # No REMB towards a simulcast publisher: aiortc's estimate (libwebrtc's AIMD) never rises above
    # 1.5 x what arrives, so a browser sending its two lower layers is never told it may add the top
    # one (measured: Chromium stayed on l+m for 45 s). Without REMB the browser's loss-based estimate
    # ramps up to the encodings' maxBitrate sum while receiver reports show no loss.
    setattr(receiver, _REMB, None)
    rtx_table: dict[int, int] = getattr(receiver, _RTX)
    known: set[int] = set()
    ssrc_of: dict[str, int] = {}
    wanted = set(rids)
    original = receiver._handle_rtp_packet

    def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> Any:
        ssrc = packet.ssrc
        if ssrc not in known and ssrc not in rtx_table:
            extensions = packet.extensions
            rid = extensions.rtp_stream_id
            repaired = extensions.repaired_rtp_stream_id
            if rid in wanted and len(known) < MAX_SSRCS:
                known.add(ssrc)
                ssrc_of[rid] = ssrc
                on_ssrc(rid, ssrc)
            elif repaired in ssrc_of and len(rtx_table) < MAX_SSRCS:
                rtx_table[ssrc] = ssrc_of[repaired]
        return original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
