"""The impairment harness (tests/support/impair.py) does what it says, on plain UDP sockets: the loss
rule drops about its percentage of one port's datagrams and nothing else, the tbf cap holds one
port to its rate and leaves the others alone, the relay delays within delay ± jitter; and everything
is gone afterwards."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time

from tests.support.impair import UdpRelay, loss, rate_cap


def _pair() -> tuple[socket.socket, socket.socket, int]:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    receiver.settimeout(0.3)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return sender, receiver, int(receiver.getsockname()[1])


def _received(receiver: socket.socket) -> int:
    count = 0
    try:
        while True:
            receiver.recv(2048)
            count += 1
    except TimeoutError:
        return count


def test_loss_drops_its_share_of_one_ports_datagrams_only() -> None:
    sender, lossy, port = _pair()
    _, clean, clean_port = _pair()
    with loss(port, 10) as rule:
        for _ in range(2000):
            sender.sendto(b"x" * 100, ("127.0.0.1", port))
            sender.sendto(b"x" * 100, ("127.0.0.1", clean_port))
        got, got_clean, dropped = _received(lossy), _received(clean), rule.dropped()
    assert got + dropped == 2000 and 120 <= dropped <= 280, (got, dropped)  # 10 % ± 4 sigma-ish
    assert got_clean == 2000
    assert rule.table not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def test_rate_cap_holds_one_port_to_its_rate() -> None:
    sender, capped, port = _pair()
    _, free, free_port = _pair()
    payload = b"x" * 1000
    with rate_cap(port, 300) as cap:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # ~4 Mbit/s offered to each port for a second
            for _ in range(50):
                sender.sendto(payload, ("127.0.0.1", port))
                sender.sendto(payload, ("127.0.0.1", free_port))
            time.sleep(0.1)
        got, got_free = _received(capped), _received(free)
        stats = cap.stats()
    elapsed = time.monotonic() - started - 0.3  # less the silence that ended the reading
    # What passed beyond tbf's 16 kB burst, over the time it took (tbf counts 1,042 bytes a packet).
    kbit = (stats["bytes"] - 16_000) * 8 / 1000 / elapsed
    assert got == stats["packets"] and stats["dropped"] > 0, (got, stats)
    assert 200 < kbit < 360, (kbit, elapsed, stats)
    assert got_free == 500, got_free
    assert (
        "tbf"
        not in subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True, text=True).stdout
    )


async def test_relay_delays_within_delay_and_jitter() -> None:
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    target.bind(("127.0.0.1", 0))
    target.setblocking(False)

    def readable() -> None:
        while True:
            try:
                data, addr = target.recvfrom(2048)
            except BlockingIOError:
                return
            arrivals.append(time.monotonic() - float(data))
            target.sendto(data, addr)  # echo back through the relay

    loop.add_reader(target.fileno(), readable)
    echoes: list[float] = []
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)

    def echoed() -> None:
        while True:
            try:
                echoes.append(time.monotonic() - float(client.recv(2048)))
            except BlockingIOError:
                return

    loop.add_reader(client.fileno(), echoed)
    async with UdpRelay(delay=0.05, jitter=0.02) as relay:
        await relay.start([target.getsockname()[1]])
        for _ in range(20):
            client.sendto(str(time.monotonic()).encode(), ("127.0.0.1", relay.ports[target.getsockname()[1]]))
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
    loop.remove_reader(target.fileno())
    loop.remove_reader(client.fileno())
    assert len(arrivals) == 20 and len(echoes) == 20
    assert all(0.029 <= a <= 0.09 for a in arrivals), arrivals  # 50 ± 20 ms (and the loop's slack)
    assert all(0.058 <= e <= 0.2 for e in echoes), echoes
    assert max(arrivals) - min(arrivals) > 0.01, "jittered"
