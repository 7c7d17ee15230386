"""media/rtcpin.py against aiortc's own RTCP serialisation: what a viewer sends, each slot hears."""

from __future__ import annotations

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    pack_remb_fci,
)

from media.rtcpin import MAX_REMB_SSRCS, ViewerRtcp, parse_remb


class Slot:
    def __init__(self) -> None:
        self.resent: list[int] = []
        self.keyframes = 0
        self.reports: list[tuple[int, int]] = []
        self.rembs: list[tuple[int, list[int]]] = []
        self.blocks: list[tuple[int, int, int]] = []

    def retransmit(self, sequence_number: int) -> None:
        self.resent.append(sequence_number)

    def on_keyframe_request(self) -> None:
        self.keyframes += 1

    def on_receiver_report(
        self, fraction_lost: int, jitter: int, lost: int = 0, lsr: int = 0, dlsr: int = 0
    ) -> None:
        self.reports.append((fraction_lost, jitter))
        self.blocks.append((lost, lsr, dlsr))

    def on_remb(self, bitrate_bps: int, ssrcs: list[int]) -> None:
        self.rembs.append((bitrate_bps, ssrcs))


def report(ssrc: int, fraction_lost: int, jitter: int) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(
        ssrc=ssrc,
        fraction_lost=fraction_lost,
        packets_lost=7,
        highest_sequence=1000,
        jitter=jitter,
        lsr=0,
        dlsr=0,
    )


def test_a_compound_packet_reaches_the_slots_its_ssrcs_name() -> None:
    audio, video = Slot(), Slot()
    rtcp = ViewerRtcp({111: audio, 222: video})
    compound = b"".join(
        bytes(p)
        for p in (
            RtcpRrPacket(ssrc=9, reports=[report(111, 12, 30), report(222, 0, 900), report(333, 1, 1)]),
            RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=9, items=[(1, b"viewer")])]),
            RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=9, media_ssrc=222, lost=[100, 101, 103, 117, 140]),
            # PID 65534, BLP bits 0 and 2: 65535 and, across the wrap, 1.
            bytes([0x81, 205, 0, 3])
            + (9).to_bytes(4, "big")
            + (222).to_bytes(4, "big")
            + b"\xff\xfe\x00\x05",
            RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=9, media_ssrc=222),
            RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=9, media_ssrc=444),  # nobody's: ignored
        )
    )
    rtcp(compound)
    assert audio.reports == [(12, 30)] and video.reports == [(0, 900)]
    assert video.resent == [100, 101, 103, 117, 140, 65534, 65535, 1]
    assert (video.keyframes, audio.keyframes, audio.resent) == (1, 0, [])


def test_sender_reports_fir_and_junk() -> None:
    video = Slot()
    rtcp = ViewerRtcp({222: video})
    sr = RtcpSrPacket(
        ssrc=9,
        sender_info=RtcpSenderInfo(ntp_timestamp=1, rtp_timestamp=2, packet_count=3, octet_count=4),
        reports=[report(222, 5, 6)],
    )
    # RFC 5104 §4.3.1 FIR: media SSRC 0, the FCI names the SSRC (aiortc routes FIR by media SSRC and
    # so never delivers one).
    fir = bytes([0x84, 206, 0, 4]) + (9).to_bytes(4, "big") + bytes(4) + (222).to_bytes(4, "big") + bytes(4)
    rtcp(bytes(sr) + fir)
    assert video.reports == [(5, 6)] and video.keyframes == 1
    rtcp(b"")
    rtcp(bytes([0x81, 201, 0, 200]) + bytes(8))  # a length beyond the datagram: nothing
    rtcp(bytes(RtcpRrPacket(ssrc=9, reports=[report(222, 1, 1)]))[:20])  # cut short: nothing
    assert video.reports == [(5, 6)]


def remb(bitrate: int, ssrcs: list[int], count: int | None = None) -> bytes:
    """A REMB as aiortc writes one (rtp.pack_remb_fci), with its SSRC count optionally a lie."""
    fci = pack_remb_fci(bitrate, ssrcs)
    if count is not None:
        fci = fci[:4] + bytes([count]) + fci[5:]
    return bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=9, media_ssrc=0, fci=fci))


def test_a_remb_reaches_the_first_slot_it_names_once() -> None:
    audio, video = Slot(), Slot()
    rtcp = ViewerRtcp({111: audio, 222: video})
    rtcp(bytes(RtcpRrPacket(ssrc=9, reports=[report(222, 3, 4)])) + remb(312_000, [444, 222, 111]))
    # 312 000 = 78 000 << 2: the exponent and the 18-bit mantissa both matter.
    assert video.rembs == [(312_000, [444, 222, 111])] and audio.rembs == []
    assert video.reports == [(3, 4)]
    rtcp(remb(5_000_000, [444]))  # names nobody here: ignored
    assert video.rembs == [(312_000, [444, 222, 111])]


def test_hostile_rembs_read_only_what_is_there() -> None:
    video = Slot()
    rtcp = ViewerRtcp({222: video})
    rtcp(remb(1_000_000, [222], count=255))  # 255 SSRCs announced, one present
    assert video.rembs == [(1_000_000, [222])]
    rtcp(remb(1_000_000, [222], count=0))  # none announced: names nobody
    # the largest bitrate the format can say, 2^18 - 1 << 63, is a number like any other
    huge = bytes(
        RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=9, media_ssrc=0, fci=b"REMB\x01\xff\xff\xff" + (222).to_bytes(4, "big")
        )
    )
    rtcp(huge)
    assert video.rembs[-1] == (((1 << 18) - 1) << 63, [222])
    rtcp(
        bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=9, media_ssrc=0, fci=b"ABCD\x01\x00\x00\x01"))
    )  # not REMB
    rtcp(bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=9, media_ssrc=0, fci=b"REM\x00")))  # cut short
    assert len(video.rembs) == 2
    many = list(range(1000, 1000 + 200)) + [222]
    assert parse_remb(
        b"REMB" + bytes([201, 0, 0, 1]) + b"".join(x.to_bytes(4, "big") for x in many), 0, 8 + 4 * 201
    ) == (
        1,
        many[:MAX_REMB_SSRCS],
    )


def test_report_blocks_carry_cumulative_loss_lsr_and_dlsr() -> None:
    video = Slot()
    block = RtcpReceiverInfo(
        ssrc=222, fraction_lost=3, packets_lost=-2, highest_sequence=5, jitter=9, lsr=0xB7052000, dlsr=0x54000
    )
    ViewerRtcp({222: video})(bytes(RtcpRrPacket(ssrc=9, reports=[block])))
    assert video.reports == [(3, 9)]
    assert video.blocks == [(-2, 0xB7052000, 0x54000)]  # cumulative loss is 24-bit signed (duplicates)


def test_aiortcs_own_routing_survives_a_remb_that_lies_about_its_ssrcs() -> None:
    """With media_single_port off aiortc routes viewers' RTCP itself (RtpRouter.route_rtcp): its REMB
    reader raised struct.error on a lying count, which ended the DTLS receive loop."""
    from aiortc.rtcdtlstransport import RtpRouter
    from aiortc.rtp import RtcpPacket

    from media import aiortc_hooks

    aiortc_hooks.guard_remb_routing()
    sender = object()
    router = RtpRouter()
    router.senders[222] = sender  # type: ignore[assignment]
    (lying,) = RtcpPacket.parse(remb(1_000_000, [222], count=255))
    assert router.route_rtcp(lying) == {sender}
    (junk,) = RtcpPacket.parse(bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=9, media_ssrc=0, fci=b"ABCD")))
    assert router.route_rtcp(junk) == set()
