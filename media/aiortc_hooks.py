"""Every reach into aiortc's and aioice's private attributes, in one place.

Read from aiortc 1.16.0 and aioice 0.13.0 (pinned in pyproject.toml). ``check()`` verifies that each
hook still exists; ``tests/media/test_aiortc_hooks.py`` runs it, so an upgrade that moves one fails
loudly instead of silently decoding or stalling.

Why hooks at all: aiortc hands out decoded frames only. To forward encoded media we
- replace the receiver's jitter buffer with our frame assembler (rtcrtpreceiver.py 551: the buffer's
  ``add`` is the last step before the decoder queue; returning no frame keeps the decoder idle);
- keep each subscriber slot's ``RTCRtpSender`` for SDP, SSRCs and RTCP routing, but replace its
  packet loop, its sender reports, its NACK handler and its keyframe callback
  (rtcrtpsender.py 204-487), and send RTP ourselves: SRTP-protect with the DTLS transport's
  session and write to the nominated ICE pair's UDP socket, without the 4-deep coroutine chain;
- read the payload aiortc depayloads onto each packet (``payload``): keyframe detection and recording.
"""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import aioice.ice
import aiortc
import aiortc.rtcrtpreceiver
import aiortc.rtp
from aiortc import RTCDtlsTransport, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters, RTCRtpSendParameters
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
)

from media.rtcpin import parse_remb

log = logging.getLogger(__name__)

AIORTC_VERSION = "1.16.0"

# Name-mangled attributes, spelled out once.
_JITTER = "_RTCRtpReceiver__jitter_buffer"
_CODECS = "_RTCRtpReceiver__codecs"  # check() only: its payload probe
_PAYLOAD = "_data"


class HookMissing(RuntimeError):
    """aiortc/aioice no longer look the way media/ was written against."""


def check() -> None:
    """Fail loudly if any private attribute used here moved (run at start-up and by a test)."""
    problems: list[str] = []
    if aiortc.__version__ != AIORTC_VERSION:
        problems.append(f"aiortc {aiortc.__version__} installed, hooks read from {AIORTC_VERSION}")
    for cls, names in (
        (RTCRtpSender, ["_handle_rtcp_packet", "send", "stop"]),
        (RTCRtpReceiver, ["_handle_rtp_packet", "_send_rtcp_pli", "receive"]),
        (RTCDtlsTransport, ["_send_rtp", "_register_rtp_sender", "_unregister_rtp_sender"]),
        (aioice.ice.Connection, ["sendto"]),
    ):
        problems += [f"{cls.__name__}.{n} is gone" for n in names if not hasattr(cls, n)]
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        problems.append("aioice.ice.get_host_addresses is gone")
    try:
        from pylibsrtp._binding import lib

        if not callable(getattr(lib, "srtp_protect", None)):
            problems.append("pylibsrtp lib.srtp_protect is gone")
    except ImportError:
        problems.append("pylibsrtp._binding is gone")
    if not callable(getattr(aiortc.rtcrtpreceiver, "get_decoder", None)):
        problems.append("aiortc.rtcrtpreceiver.get_decoder is gone")
    # Instance attributes only exist on objects: build throwaway ones without a network.
    problems += _check_instances()
    if problems:
        raise HookMissing("; ".join(problems))


def _check_instances() -> list[str]:
    problems = []
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        from aiortc import RTCCertificate
        from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport

        ice = RTCIceTransport(RTCIceGatherer(iceServers=[]))
        dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])
        sender = RTCRtpSender("video", dtls)
        receiver = RTCRtpReceiver("video", dtls)
        for obj, names in (
            (receiver, [_JITTER, _CODECS]),
            (
                sender,
                ["_ssrc", "_rtx_ssrc", "_stream_id", "transport"],
            ),
            (dtls, ["_tx_srtp", "_rx_srtp"]),
            (ice, ["_connection"]),
            (ice._connection, ["_nominated"]),
        ):
            problems += [f"{type(obj).__name__}.{n} is gone" for n in names if not hasattr(obj, n)]
        if hasattr(receiver, _CODECS):
            problems += _check_payload(receiver)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return problems


def _check_payload(receiver: RTCRtpReceiver) -> list[str]:
    """One VP8 packet through aiortc's receive path to our sink: it must arrive depayloaded, as
    ``payload`` reads it. No ``receive()`` (it starts a thread and a task): the codec goes straight into
    the receiver's table, and the handler, which awaits nothing for this packet, runs without a loop
    (check() may run on a running loop, where another cannot be run)."""
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    from aiortc.rtp import RtpPacket

    sunk: list[Any] = []

    def sink(packet: Any) -> bool:
        sunk.append(packet)
        return False

    install_packet_sink(receiver, sink, lambda _: None)
    getattr(receiver, _CODECS)[96] = RTCRtpCodecParameters(
        mimeType="video/VP8", clockRate=90000, payloadType=96
    )
    # RFC 7741 §4.2: a one-byte payload descriptor (S=1), then the VP8 bytes aiortc must hand on.
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=0, ssrc=1, payload=b"\x10\x00\x9d\x01")
    handling = receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    try:
        handling.send(None)
    except StopIteration:
        pass
    else:
        handling.close()
        return ["RTCRtpReceiver._handle_rtp_packet now waits before the jitter buffer"]
    if not sunk:
        return ["RTCRtpReceiver no longer hands packets to the jitter buffer (our sink)"]
    try:
        read = [payload(sunk[0]), *payloads(sunk)]
    except AttributeError:
        return [f"a depayloaded RtpPacket.{_PAYLOAD} is gone"]
    if read != [b"\x00\x9d\x01"] * 2:
        return [f"a depayloaded RtpPacket.{_PAYLOAD} is no longer the depayloaded payload: {read!r}"]
    return []


# --- payloads --------------------------------------------------------------------------------

# aiortc 1.16.0 rtcrtpreceiver.py 543: ``RTCRtpReceiver._handle_rtp_packet`` depayloads each packet
# (VP8 descriptor stripped; H264 STAP-A/FU-A unpacked to Annex-B NAL units) into ``packet._data``
# just before the jitter buffer, our sink, gets it. The keyframe tests (media/codecs.py, once per
# frame on the forwarding path) and the recorder (recording/session.py) read it here.
# An attrgetter, not a def: one C call, no Python frame (+18 ns a VP8 frame over reading the
# attribute in place; measured with the commit that added it).
payload: Callable[[Any], bytes] = operator.attrgetter(_PAYLOAD)


def payloads(packets: Iterable[Any]) -> list[bytes]:
    """The depayloaded payloads of a frame's packets, in order (what a track writer takes)."""
    # The same ``_data`` as ``payload``, read in place: list(map(payload, ...)) costs 100 ns more.
    return [p._data for p in packets]


# --- ICE -------------------------------------------------------------------------------------


_aioice_get_host_addresses = aioice.ice.get_host_addresses


def default_host_addresses() -> list[str]:
    """aioice's own choice: IPv4 addresses of every interface but loopback."""
    return _aioice_get_host_addresses(use_ipv4=True, use_ipv6=False)


def announce_host_addresses(addresses: list[str]) -> None:
    """Gather (bind and announce) exactly these host addresses.

    aioice 0.13 never gathers 127.0.0.1 and has no option for it; it looks this module global up at
    gathering time. An empty list keeps aioice's own choice (every non-loopback interface).
    """
    if addresses:
        fixed = list(addresses)

        def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            return [a for a in fixed if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

        aioice.ice.get_host_addresses = get_host_addresses


# --- decode guard ----------------------------------------------------------------------------

decoded_frames = 0


def count_decodes() -> None:
    """Wrap aiortc's decoder factory so every frame any decoder handles is counted.

    The SFU must decode nothing; this makes that a number on /metrics instead of a belief.
    """
    receiver_module: Any = aiortc.rtcrtpreceiver
    original = receiver_module.get_decoder
    if getattr(original, "_medstage_counting", False):
        return

    class CountingDecoder:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def decode(self, frame: Any) -> Any:
            global decoded_frames
            decoded_frames += 1
            return self._inner.decode(frame)

    def get_decoder(codec: Any) -> Any:
        return CountingDecoder(original(codec))

    get_decoder._medstage_counting = True  # type: ignore[attr-defined]
    receiver_module.get_decoder = get_decoder


# --- receive side ----------------------------------------------------------------------------


class _SinkBuffer:
    """Stands where aiortc's JitterBuffer stood: hands each packet on, never yields a frame."""

    __slots__ = ("_sink",)

    def __init__(self, sink: Callable[[Any], bool]) -> None:
        self._sink = sink

    def add(self, packet: Any) -> tuple[bool, None]:
        return self._sink(packet), None


def guard_remb_routing() -> None:
    """aiortc routes a REMB by the SSRCs in its FCI (``RtpRouter.route_rtcp`` calls
    ``rtp.unpack_remb_fci``, which catches only ValueError there), and that reader trusts the SSRC
    count: a REMB claiming more SSRCs than it holds raises ``struct.error``, which ends the
    connection's DTLS receive loop (the viewer's own connection, with ``media_single_port`` off).
    Replaced by ours (media/rtcpin.py ``parse_remb``): bounded, ValueError when it is not a REMB."""
    if getattr(aiortc.rtp.unpack_remb_fci, "_medstage", False):
        return

    def unpack_remb_fci(data: bytes) -> tuple[int, list[int]]:
        remb = parse_remb(data, 0, len(data))
        if remb is None:
            raise ValueError("Invalid REMB prefix")
        return remb

    unpack_remb_fci._medstage = True  # type: ignore[attr-defined]
    aiortc.rtp.unpack_remb_fci = unpack_remb_fci


def install_packet_sink(
    receiver: RTCRtpReceiver,
    sink: Callable[[Any], bool],
    on_parameters: Callable[[RTCRtpReceiveParameters], None],
) -> None:
    """Route the receiver's depayloaded packets to ``sink`` (which returns "send a PLI now").

    aiortc keeps doing SRTP, RTX unwrapping, NACKs and receiver reports; the decoder gets nothing.
    ``on_parameters`` receives the negotiated codecs when aiortc starts the receiver.
    """
    setattr(receiver, _JITTER, _SinkBuffer(sink))
    original_receive = receiver.receive

    async def receive(parameters: RTCRtpReceiveParameters) -> None:
        on_parameters(parameters)
        await original_receive(parameters)

    receiver.receive = receive  # type: ignore[method-assign]


def request_keyframe(receiver: RTCRtpReceiver, media_ssrc: int) -> Coroutine[Any, Any, None]:
    """A PLI to the publisher (RFC 4585 §6.3.1)."""
    return receiver._send_rtcp_pli(media_ssrc)


# --- send side -------------------------------------------------------------------------------


class SenderHandler:
    """What a subscriber slot provides to the sender it takes over."""

    def on_send_parameters(self, parameters: RTCRtpSendParameters) -> None: ...
    def on_keyframe_request(self) -> None: ...
    def retransmit(self, sequence_number: int) -> None: ...
    def on_receiver_report(
        self, fraction_lost: int, jitter: int, lost: int = 0, lsr: int = 0, dlsr: int = 0
    ) -> None: ...
    def on_remb(self, bitrate_bps: int, ssrcs: list[int]) -> None: ...


def take_over_sender(sender: RTCRtpSender, handler: SenderHandler) -> None:
    """Keep ``sender`` for negotiation and RTCP routing; media and reports become ours.

    aiortc's packet loop and report loop never start (packets are written by Publication, sender
    reports by the node's report ticker in media/subscriber.py): ``send()`` only registers the sender
    with its transport for RTCP routing (what aiortc's ``send`` does before it starts its two tasks,
    rtcrtpsender.py 210-229), and ``stop()`` unregisters it. No task per sender: 24 fewer per viewer.
    Incoming RTCP gets a lean handler: aiortc's builds a stats object with a datetime for every
    receiver report.
    """
    registered: list[Any] = []  # the transport the sender is registered with, once sent

    async def send(parameters: RTCRtpSendParameters) -> None:
        handler.on_send_parameters(parameters)
        if not registered:
            transport = sender.transport
            transport._register_rtp_sender(sender, parameters)
            registered.append(transport)

    async def stop() -> None:
        while registered:
            registered.pop()._unregister_rtp_sender(sender)

    ssrc = sender._ssrc

    async def handle_rtcp_packet(packet: Any) -> None:
        if isinstance(packet, RtcpRtpfbPacket):
            if packet.fmt == RTCP_RTPFB_NACK:
                for seq in packet.lost:
                    handler.retransmit(seq)
        elif isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                handler.on_keyframe_request()
            elif packet.fmt == RTCP_PSFB_APP:
                # aiortc hands a REMB to every sender it names: the estimate is the connection's,
                # so the repeats only set it again.
                remb = parse_remb(packet.fci, 0, len(packet.fci))
                if remb is not None and ssrc in remb[1]:
                    handler.on_remb(*remb)
        elif isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == ssrc:
                    handler.on_receiver_report(
                        report.fraction_lost, report.jitter, report.packets_lost, report.lsr, report.dlsr
                    )

    sender.send = send  # type: ignore[method-assign]
    sender.stop = stop  # type: ignore[method-assign]
    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]


def set_stream_id(sender: RTCRtpSender, stream_id: str) -> None:
    """aiortc puts every sender of a connection in one MediaStream; a slot pair gets its own so the
    browser lip-syncs one speaker's audio with that speaker's video (msid, RFC 8830)."""
    sender._stream_id = stream_id


def sender_ssrcs(sender: RTCRtpSender) -> tuple[int, int]:
    return sender._ssrc, sender._rtx_ssrc


async def send_rtcp(dtls: RTCDtlsTransport, packets: list[Any]) -> None:
    """One compound RTCP packet, SRTCP-protected by aiortc's transport."""
    try:
        await dtls._send_rtp(b"".join(bytes(p) for p in packets))
    except ConnectionError:
        pass


def fast_protect(session: Any) -> Callable[[Any], bytes]:
    """SRTP-protect without pylibsrtp's per-call checks and allocations, and from a bytearray.

    pylibsrtp 1.0 ``Session.protect`` accepts only ``bytes`` and allocates an ``int *`` per call;
    this calls the same libsrtp function (``srtp_protect``, libsrtp 2 signature) on the session's
    context with a buffer and length pointer allocated once. The context is the one aiortc's own
    RTCP goes through, so SRTP indexes stay consistent (one event loop, never concurrent).
    """
    from pylibsrtp import SRTP_MAX_TRAILER_LEN, Error
    from pylibsrtp._binding import ffi, lib

    ctx = session._srtp[0]
    size = 1500
    cdata = ffi.new("char[]", size)
    buffer = ffi.buffer(cdata)
    len_p = ffi.new("int *")
    srtp_protect = lib.srtp_protect
    limit = size - SRTP_MAX_TRAILER_LEN
    keep = session  # the context lives as long as the session object

    def protect(packet: Any) -> bytes:
        n = len(packet)
        if n > limit:
            raise ValueError("packet is too long")
        buffer[0:n] = packet
        len_p[0] = n
        err = srtp_protect(ctx, cdata, len_p)
        if err:
            raise Error(f"srtp_protect failed: {err} ({keep is not None})")
        out: bytes = buffer[0 : len_p[0]]
        return out

    return protect


class UdpPath:
    """The fast way out: SRTP-protect and ``sendto`` on the nominated pair's socket, synchronously."""

    __slots__ = ("addr", "protect", "sendto")

    def __init__(
        self, protect: Callable[[Any], bytes], sendto: Callable[..., None], addr: tuple[str, int]
    ) -> None:
        self.protect = protect
        self.sendto = sendto
        self.addr = addr


def udp_path(dtls: RTCDtlsTransport) -> UdpPath | None:
    """The path of a connected DTLS transport, or None while it is not connected."""
    srtp = getattr(dtls, "_tx_srtp", None)
    if dtls.state != "connected" or srtp is None:
        return None
    pair = dtls.transport._connection._nominated.get(1)
    if pair is None or pair.protocol.transport is None:
        return None
    return UdpPath(fast_protect(srtp), pair.protocol.transport.sendto, pair.remote_addr)
