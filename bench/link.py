"""The forwarding link's cost per packet (media/link.py): what main pays to hand one packet to one media
worker, and what the worker pays to take it, over loopback UDP (what medstage does) and over a
shared-memory ring (the alternative the issue asks to measure).

    python3 bench/link.py [--packets 200000] [--size 1100]

- UDP: main encodes the 14-byte header + payload (``encode_frame_packets``, per frame of 5 packets) and
  ``sendto``s it; a child process ``recv``s and decodes (``decode_datagram``). CPU of each side from
  ``time.process_time`` (per process), divided by the packets the receiver got.
- ring: main copies header + payload into a ``multiprocessing.shared_memory`` ring of fixed 1,500-byte
  cells and publishes the write index; the child polls the index and decodes. No syscall per packet,
  but a reader that sleeps needs a wake-up (a pipe or eventfd write per batch, one syscall each), and
  a reader that never sleeps burns its core: measured here with a polling reader, its best case.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import struct
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media import link

CELL = 1500
CELLS = 4096
_INDEX = struct.Struct("!Q")


class Packet:
    __slots__ = ("ext_seq", "marker", "payload", "timestamp")

    def __init__(self, seq: int, payload: bytes) -> None:
        self.ext_seq = seq
        self.marker = seq % 5 == 4
        self.timestamp = seq * 3000
        self.payload = payload


def frames(total: int, size: int) -> list[list[Packet]]:
    payload = os.urandom(size)
    return [[Packet(i + j, payload) for j in range(5)] for i in range(0, total, 5)]


# --- UDP ---------------------------------------------------------------------------------------


def udp_receiver(port_q: mp.Queue, total: int, out: mp.Queue) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    port_q.put(sock.getsockname()[1])
    got, cpu0 = 0, None
    try:
        while got < total:
            data = sock.recv(2048)
            if cpu0 is None:
                cpu0 = time.process_time()
            link.decode_datagram(data)
            got += 1
    except TimeoutError:
        pass
    out.put((got, time.process_time() - (cpu0 or time.process_time())))


def udp(total: int, size: int) -> tuple[float, float, int]:
    port_q: mp.Queue = mp.Queue()
    out: mp.Queue = mp.Queue()
    child = mp.Process(target=udp_receiver, args=(port_q, total, out))
    child.start()
    addr = ("127.0.0.1", port_q.get())
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    batches = frames(total, size)
    time.sleep(0.2)
    cpu0 = time.process_time()
    for n, frame in enumerate(batches):
        for datagram in link.encode_frame_packets(1, True, "video/vp8", False, frame, n * 5):
            sock.sendto(datagram, addr)
        if n % 40 == 39:
            time.sleep(0.002)  # paced a little, as media is: the receiver's buffer must not overflow
    sender = time.process_time() - cpu0
    got, receiver = out.get()
    child.join()
    return sender * 1e6 / total, receiver * 1e6 / max(got, 1), got


# --- shared-memory ring ------------------------------------------------------------------------


def ring_reader(name: str, total: int, out: mp.Queue) -> None:
    shm = shared_memory.SharedMemory(name=name)
    buf = shm.buf
    read, cpu0 = 0, None
    deadline = time.monotonic() + 30
    while read < total and time.monotonic() < deadline:
        (written,) = _INDEX.unpack_from(buf, 0)
        if written == read:
            continue  # polling: the reader's best case (it never sleeps)
        if cpu0 is None:
            cpu0 = time.process_time()
        while read < written:
            offset = 8 + (read % CELLS) * CELL
            (n,) = struct.unpack_from("!H", buf, offset)
            link.decode_datagram(bytes(buf[offset + 2 : offset + 2 + n]))
            read += 1
    out.put((read, time.process_time() - (cpu0 or time.process_time())))
    del buf
    shm.close()


def ring(total: int, size: int) -> tuple[float, float, int]:
    shm = shared_memory.SharedMemory(create=True, size=8 + CELLS * CELL)
    try:
        buf = shm.buf
        _INDEX.pack_into(buf, 0, 0)
        out: mp.Queue = mp.Queue()
        child = mp.Process(target=ring_reader, args=(shm.name, total, out))
        child.start()
        batches = frames(total, size)
        time.sleep(0.2)
        written = 0
        cpu0 = time.process_time()
        for n, frame in enumerate(batches):
            for datagram in link.encode_frame_packets(1, True, "video/vp8", False, frame, n * 5):
                offset = 8 + (written % CELLS) * CELL
                struct.pack_into("!H", buf, offset, len(datagram))
                buf[offset + 2 : offset + 2 + len(datagram)] = datagram
                written += 1
            _INDEX.pack_into(buf, 0, written)
            if n % 40 == 39:
                time.sleep(0.002)
        writer = time.process_time() - cpu0
        read, reader = out.get()
        child.join()
        del buf
        return writer * 1e6 / total, reader * 1e6 / max(read, 1), read
    finally:
        shm.close()
        shm.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1100, help="payload bytes")
    args = parser.parse_args()
    print("| link | main µs CPU per packet per worker | worker µs CPU per packet | delivered |")
    print("|---|---:|---:|---:|")
    for name, run in (("UDP datagram", udp), ("shared-memory ring (polling reader)", ring)):
        main_us, worker_us, got = run(args.packets, args.size)
        print(f"| {name} | {main_us:.2f} | {worker_us:.2f} | {got}/{args.packets} |")


if __name__ == "__main__":
    main()
