"""Network impairment inside a test's (or a benchmark's) network namespace, for one viewer at a time.

This kernel has no ``netem``; what works (and what the issue asks for):

* ``loss(port, percent)``: random loss with nftables, every UDP datagram *to* ``port`` (a viewer's own
  port, from its selected candidate pair in getStats) dropped with probability ``percent`` %
  (``numgen random mod 100 < percent``), counted by the rule's counter. Dropped on the *input* hook:
  on the output hook the sender's ``sendto`` would fail with EPERM, which a real network never does.
* ``rate_cap(port, kbit)``: a rate cap with ``tc``: on ``lo`` a classful root (``htb``; ``prio`` is not
  built here) whose default class is unlimited, one class for the viewer's port chosen by a ``u32``
  filter, and a ``tbf`` under it that does the capping (its drops and backlog in ``tc -s``).
* ``UdpRelay``: delay and jitter in userspace. A viewer's page is told (``relay_init_script``) to reach
  the node's media ports through the relay's ports instead; each datagram waits ``delay`` ± ``jitter``
  (uniform) in each direction, so reordering happens as on a real jittery link.

Everything is undone when its ``with`` block ends, even on failure. Needs root in the namespace
(``unshare --net``), as the tests run.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_tables = itertools.count(1)


def _run(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Loss:
    table: str
    port: int
    percent: int

    def dropped(self) -> int:
        """Datagrams the rule dropped so far."""
        out = _run("nft", "list", "table", "inet", self.table)
        return int(out.split("counter packets ", 1)[1].split()[0])


@contextmanager
def loss(port: int, percent: int) -> Iterator[Loss]:
    """Drop ``percent`` % of the UDP datagrams sent to ``port`` (on any address), at random."""
    if not 0 < percent < 100:
        raise ValueError("percent: 1-99")
    table = f"medstage_loss_{next(_tables)}_{port}"
    _run(
        "nft", "-f", "-",
        stdin=(
            f"add table inet {table}\n"
            f"add chain inet {table} in {{ type filter hook input priority 0; policy accept; }}\n"
            f"add rule inet {table} in udp dport {port} numgen random mod 100 < {percent} counter drop\n"
        ),
    )  # fmt: skip
    try:
        yield Loss(table, port, percent)
    finally:
        _run("nft", "delete", "table", "inet", table)


@dataclass
class RateCap:
    device: str
    port: int
    kbit: int

    def stats(self) -> dict[str, int]:
        """The tbf's counters: bytes and packets sent, packets dropped."""
        out = _run("tc", "-s", "qdisc", "show", "dev", self.device)
        tbf = out.split("qdisc tbf", 1)[1]
        sent = tbf.split("Sent ", 1)[1].split()
        dropped = tbf.split("dropped ", 1)[1].split(",")[0]
        return {"bytes": int(sent[0]), "packets": int(sent[2]), "dropped": int(dropped)}

    def lift(self) -> None:
        """Remove the cap now (the ``with`` block's end does it too)."""
        subprocess.run(["tc", "qdisc", "del", "dev", self.device, "root"], capture_output=True)


@contextmanager
def rate_cap(port: int, kbit: int, device: str = "lo", burst_bytes: int = 16_000) -> Iterator[RateCap]:
    """Cap the UDP datagrams sent to ``port`` at ``kbit`` kbit/s (tbf; what exceeds its 200 ms queue is
    dropped). Everything else on ``device`` is unlimited. One cap per device at a time."""
    _run("tc", "qdisc", "add", "dev", device, "root", "handle", "1:", "htb", "default", "1")
    cap = RateCap(device, port, kbit)
    try:
        _run("tc", "class", "add", "dev", device, "parent", "1:", "classid", "1:1", "htb", "rate", "100gbit")
        _run("tc", "class", "add", "dev", device, "parent", "1:", "classid", "1:10", "htb", "rate", "100gbit")
        _run(
            "tc", "qdisc", "add", "dev", device, "parent", "1:10", "handle", "10:", "tbf",
            "rate", f"{kbit}kbit", "burst", str(burst_bytes), "latency", "200ms",
        )  # fmt: skip
        _run(
            "tc", "filter", "add", "dev", device, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
            "match", "ip", "protocol", "17", "0xff", "match", "ip", "dport", str(port), "0xffff",
            "flowid", "1:10",
        )  # fmt: skip
        yield cap
    finally:
        cap.lift()


# --- delay and jitter ----------------------------------------------------------------------------


class _Upstream:
    """The relay's socket towards the node for one viewer address: replies go back to that viewer."""

    def __init__(self, listener: _Listener, client: tuple[str, int]) -> None:
        self.listener = listener
        self.client = client
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((listener.target[0], 0))
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error from an earlier send
            self.listener.later(lambda data=data: self.listener.send_to_client(data, self.client))

    def send(self, data: bytes) -> None:
        if self.sock.fileno() >= 0:
            try:
                self.sock.sendto(data, self.listener.target)
            except OSError:
                pass  # the node's port closed (the viewer left): a lost datagram, as on a network

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()


class _Listener(asyncio.DatagramProtocol):
    """One relay port standing for one of the node's media ports."""

    def __init__(self, owner: UdpRelay, target: tuple[str, int]) -> None:
        self.owner = owner
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.upstreams: dict[tuple[str, int], _Upstream] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def later(self, send: Callable[[], None]) -> None:
        self.owner.forwarded += 1
        delay = max(0.0, self.owner.delay + random.uniform(-self.owner.jitter, self.owner.jitter))
        asyncio.get_running_loop().call_later(delay, send)

    def send_to_client(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, client)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        upstream = self.upstreams.get(addr)
        if upstream is None:
            upstream = self.upstreams[addr] = _Upstream(self, addr)
        self.later(lambda: upstream.send(data))


@dataclass
class UdpRelay:
    """Delay and jitter for one viewer: a relay port per node media port; ``ports`` maps each node
    port to its relay port (what ``relay_init_script`` rewrites the node's candidates with)."""

    host: str = "127.0.0.1"
    delay: float = 0.08
    jitter: float = 0.03
    ports: dict[int, int] = field(default_factory=dict)
    forwarded: int = 0
    _listeners: list[_Listener] = field(default_factory=list)

    async def start(self, node_ports: list[int]) -> UdpRelay:
        loop = asyncio.get_running_loop()
        for port in node_ports:
            listener = _Listener(self, (self.host, port))
            transport, _ = await loop.create_datagram_endpoint(
                lambda li=listener: li, local_addr=(self.host, 0)
            )
            self._listeners.append(listener)
            self.ports[port] = int(transport.get_extra_info("sockname")[1])
        return self

    def close(self) -> None:
        for listener in self._listeners:
            for upstream in listener.upstreams.values():
                upstream.close()
            if listener.transport is not None:
                listener.transport.close()
        self._listeners.clear()

    async def __aenter__(self) -> UdpRelay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def relay_init_script(ports: dict[int, int], host: str = "127.0.0.1") -> str:
    """A page init script: every remote ICE candidate at ``host``:P (SDP or trickled) becomes
    ``host``:ports[P], so the page reaches those node ports through the relay only."""
    mapping = json.dumps({str(k): v for k, v in ports.items()})
    return f"""(() => {{
  const map = {mapping};
  const host = {json.dumps(host)};
  const rewrite = (line) => line.replace(
    /^(a=)?(candidate:\\S+ \\d+ \\S+ \\d+ )(\\S+) (\\d+)( typ .*)$/gm,
    (all, a, head, addr, port, tail) =>
      (addr === host && map[port]) ? `${{a || ''}}${{head}}${{addr}} ${{map[port]}}${{tail}}` : all);
  const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (desc) {{
    if (desc && desc.sdp) desc = {{type: desc.type, sdp: rewrite(desc.sdp)}};
    return setRemote.call(this, desc);
  }};
  const addCandidate = RTCPeerConnection.prototype.addIceCandidate;
  RTCPeerConnection.prototype.addIceCandidate = function (c) {{
    if (c && c.candidate) c = {{...(c.toJSON ? c.toJSON() : c), candidate: rewrite(c.candidate)}};
    return addCandidate.call(this, c);
  }};
}})();"""
