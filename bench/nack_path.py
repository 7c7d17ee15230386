"""Micro-benchmark of the two per-packet paths a subscriber slot has: forwarding and answering a NACK.

In one process, without peers: a video Publication with one attached Slot of a real (unconnected)
aiortc Subscriber whose UDP path is a real libsrtp session (media/aiortc_hooks.fast_protect) and a real
UDP socket sending to a discard address on loopback. Prints µs per call (best of ``--repeat`` runs):

- forward: ``Publication._forward`` of a one-packet frame (1,100-byte payload) to the slot;
- nack, resent: ``Slot.retransmit`` of a packet in the ring that is resent (the guard lets it pass);
- nack, suppressed: ``Slot.retransmit`` of the same packet again at once (refused by the hold-off).

    python bench/nack_path.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiortc import RTCPeerConnection
from pylibsrtp import Policy, Session

from media import aiortc_hooks
from media.assembler import Frame
from media.publication import Publication
from media.subscriber import Subscriber


@dataclass
class Packet:
    payload: bytes
    marker: int
    timestamp: int
    ext_seq: int


def setup() -> tuple[Publication, Any, socket.socket]:
    pub = Publication("bench", "video", request_keyframe=lambda: None)
    pub.mime = "video/vp8"
    sub = Subscriber("viewer", RTCPeerConnection(), 1)
    slot = sub.pairs[0].video
    slot.pts = {"video/vp8": 96}
    slot.rtx_pts = {96: 97}
    policy = Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    slot.connect(
        aiortc_hooks.UdpPath(aiortc_hooks.fast_protect(Session(policy)), sock.sendto, ("127.0.0.1", 9))
    )
    slot.publication = pub
    pub.attach(slot)
    pub._forward(Frame([Packet(b"\x10" + bytes(1099), 1, 0, 0)], True, 0), 0.0)  # keyframe: starts the slot
    return pub, slot, sock


def per_call(fn: Any, n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn(n)
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    pub, slot, sock = setup()
    frame = Frame([Packet(b"\x11" + bytes(1099), 1, 3000, 0)], False, 3000)

    def forward(n: int) -> None:
        for _ in range(n):
            pub._forward(frame, 0.0)

    def resend(n: int) -> None:
        # A fresh packet each time, each NACKed once: what a viewer's real losses look like. The
        # forward is timed separately and subtracted.
        for _ in range(n):
            pub._forward(frame, 0.0)
            slot.retransmit((pub.last_seq + slot.seq_off) & 0xFFFF)

    def suppressed(n: int) -> None:
        seq = (pub.last_seq + slot.seq_off) & 0xFFFF
        slot.retransmit(seq)
        for _ in range(n):
            slot.retransmit(seq)

    guard = getattr(slot, "resends", None)
    if guard is not None:  # lift the budget so that every fresh packet is resent
        from media.nackguard import ResendGuard, ResendLimits

        slot.resends = ResendGuard(ResendLimits(burst=10**9, budget=1.0))
        slot.resends.restart(pub.packets)
    fwd = per_call(forward, args.n, args.repeat)
    both = per_call(resend, args.n, args.repeat)
    print(f"forward           {fwd:6.2f} µs per packet per slot")
    print(f"nack, resent      {both - fwd:6.2f} µs per NACKed packet (RTX, SRTP, sendto)")
    if guard is not None:
        sup = per_call(suppressed, args.n, args.repeat)
        print(f"nack, suppressed  {sup:6.2f} µs per NACKed packet")
    sock.close()


if __name__ == "__main__":
    asyncio.run(main())
