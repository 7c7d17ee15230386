"""Transport feedback for padding probes (media/twcc.py): the offer asks for it in video sections
only, the answer says whether it was taken, feedback messages read as the draft defines them (and
hostile ones read only what is there), the probe's padding carries the numbers, and rising delay
ends a probe."""

from __future__ import annotations

import random
import struct
import time

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from media import twcc
from media.bwe import Probe
from media.padding import PADDING_BYTES
from media.peer import MediaConfig
from media.publication import ABS_SEND_TIME_ID, Fanout
from media.rtcpin import ViewerRtcp
from media.viewers import LocalViewers
from tests.media.peers import answer, loopback_ice, new_subscriber, viewer_side

ABS_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
EXTMAP = f"a=extmap:{twcc.EXTENSION_ID} {twcc.URI}"


def sections(sdp: str) -> list[str]:
    return ["m=" + s for s in sdp.split("\r\nm=")[1:]]


def feedback(base: int, count: int, reference: int, chunks: list[int], deltas: bytes) -> bytes:
    """A transport feedback FCI (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1)."""
    head = struct.pack("!HHI", base, count, ((reference & 0xFFFFFF) << 8) | 7)
    return head + b"".join(struct.pack("!H", c) for c in chunks) + deltas


def two_bit_vector(symbols: list[int]) -> int:
    chunk = 0xC000
    for i, s in enumerate(symbols):
        chunk |= s << (12 - 2 * i)
    return chunk


# --- SDP -------------------------------------------------------------------------------------------


async def test_a_viewers_offer_asks_for_it_in_video_sections_for_every_codec_but_rtx() -> None:
    with loopback_ice():
        viewers = LocalViewers(MediaConfig(ice_addresses=["127.0.0.1"]))
        offer = await viewers.subscribe("v")
        try:
            video = [s for s in sections(offer.sdp) if s.startswith("m=video")]
            audio = [s for s in sections(offer.sdp) if s.startswith("m=audio")]
            assert video and audio
            for section in video:
                assert EXTMAP in section
                codecs = {
                    line.split()[0].split(":")[1]: line.split()[1].split("/")[0].lower()
                    for line in section.splitlines()
                    if line.startswith("a=rtpmap:")
                }
                fb = {
                    line.split()[0].split(":")[1] for line in section.splitlines() if "transport-cc" in line
                }
                assert fb == {pt for pt, name in codecs.items() if name != "rtx"}, section
                assert f"a=extmap:{ABS_SEND_TIME_ID} {ABS_URI}" in section
            assert all("transport-cc" not in s and twcc.URI not in s for s in audio)
            # aiortc's own view of what it offered (its local description is re-serialized).
            assert str(viewers.peer("v").localDescription.sdp).count(EXTMAP) == len(video)

            # aiortc as the viewer does not take it: the probes go without it.
            client = viewer_side()
            try:
                await viewers.answer("v", await answer(client, offer.sdp))
                assert viewers.subscribers["v"].probe_delay is None
            finally:
                await client.close()
        finally:
            await viewers.peer("v").close()


async def test_an_answer_that_keeps_the_extension_turns_the_probes_delay_on() -> None:
    with loopback_ice():
        viewers = LocalViewers(MediaConfig(ice_addresses=["127.0.0.1"]))
        offer = await viewers.subscribe("v")
        client = viewer_side()
        try:
            plain = await answer(client, offer.sdp)
            # What Chromium answers: the offered extension kept in each video section.
            kept = plain.replace("a=mid:1\r\n", f"a=mid:1\r\n{EXTMAP}\r\n")
            assert kept != plain and twcc.accepted(kept) and not twcc.accepted(plain)
            await viewers.answer("v", kept)
            assert isinstance(viewers.subscribers["v"].probe_delay, twcc.ProbeDelay)
            # A failed probe costs little now: the next waits 4 s at most, not 6.
            assert viewers.subscribers["v"].layers.probe_backoff_max_s == 4.0
        finally:
            await client.close()
            await viewers.peer("v").close()


async def test_switched_off_the_offer_is_aiortcs_own() -> None:
    with loopback_ice():
        viewers = LocalViewers(MediaConfig(ice_addresses=["127.0.0.1"], probe_feedback=False))
        offer = await viewers.subscribe("v")
        client = viewer_side()
        try:
            assert twcc.URI not in offer.sdp and "transport-cc" not in offer.sdp
            # An answer that names it anyway (not offered: a hostile client) turns nothing on.
            plain = await answer(client, offer.sdp)
            await viewers.answer("v", plain.replace("a=mid:1\r\n", f"a=mid:1\r\n{EXTMAP}\r\n"))
            assert viewers.subscribers["v"].probe_delay is None
            assert viewers.subscribers["v"].layers.probe_backoff_max_s == 6.0
        finally:
            await client.close()
            await viewers.peer("v").close()


def test_an_extension_in_an_audio_section_is_not_an_acceptance() -> None:
    sdp = f"v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{EXTMAP}\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    assert not twcc.accepted(sdp)
    assert twcc.accepted(sdp.replace("96\r\n", f"96\r\n{EXTMAP}\r\n"))


# --- feedback messages -------------------------------------------------------------------------


def test_a_two_bit_status_vector_with_small_large_and_negative_deltas() -> None:
    # 100 small (1 ms), 101 small (2 ms later), 102 lost, 103 large and negative (-1 ms), 104 (+10 ms)
    data = feedback(
        100, 5, 1000, [two_bit_vector([1, 1, 0, 2, 1])], bytes([4, 8]) + struct.pack("!h", -4) + b"\x28"
    )
    got = twcc.parse_feedback(data, 0, len(data))
    assert [s for s, _ in got] == [100, 101, 103, 104]
    expected = [64.001, 64.003, 64.002, 64.012]
    assert all(abs(a - e) < 1e-9 for (_, a), e in zip(got, expected, strict=True)), got


def test_run_length_chunks_across_the_sequence_wrap_and_a_one_bit_vector() -> None:
    # 65534, 65535, 0 received (run of 3), then 2 lost (run), then a one-bit vector: 1 0 1 (+ unused)
    chunks = [0x2000 | 3, 0x0000 | 2, 0x8000 | (0b10100000000000)]
    data = feedback(65534, 8, 0, chunks, bytes([1, 1, 1, 2, 2]))
    got = twcc.parse_feedback(data, 0, len(data))
    assert [s for s, _ in got] == [65534, 65535, 0, 3, 5]
    assert [round(a / 250e-6) for _, a in got] == [1, 2, 3, 5, 7]


def test_a_negative_reference_time() -> None:
    data = feedback(7, 1, -2, [0x2000 | 1], b"\x00")
    assert twcc.parse_feedback(data, 0, len(data)) == [(7, -0.128)]


def test_hostile_feedback_reads_only_what_is_there() -> None:
    # A huge status count with one chunk: the statuses do not fit, nothing is trusted.
    data = feedback(0, 65535, 0, [0x2000 | 20], b"\x01" * 20)
    assert twcc.parse_feedback(data, 0, len(data)) == []
    # A run longer than the count is cut to the count; deltas missing at the end drop those packets.
    data = feedback(0, 4, 0, [0x2000 | 8000], b"\x01\x01")
    assert [s for s, _ in twcc.parse_feedback(data, 0, len(data))] == [0, 1]
    assert twcc.parse_feedback(b"\x00" * 7, 0, 7) == []
    # A run-length chunk of the maximum length is capped at MAX_STATUS_COUNT statuses.
    data = feedback(0, 65535, 0, [0x2000 | 0x1FFF] * 8, b"\x01" * 5000)
    assert len(twcc.parse_feedback(data, 0, len(data))) == twcc.MAX_STATUS_COUNT
    rng = random.Random(13)
    for _ in range(2000):
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
        for seq, arrival in twcc.parse_feedback(junk, 0, len(junk)):
            assert 0 <= seq <= 0xFFFF and isinstance(arrival, float)


def test_the_viewers_rtcp_hands_transport_feedback_to_the_connection_not_a_slot() -> None:
    got: list[list[tuple[int, float]]] = []
    fci = feedback(10, 2, 0, [0x2000 | 2], b"\x04\x04\x00\x00")
    message = (
        struct.pack("!BBH", 0x80 | twcc.FMT, 205, (8 + len(fci)) // 4) + struct.pack("!II", 9, 222) + fci
    )
    rtcp = ViewerRtcp({}, lambda data, start, end: got.append(twcc.parse_feedback(data, start, end)))
    rtcp(message)
    assert got == [[(10, 0.001), (11, 0.002)]]
    ViewerRtcp({})(message)  # no one to take it: ignored


# --- the delay signal ---------------------------------------------------------------------------


def test_a_queue_that_fills_is_congestion_a_flat_delay_and_a_stall_are_not() -> None:
    delay = twcc.ProbeDelay(rise_s=0.03)
    delay.start()
    sends = [delay.take(100.0 + i * 0.01) for i in range(60)]
    offset = 5000.0  # the viewer's clock is not ours
    flat = [(s, 100.0 + i * 0.01 + offset + 0.002 * (i % 2)) for i, s in enumerate(sends[:10])]
    assert not delay.congested(flat)
    # A stall: the first packets of the next feedback stamped 80 ms late, the rest on time.
    stall = [
        (s, 100.0 + i * 0.01 + offset + (0.08 if i < 13 else 0.0)) for i, s in enumerate(sends[10:20], 10)
    ]
    assert not delay.congested(stall)
    # A filling queue: each packet waits 20 ms longer than the one before.
    queue = [(s, 100.0 + 0.2 + (i - 20) * 0.03 + offset) for i, s in enumerate(sends[20:30], 20)]
    assert delay.feedback(queue[:2]) is not None
    assert delay.congested(queue[2:])
    # Packets it never sent (another probe's, or junk) are not read.
    assert delay.feedback([(4000, 1.0), (4001, 2.0)]) is None


def test_a_new_probe_measures_from_its_own_padding() -> None:
    delay = twcc.ProbeDelay(rise_s=0.03)
    delay.start()
    old = [delay.take(1.0 + i * 0.01) for i in range(5)]
    assert not delay.congested([(s, 1.0 + i * 0.01) for i, s in enumerate(old)])
    delay.start()  # a later probe, on a link whose base delay is now 50 ms longer: not congestion
    new = [delay.take(10.0 + i * 0.01) for i in range(5)]
    assert not delay.congested([(s, 10.05 + i * 0.01) for i, s in enumerate(new)])
    assert delay.feedback([(s, 20.0) for s in old]) is None  # the old probe's numbers are forgotten


def test_rising_delay_ends_the_probe_like_a_nack() -> None:
    sub = new_subscriber(slots=1)
    sub.probe_delay = twcc.ProbeDelay()
    now = time.monotonic()
    sub.layers.probe = Probe("speaker", 0, [1], [400_000.0], now, step_at=now)
    sub.probe_delay.start()
    seqs = [sub.probe_delay.take(now + i * 0.01) for i in range(10)]

    def message(pairs: list[tuple[int, float]]) -> bytes:
        # One run-length chunk of "received, large delta", deltas in 250 µs from reference 0.
        deltas, last = b"", 0
        for _, arrival in pairs:
            ticks = round(arrival / 250e-6)
            deltas += struct.pack("!h", ticks - last)
            last = ticks
        return feedback(pairs[0][0], len(pairs), 0, [0x4000 | len(pairs)], deltas)

    flat = message([(s, 1.0 + i * 0.01) for i, s in enumerate(seqs[:5])])
    sub.on_transport_feedback(flat, 0, len(flat))
    assert sub.layers.probe is not None
    rising = message([(s, 1.0 + i * 0.01 + 0.04 * (i - 4)) for i, s in enumerate(seqs[5:], 5)])
    sub.on_transport_feedback(rising, 0, len(rising))
    assert sub.layers.probe is None and sub.layers.next_probe_at > now
    assert sub.layers.bandwidth.estimate.congested_at is not None


# --- the padding on the wire -----------------------------------------------------------------------


def test_the_probes_padding_carries_abs_send_time_and_consecutive_transport_numbers() -> None:
    sub = new_subscriber(slots=1)
    sub.probe_delay = twcc.ProbeDelay()
    slot = sub.pairs[0].video
    fanout = Fanout("speaker", "video", renumber=True)
    fanout.mime = "video/vp8"
    slot.publication = fanout
    slot.pts = {"video/vp8": 96}
    slot.pt = 96
    slot.rtx_pts = {96: 97}
    sent: list[bytes] = []
    slot.protect = lambda data: data
    slot.sendto = lambda data, addr: sent.append(data)
    slot.addr = ("127.0.0.1", 9)
    assert slot.can_pad()
    octets = slot.send_padding(3, 1234.5) + slot.send_padding(2, 1235.0)
    assert octets == 5 * (24 + PADDING_BYTES) == sum(len(p) for p in sent)
    extensions = HeaderExtensionsMap()
    extensions.configure(
        type(
            "P",
            (),
            {
                "headerExtensions": [
                    RTCRtpHeaderExtensionParameters(id=ABS_SEND_TIME_ID, uri=ABS_URI),
                    RTCRtpHeaderExtensionParameters(id=twcc.EXTENSION_ID, uri=twcc.URI),
                ]
            },
        )()
    )
    packets = [RtpPacket.parse(p, extensions) for p in sent]
    assert [p.extensions.transport_sequence_number for p in packets] == [0, 1, 2, 3, 4]
    assert [p.extensions.abs_send_time for p in packets[:3]] == [int(1234.5 * 262144) & 0xFFFFFF] * 3
    assert all(
        p.payload_type == 97 and p.ssrc == slot.rtx_ssrc and p.padding_size == PADDING_BYTES for p in packets
    )
    assert sub.probe_delay.sent[4] == 1235.0
    # Without the extension negotiated: abs-send-time alone, as before.
    sub.probe_delay = None
    sent.clear()
    slot.send_padding(1, 1.0)
    assert len(sent[0]) == 20 + PADDING_BYTES
    assert RtpPacket.parse(sent[0], extensions).extensions.transport_sequence_number is None
