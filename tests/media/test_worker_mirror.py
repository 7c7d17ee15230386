"""A media worker's mirror of a publication (media/worker.py), without processes: its keyframe requests."""

from __future__ import annotations

import asyncio
from typing import Any

from media import link
from media.worker import Mirror


class FakeWorker:
    """Stands for the worker's control stream: what the mirror tells main."""

    def __init__(self, pli_interval: float) -> None:
        self.pli_interval = pli_interval
        self.told: list[Any] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)


async def test_waiting_slots_ask_once_then_again_until_a_keyframe_reaches_the_worker() -> None:
    worker = FakeWorker(pli_interval=0.05)
    mirror = Mirror(worker, 7, "video", "p-speaker")  # type: ignore[arg-type]
    mirror.waiting.append(object())  # type: ignore[arg-type]  # a slot waiting for a keyframe
    for _ in range(5):  # twenty viewers attach at once: one request
        mirror.request_keyframe()
    assert worker.told == [link.KeyframeRequest(pub=7)]
    # Main's keyframe arrived at main, but its datagram never reached us: we ask again.
    await asyncio.sleep(0.12)
    assert len(worker.told) >= 2
    # Once nothing waits any more, the repeats stop.
    mirror.waiting.clear()
    await asyncio.sleep(0.12)
    count = len(worker.told)
    await asyncio.sleep(0.12)
    assert len(worker.told) == count
    mirror.close()


async def test_audio_never_asks_for_keyframes() -> None:
    worker = FakeWorker(pli_interval=0.05)
    mirror = Mirror(worker, 8, "audio", "p-speaker")  # type: ignore[arg-type]
    mirror.request_keyframe()
    assert worker.told == []


class Sink:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_a_worker_forwards_datagrams_from_main_only() -> None:
    from media.worker import Worker

    worker = Worker(0, Sink())  # type: ignore[arg-type]
    worker._source = ("127.0.0.1", 5000)  # as Setup says
    mirror = Mirror(worker, 3, "audio", "p-speaker")  # type: ignore[arg-type]
    worker.mirrors[3] = mirror
    forwarded: list[int] = []
    mirror._forward = lambda frame, now: forwarded.append(frame.packets[0].ext_seq)  # type: ignore[method-assign]

    class Packet:
        ext_seq, marker, timestamp, payload = 0, True, 960, b"opus"

    (datagram,) = link.encode_frame_packets(3, False, "audio/opus", False, [Packet()], None)
    worker.datagram_received(datagram, ("127.0.0.1", 6666))  # a stranger on the machine
    assert forwarded == []
    worker.datagram_received(datagram, ("127.0.0.1", 5000))
    assert forwarded == [0]
    assert mirror.mime == "audio/opus"
