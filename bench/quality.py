"""What measuring connection quality costs per viewer: one ``media.figures.viewer`` sample (a slot pair
of four forwarding, of six pairs) and the size of the ``link.Quality`` frame a media worker sends main
for it every 2 s.

    python3 bench/quality.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

from media import figures, link
from media.peer import MediaConfig, new_peer_connection
from media.publication import Fanout
from media.subscriber import Subscriber


async def main() -> None:
    sub = Subscriber("viewer", new_peer_connection(MediaConfig(ice_addresses=["127.0.0.1"])), 6)
    for kind in ("audio", "video"):
        fan = Fanout("p-speaker", kind, renumber=kind == "video")
        fan.mime = "audio/opus" if kind == "audio" else "video/vp8"
        for pair in sub.pairs[:2]:
            slot = pair.slot(kind)
            slot.pts = {fan.mime: 111 if kind == "audio" else 96}
            slot.publication = fan
            fan.active.append(slot)
            slot.last_sent_at = time.monotonic()
    runs = []
    for _ in range(5):
        n = 2000
        t0 = time.perf_counter()
        for _ in range(n):
            down = figures.viewer(sub)
        runs.append((time.perf_counter() - t0) / n)
    size = len(link.encode_frame(link.Quality(vid=1, down=down)))
    print(f"figures.viewer: median {statistics.median(runs) * 1e6:.1f} µs per viewer (5 runs of 2000)")
    print(f"link.Quality frame: {size} bytes per viewer every 2 s (header extensions not counted here)")
    await sub.pc.close()


if __name__ == "__main__":
    asyncio.run(main())
