"""The forwarding link's wire (media/link.py), sans I/O: datagrams and control frames."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest

from media import link
from media.messages import SlotLayout, SubscriberOffer
from media.peer import IceServer, MediaConfig


@dataclass
class Packet:
    ext_seq: int
    marker: bool
    timestamp: int
    payload: bytes


def test_a_keyframe_crosses_as_datagrams_with_main_numbering_and_only_its_first_flagged() -> None:
    packets = [Packet(70000 + i, i == 2, 123456, bytes([i]) * 10) for i in range(3)]
    datagrams = link.encode_frame_packets(7, True, "video/vp8", True, packets, first_seq=41)
    decoded = [link.decode_datagram(d) for d in datagrams]
    assert all(d is not None for d in decoded)
    keys = [d[0] for d in decoded if d]
    frames = [d[3] for d in decoded if d]
    assert keys == [7, 7, 7] and {d[2] for d in decoded if d} == {"video/vp8"}
    # Renumbered (video): main's forwarded numbers, contiguous from first_seq.
    assert [f.packets[0].ext_seq for f in frames] == [41, 42, 43]
    assert [f.keyframe for f in frames] == [True, False, False]
    assert [f.packets[0].marker for f in frames] == [False, False, True]
    assert [f.packets[0].payload for f in frames] == [p.payload for p in packets]
    assert all(f.timestamp == 123456 for f in frames)


def test_audio_keeps_the_publishers_extended_numbers() -> None:
    packets = [Packet(65535 + i, True, 960 * i, b"op") for i in range(2)]
    datagrams = link.encode_frame_packets(3, False, "audio/opus", False, packets, first_seq=None)
    decoded = [link.decode_datagram(d) for d in datagrams]
    assert [d[3].packets[0].ext_seq for d in decoded if d] == [65535, 65536]
    assert all(d is not None and not d[1] & link.VIDEO for d in decoded)


@pytest.mark.parametrize("data", [b"", b"\x00" * 13, bytes([0, 9]) + b"\x00" * 12])
def test_a_datagram_that_is_not_ours_is_ignored(data: bytes) -> None:
    assert link.decode_datagram(data) is None


def test_control_frames_survive_any_split_of_the_stream() -> None:
    config = MediaConfig(ice_addresses=["127.0.0.1"], ice_servers=[IceServer(urls=["stun:x:3478"])], slots=2)
    offer = SubscriberOffer(
        sdp="v=0\r\n", slots=[SlotLayout(slot=0, stream="slot-0", audio_mid="0", video_mid="1")]
    )
    messages = [
        link.Setup(config=config, source_host="127.0.0.1", source_port=5000),
        link.Reply(rid=1, offer=offer),
        link.Assign(vid=4, pair=0, kind="video", pub=9, participant_id="p", paused=False),
        link.Counters(values={"rtp_packets_sent": 5}, gauges={"active_slots": 2}),
    ]
    stream = b"".join(link.encode_frame(m) for m in messages)
    for cut in range(0, len(stream), 7):
        reader = link.FrameReader()
        out = list(reader.feed(stream[:cut])) + list(reader.feed(stream[cut:]))
        assert out == messages


def test_a_broken_control_stream_is_a_link_error_not_a_crash() -> None:
    with pytest.raises(link.LinkError):
        list(link.FrameReader().feed(b"\xff\xff\xff\xff"))  # longer than any frame may be
    with pytest.raises(link.LinkError):
        list(link.FrameReader().feed(b"\x00\x00\x00\x01\xc1"))  # not msgpack
    with pytest.raises(link.LinkError):
        body = msgspec.msgpack.encode({"type": "nope", "vid": 1})  # no such message
        list(link.FrameReader().feed(len(body).to_bytes(4, "big") + body))


def test_a_fixed_viewers_port_gives_each_worker_its_own() -> None:
    from media.peer import MediaConfig
    from media.workers import worker_config

    assert worker_config(MediaConfig(media_port=0), 1).media_port == 0  # ephemeral everywhere
    ports = [worker_config(MediaConfig(media_port=40000), i).media_port for i in range(3)]
    assert ports == [40001, 40002, 40003]  # the node's own process keeps 40000
