"""Copies of frames' last packets (media/redundancy.py) through the real forwarding path: a viewer's
slot that wants copies gets, a few milliseconds after each frame, its last packet again as RTX
(whatever the frame's size), and a slot that does not want them gets nothing more."""

from __future__ import annotations

import asyncio
import struct
from types import SimpleNamespace
from typing import Any

from media import redundancy
from media.assembler import Frame
from media.publication import Fanout
from tests.media.peers import new_subscriber


def wired_slot(sent: list[bytes]) -> Any:
    slot = new_subscriber(slots=1).pairs[0].video
    slot.pts = {"video/vp8": 96}
    slot.rtx_pts = {96: 97}
    slot.protect = bytes  # SRTP's place: the forwarding path's buffers are patched per slot
    slot.sendto = lambda data, addr: sent.append(data)
    slot.addr = ("127.0.0.1", 9)
    return slot


class Track(Fanout):
    keyframes_asked = 0

    def request_keyframe(self) -> None:
        self.keyframes_asked += 1


def frame(payloads: list[bytes], timestamp: int, keyframe: bool = False) -> Frame:
    packets = [
        SimpleNamespace(payload=p, marker=i == len(payloads) - 1, timestamp=timestamp, ext_seq=0)
        for i, p in enumerate(payloads)
    ]
    return Frame(packets=packets, keyframe=keyframe, timestamp=timestamp)


async def test_each_frames_last_packet_is_copied_as_rtx_for_a_slot_that_wants_copies() -> None:
    lossy_sent: list[bytes] = []
    clean_sent: list[bytes] = []
    lossy, clean = wired_slot(lossy_sent), wired_slot(clean_sent)
    fanout = Track("speaker", "video", renumber=True)
    fanout.mime = "video/vp8"
    for slot in (lossy, clean):
        slot.publication = fanout  # assigned (media/room.py), then attached: forwarding at a keyframe
        fanout.attach(slot)
    redundancy.set_redundant(lossy, True)
    try:
        # A keyframe of three packets starts both slots, then a one-packet frame.
        vp8 = b"\x10\x00\x00\x9d\x01\x2a" + b"k" * 40
        fanout._forward(frame([vp8, b"\x00second", b"\x00third"], 3000, keyframe=True), 1.0)
        fanout._forward(frame([b"\x10\x01\x00\x00small"], 6000), 1.05)
        await asyncio.sleep(redundancy.DELAY_S * 4)
    finally:
        redundancy.set_redundant(lossy, False)
    assert len(clean_sent) == 4, "no copies for a slot that does not want them"
    media, copies = lossy_sent[:4], lossy_sent[4:]
    assert len(copies) == 2, [p[1] & 0x7F for p in lossy_sent]

    def seq(packet: bytes) -> int:
        return struct.unpack_from("!H", packet, 2)[0]

    for copy, original in zip(copies, (media[2], media[3]), strict=True):
        assert copy[1] == 0x80 | 97 and struct.unpack_from("!I", copy, 8)[0] == lossy.rtx_ssrc
        # RFC 4588: the original sequence number, then the original payload (its extension dropped).
        assert struct.unpack_from("!H", copy, 12)[0] == seq(original)
        assert copy[14:] == original[20:]
    assert redundancy.slots == 0
