"""media/rtcpin.py against aiortc's own RTCP serialisation: what a viewer sends, each slot hears."""

from __future__ import annotations

from aiortc.rtp import (
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
)

from media.rtcpin import ViewerRtcp


class Slot:
    def __init__(self) -> None:
        self.resent: list[int] = []
        self.keyframes = 0
        self.reports: list[tuple[int, int]] = []
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


def test_report_blocks_carry_cumulative_loss_lsr_and_dlsr() -> None:
    video = Slot()
    block = RtcpReceiverInfo(
        ssrc=222, fraction_lost=3, packets_lost=-2, highest_sequence=5, jitter=9, lsr=0xB7052000, dlsr=0x54000
    )
    ViewerRtcp({222: video})(bytes(RtcpRrPacket(ssrc=9, reports=[block])))
    assert video.reports == [(3, 9)]
    assert video.blocks == [(-2, 0xB7052000, 0x54000)]  # cumulative loss is 24-bit signed (duplicates)
