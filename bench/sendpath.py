"""Micro-benchmark of the send path: one packet to N viewers, a socket each vs one shared socket.

In one process on uvloop, without peers: a video Publication with N attached Slots of real
(unconnected) aiortc Subscribers, each with its own libsrtp session, each viewer a real UDP socket on
loopback that receives (and is drained between rounds, untimed). Two paths, interleaved round by round:

- per-viewer sockets (aioice's default, before single-port mode): ``fast_protect`` (SRTP into a
  scratch buffer, then a bytes copy) and the viewer connection's own uvloop transport ``sendto``;
- shared socket (media/udpmux.py): SRTP straight into the batch's buffers, one ``sendmmsg`` per
  packet for all N viewers (the flush the event loop would run at the end of the callback).

Prints CPU µs (``time.process_time``: this process, user + kernel, so the kernel's loopback delivery to
the receiving socket counts, as it does in the node) per packet per viewer: the median of the rounds.

``--simulcast``: instead, on the shared socket, a single-layer publication against the top layer of a
three-layer simulcast group (media/layergroup.py: the VP8 descriptor parsed once per packet, each
viewer's picture id and TL0PICIDX written per packet, every viewer with its own offsets), both with the
same VP8 payload (15-bit picture id, TL0PICIDX, TID): the cost of layers on the hot path.

``--temporal``: a single-layer publication against a single encoding with VP8 temporal layers
(media/temporal.py: L1T3's TIDs 0, 2, 1, 2, the descriptor parsed once per frame, each viewer's
decision per frame and its picture id written per packet), half of the viewers on the base layer (a
quarter of the frames). CPU per packet *sent* (dropped frames cost their decision, not a send).

    python bench/sendpath.py --viewers 100
    python bench/sendpath.py --viewers 100 --simulcast
    python bench/sendpath.py --viewers 100 --temporal
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from aiortc import RTCPeerConnection
from pylibsrtp import Policy, Session

from media import aiortc_hooks, stats, udpmux
from media.assembler import Frame
from media.layergroup import LayerGroup
from media.publication import Publication
from media.subscriber import Subscriber


@dataclass
class Packet:
    payload: bytes
    marker: int
    timestamp: int
    ext_seq: int


def session() -> Session:
    return Session(Policy(key=os.urandom(30), ssrc_type=Policy.SSRC_ANY_OUTBOUND))


# A VP8 payload descriptor as Chromium writes it with temporal layers: X, I (15-bit picture id), L, T.
DESCRIPTOR = bytes([0x90, 0xE0, 0x80 | 0x12, 0x34, 0x56, 0x40])


def publication(
    paths: list[aiortc_hooks.UdpPath],
    layered: bool = False,
    descriptor: bytes = b"\x10",
    temporal: bool = False,
) -> Publication:
    pub = Publication("bench", "video", request_keyframe=lambda: None)
    pub.mime = "video/vp8"
    if layered:
        lower = [Publication("bench", "video", request_keyframe=lambda: None) for _ in range(2)]
        LayerGroup("bench", [*lower, pub])
    elif temporal:
        LayerGroup("bench", [pub])  # a group of one: its temporal layers
    for i, path in enumerate(paths):
        slot = Subscriber("viewer", RTCPeerConnection(), 1).pairs[0].video
        slot.pts = {"video/vp8": 96}
        slot.connect(path)
        slot.publication = pub
        pub.attach(slot)
        slot.pic_off, slot.tl0_off = (i * 7919) % 32768, i % 256  # as after a switch
    keyframe = descriptor + b"\x10" + bytes(1099 - len(descriptor))
    pub._forward(Frame([Packet(keyframe, 1, 0, 0)], True, 0), 0.0)  # keyframe: starts all
    return pub


def drain(receivers: list[socket.socket]) -> int:
    got = 0
    for r in receivers:
        while True:
            try:
                r.recv(2048)
                got += 1
            except BlockingIOError:
                break
    return got


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--packets", type=int, default=50, help="packets per round")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--simulcast", action="store_true", help="one layer vs a simulcast layer")
    parser.add_argument("--temporal", action="store_true", help="one layer vs temporal layers (L1T3)")
    args = parser.parse_args()
    if args.simulcast:
        await simulcast(args)
        return
    if args.temporal:
        await temporal_layers(args)
        return
    loop = asyncio.get_running_loop()
    n = args.viewers
    receivers = []
    for _ in range(n):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        r.bind(("127.0.0.1", 0))
        r.setblocking(False)
        receivers.append(r)
    addrs = [r.getsockname() for r in receivers]

    transports = []
    for _ in range(n):
        transport, _protocol = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        transports.append(transport)
    old = publication(
        [
            aiortc_hooks.UdpPath(aiortc_hooks.fast_protect(session()), t.sendto, a)
            for t, a in zip(transports, addrs, strict=True)
        ]
    )

    shared = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    shared.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, udpmux.SOCKET_BUFFER)
    shared.bind(("127.0.0.1", 0))
    shared.setblocking(False)
    batch = udpmux.SendBatch(shared.fileno(), None)
    new = publication(
        [
            aiortc_hooks.UdpPath(batch.protector(session()), batch.queue, batch.destination(a))  # type: ignore[arg-type]
            for a in addrs
        ]
    )
    batch.flush()
    drain(receivers)

    frame = Frame([Packet(b"\x11" + bytes(1099), 1, 3000, 0)], False, 3000)

    def old_round() -> float:
        start = time.process_time()
        for _ in range(args.packets):
            old._forward(frame, 0.0)
        return time.process_time() - start

    def new_round() -> float:
        start = time.process_time()
        for _ in range(args.packets):
            new._forward(frame, 0.0)
            batch.flush()
        return time.process_time() - start

    results: dict[str, list[float]] = {"per-viewer sockets": [], "shared socket, sendmmsg": []}
    received: dict[str, int] = dict.fromkeys(results, 0)
    drops = udpmux.send_drops
    for _ in range(args.rounds):
        for name, run in (("per-viewer sockets", old_round), ("shared socket, sendmmsg", new_round)):
            seconds = run()
            await asyncio.sleep(0)  # uvloop flushes nothing here (sendto writes at once), but fair
            received[name] += drain(receivers)
            results[name].append(seconds / (args.packets * n) * 1e6)
    sent = args.rounds * args.packets * n
    print(f"{n} viewers, {args.packets} packets x {args.rounds} rounds, 1,100-byte payload, CPU time")
    for name, samples in results.items():
        low, _, high = statistics.quantiles(samples, n=4)
        print(
            f"{name:26s} {statistics.median(samples):6.2f} µs per packet per viewer "
            f"(quartiles {low:.2f}-{high:.2f}), received {received[name]}/{sent}"
        )
    print(f"send drops (shared socket): {udpmux.send_drops - drops}")
    for t in transports:
        t.close()
    for s in (*receivers, shared):
        s.close()


def shared_socket_viewers(n: int) -> tuple[list[socket.socket], socket.socket, udpmux.SendBatch, Any]:
    """``n`` receiving sockets, the shared sending socket and its batch, and a function making the
    ``n`` viewers' paths through it (each with its own SRTP session)."""
    receivers = []
    for _ in range(n):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        r.bind(("127.0.0.1", 0))
        r.setblocking(False)
        receivers.append(r)
    addrs = [r.getsockname() for r in receivers]
    shared = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    shared.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, udpmux.SOCKET_BUFFER)
    shared.bind(("127.0.0.1", 0))
    shared.setblocking(False)
    batch = udpmux.SendBatch(shared.fileno(), None)

    def paths() -> list[aiortc_hooks.UdpPath]:
        return [
            aiortc_hooks.UdpPath(batch.protector(session()), batch.queue, batch.destination(a))  # type: ignore[arg-type]
            for a in addrs
        ]

    return receivers, shared, batch, paths


async def simulcast(args: argparse.Namespace) -> None:
    n = args.viewers
    receivers, shared, batch, paths = shared_socket_viewers(n)
    pubs = {}
    for name, layered in (("one layer", False), ("simulcast layer, VP8 rewrite", True)):
        pubs[name] = publication(paths(), layered, DESCRIPTOR)
        batch.flush()
    drain(receivers)
    payload = DESCRIPTOR + b"\x11" + bytes(1099 - len(DESCRIPTOR))
    frame = Frame([Packet(payload, 1, 3000, 0)], False, 3000)
    results: dict[str, list[float]] = {name: [] for name in pubs}
    received: dict[str, int] = dict.fromkeys(results, 0)
    for _ in range(args.rounds):
        for name, pub in pubs.items():
            start = time.process_time()
            for _ in range(args.packets):
                pub._forward(frame, 0.0)
                batch.flush()
            seconds = time.process_time() - start
            await asyncio.sleep(0)
            received[name] += drain(receivers)
            results[name].append(seconds / (args.packets * n) * 1e6)
    sent = args.rounds * args.packets * n
    print(f"{n} viewers, {args.packets} packets x {args.rounds} rounds, 1,100-byte VP8 payload, one socket")
    medians = {}
    for name, samples in results.items():
        low, _, high = statistics.quantiles(samples, n=4)
        medians[name] = statistics.median(samples)
        print(
            f"{name:30s} {medians[name]:6.2f} µs per packet per viewer "
            f"(quartiles {low:.2f}-{high:.2f}), received {received[name]}/{sent}"
        )
    one_layer, rewriting = medians.values()
    print(f"simulcast layer: {100 * (rewriting / one_layer - 1):+.1f} % CPU per packet sent")
    for sock in (*receivers, shared):
        sock.close()


def l1t3_payload(tid: int) -> bytes:
    """A 1,100-byte VP8 payload whose descriptor carries TID ``tid`` (DESCRIPTOR's fields otherwise)."""
    descriptor = DESCRIPTOR[:-1] + bytes([tid << 6])
    return descriptor + b"\x11" + bytes(1099 - len(descriptor))


async def temporal_layers(args: argparse.Namespace) -> None:
    n = args.viewers
    receivers, shared, batch, paths = shared_socket_viewers(n)
    names = ("one layer", "temporal layers, half on TID 0")
    pubs = {}
    for name in names:
        pubs[name] = publication(paths(), descriptor=DESCRIPTOR[:-1] + b"\x00", temporal=name != names[0])
        batch.flush()
    layered = pubs[names[1]]
    frames = [
        Frame([Packet(l1t3_payload(tid), 1, 3000 * (i + 1), 0)], False, 3000)
        for i, tid in enumerate((0, 2, 1, 2))
    ]
    for frame in frames:  # the TIDs are seen: three layers to choose from
        layered._forward(frame, 0.0)
    assert layered.group is not None and layered.group.count == 3
    for slot in layered.active[::2]:
        slot.tl_target = 0
    batch.flush()
    drain(receivers)
    per_sent: dict[str, list[float]] = {name: [] for name in pubs}
    per_viewer: dict[str, list[float]] = {name: [] for name in pubs}
    for _ in range(args.rounds):
        for name, pub in pubs.items():
            sent = stats.rtp_packets_sent
            start = time.process_time()
            for i in range(args.packets):
                pub._forward(frames[i % 4], 0.0)
                batch.flush()
            seconds = time.process_time() - start
            sends = stats.rtp_packets_sent - sent
            await asyncio.sleep(0)
            drain(receivers)
            per_sent[name].append(seconds / sends * 1e6)
            per_viewer[name].append(seconds / (args.packets * n) * 1e6)
    print(
        f"{n} viewers, {args.packets} frames of one packet x {args.rounds} rounds, 1,100-byte VP8, one socket"
    )
    medians = {}
    for name in pubs:
        low, _, high = statistics.quantiles(per_sent[name], n=4)
        medians[name] = statistics.median(per_sent[name])
        print(
            f"{name:32s} {medians[name]:6.2f} µs per packet sent (quartiles {low:.2f}-{high:.2f}), "
            f"{statistics.median(per_viewer[name]):.2f} µs per packet in per viewer"
        )
    one_layer, temporal = medians.values()
    print(f"temporal layers: {100 * (temporal / one_layer - 1):+.1f} % CPU per packet sent")
    for sock in (*receivers, shared):
        sock.close()


if __name__ == "__main__":
    uvloop.run(main())
