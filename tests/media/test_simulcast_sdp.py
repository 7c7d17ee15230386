"""media/simulcast.py and media/simulcast_hooks.py: a simulcast offer read and answered, bad ones
refused with a typed error, and the aiortc internals the receive path relies on still in place."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtpPacket

from media import simulcast_hooks
from media.errors import BadSdp
from media.simulcast import REPAIRED_RID_URI, RID_URI, munge_answer, parse_offer

HEAD = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n"


def video(*extra: str) -> str:
    return (
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n"
        "a=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n"
        f"a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:10 {RID_URI}\r\n"
        f"a=extmap:11 {REPAIRED_RID_URI}\r\n" + "".join(line + "\r\n" for line in extra)
    )


CHROME = video("a=rid:q send", "a=rid:h send", "a=rid:f send", "a=simulcast:send f;h;q")


def test_an_offer_without_simulcast_is_not_layered() -> None:
    assert parse_offer(HEAD + AUDIO + video()) is None


def test_rids_are_read_and_known_names_ordered_lowest_first() -> None:
    offer = parse_offer(HEAD + AUDIO + CHROME)
    assert offer is not None
    assert (offer.index, offer.mid, offer.offered, offer.layers) == (1, "1", ("f", "h", "q"), ("q", "h", "f"))
    assert offer.extensions == ((10, RID_URI), (11, REPAIRED_RID_URI))
    ours = parse_offer(HEAD + video("a=rid:l send", "a=rid:m send", "a=rid:h send", "a=simulcast:send l;m;h"))
    assert ours is not None and ours.layers == ("l", "m", "h") and ours.index == 0
    # Unknown names keep the offer's order; a paused stream (~) and alternatives (,) are read too.
    other = parse_offer(
        HEAD + video("a=rid:a send", "a=rid:b send", "a=rid:c send", "a=simulcast:send a;~b,c")
    )
    assert other is not None and other.layers == ("a", "b")


def test_the_answer_receives_each_offered_rid() -> None:
    offer = parse_offer(HEAD + AUDIO + CHROME)
    assert offer is not None
    answer = HEAD + AUDIO.replace("sendonly", "recvonly") + video().replace("sendonly", "recvonly")
    munged = munge_answer(answer, offer)
    video_part = munged.split("m=video")[1]
    assert "a=rid:f recv\r\na=rid:h recv\r\na=rid:q recv\r\na=simulcast:recv f;h;q\r\n" in video_part
    assert "a=rid" not in munged.split("m=video")[0]
    # The browser's estimate starts where all three encodings fit (VP8 has no fmtp line of its own).
    assert "a=fmtp:96 x-google-start-bitrate=1500\r\n" in video_part
    assert "a=fmtp:97 apt=96\r\n" in video_part
    assert munged.endswith("\r\n")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (("a=rid:l send", "a=rid:m send"), "without an a=simulcast"),
        (("a=rid:l send", "a=simulcast:send l;x"), "without an a=rid"),
        (("a=rid:l send", "a=rid:l send", "a=simulcast:send l"), "twice"),
        (("a=rid:l;x send", "a=simulcast:send l"), "a rid is"),
        (("a=rid:" + "x" * 17 + " send", "a=simulcast:send l"), "a rid is"),
        (("a=rid:l", "a=simulcast:send l"), "bad rid line"),
        (tuple(f"a=rid:r{i} send" for i in range(4)) + ("a=simulcast:send r0;r1;r2;r3",), "at most 3"),
        (("a=rid:l send", "a=simulcast:recv l"), "'send <rid>"),
        (("a=rid:l send", "a=simulcast:send l", "a=simulcast:send l"), "more than one"),
    ],
)
def test_bad_simulcast_is_a_typed_error(lines: tuple[str, ...], message: str) -> None:
    with pytest.raises(BadSdp, match=message):
        parse_offer(HEAD + video(*lines))


def test_simulcast_without_the_rid_extension_is_refused() -> None:
    text = HEAD + video("a=rid:l send", "a=rid:h send", "a=simulcast:send l;h").replace(
        f"a=extmap:10 {RID_URI}\r\n", ""
    )
    with pytest.raises(BadSdp, match="rtp-stream-id"):
        parse_offer(text)


def test_the_aiortc_internals_for_simulcast_are_in_place() -> None:
    simulcast_hooks.check()


def test_nacks_are_kept_per_ssrc() -> None:
    nacks = simulcast_hooks.NacksPerSsrc()

    def packet(ssrc: int, seq: int) -> RtpPacket:
        return RtpPacket(payload_type=96, sequence_number=seq, timestamp=0, ssrc=ssrc)

    # Three interleaved encodings, each in order: nothing is missing.
    for seq in range(10):
        for ssrc, base in ((1, 100), (2, 5000), (3, 60000)):
            assert not nacks.add(packet(ssrc, (base + seq) & 0xFFFF))
    assert nacks.add(packet(2, 5012)) and nacks.missing == {5010, 5011}
    assert not nacks.add(packet(1, 110)) and nacks.missing == set()
    for ssrc in range(4, 4 + simulcast_hooks.MAX_SSRCS):  # a hostile publisher's SSRC churn is bounded
        nacks.add(packet(ssrc, 1))
    assert len(nacks._generators) == simulcast_hooks.MAX_SSRCS
