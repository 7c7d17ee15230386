"""Every reach into aioice for single-port mode (media/udpmux.py), in one place.

Read from aioice 0.13.0 (pinned in pyproject.toml). ``check()`` verifies each hook;
``tests/media/test_ice_hooks.py`` runs it.

aioice 0.13 binds one socket per connection per address in ``Connection.get_component_candidates``
(ice.py 1137-1173: ``create_datagram_endpoint(lambda: StunProtocol(self), local_addr=(address, 0))``,
then a host candidate from the socket's name, then ``self._protocols += ...``). For a connection marked
by ``use_mux`` we do the same without the bind: a ``StunProtocol`` of that connection gets a
``MuxTransport`` on the process's shared socket, and the host candidate names that socket. The rest of
aioice (checks, nomination, consent, ``close()``) runs unchanged on the protocol object. TURN relays keep
their own sockets (aioice's own code, called with no host address); a connection on the mux gathers no
server-reflexive candidate (announce the public address with MEDSTAGE_ICE_ADDRESSES instead).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import aioice.candidate
import aioice.ice
from aiortc import RTCDtlsTransport, RTCPeerConnection

from media import aiortc_hooks, udpmux

log = logging.getLogger(__name__)

_warned: set[str] = set()  # addresses whose shared socket could not be bound
_MARK = "_medstage_mux"  # set on an aioice Connection whose host candidates live on the mux
_original_get_component_candidates = aioice.ice.Connection.get_component_candidates


def check() -> list[str]:
    """What moved in aioice since these hooks were written (empty: nothing)."""
    problems = []
    connection = aioice.ice.Connection
    get = getattr(connection, "get_component_candidates", None)
    if get is None:
        problems.append("aioice Connection.get_component_candidates is gone")
    elif list(inspect.signature(_original_get_component_candidates).parameters)[:3] != [
        "self",
        "component",
        "addresses",
    ]:
        problems.append("aioice Connection.get_component_candidates(component, addresses) changed")
    if not isinstance(getattr(connection, "local_username", None), property):
        problems.append("aioice Connection.local_username is gone")
    for name in ("connection_made", "connection_lost", "datagram_received"):
        # Its own, not asyncio.DatagramProtocol's no-op.
        if not callable(vars(aioice.ice.StunProtocol).get(name)):
            problems.append(f"aioice StunProtocol.{name} is gone")
    if not callable(vars(connection).get("data_received")):
        problems.append("aioice Connection.data_received is gone")
    if "self.receiver = receiver" not in inspect.getsource(aioice.ice.StunProtocol.__init__):
        problems.append("aioice StunProtocol.receiver (its Connection) is gone")
    for name in ("candidate_foundation", "candidate_priority"):
        if not callable(getattr(aioice.candidate, name, None)):
            problems.append(f"aioice.candidate.{name} is gone")
    probe = connection(ice_controlling=True)
    for name in ("_protocols", "_nominated"):
        if not hasattr(probe, name):
            problems.append(f"aioice Connection.{name} is gone")
    return problems


def install() -> None:
    """Route host-candidate gathering of marked connections to the mux (idempotent)."""
    aioice.ice.Connection.get_component_candidates = _get_component_candidates  # type: ignore[method-assign]


def uninstall() -> None:
    aioice.ice.Connection.get_component_candidates = _original_get_component_candidates  # type: ignore[method-assign]


def use_mux(pc: RTCPeerConnection) -> None:
    """Gather ``pc``'s host candidates on the shared socket (call before ``createOffer``)."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.sender.transport.transport._connection
        setattr(connection, _MARK, True)


def on_mux(pc: RTCPeerConnection) -> bool:
    """Whether every transport of ``pc`` gathers on the mux (tests)."""
    return all(
        getattr(t.sender.transport.transport._connection, _MARK, False) for t in pc.getTransceivers()
    )


async def _get_component_candidates(
    self: aioice.ice.Connection, component: int, addresses: list[str], timeout: int = 5  # noqa: ASYNC109 - aioice's signature
) -> list[aioice.candidate.Candidate]:
    if not getattr(self, _MARK, False):
        return await _original_get_component_candidates(self, component, addresses, timeout)
    candidates = []
    unshared = []  # addresses where the shared socket cannot be bound: a socket per connection there
    for address in addresses:
        try:
            mux = await udpmux.for_address(address)
        except OSError as exc:
            # Tried again at every join (the port may come free); said loudly once per address.
            level = logging.DEBUG if address in _warned else logging.WARNING
            _warned.add(address)
            log.log(level, "no single-port media socket on %s (a socket per viewer there): %s", address, exc)
            unshared.append(address)
            continue
        protocol = aioice.ice.StunProtocol(self)
        mux.attach(protocol, self.local_username)
        host, port = mux.sockname[0], mux.sockname[1]
        protocol.local_candidate = aioice.candidate.Candidate(
            foundation=aioice.candidate.candidate_foundation("host", "udp", host),
            component=component,
            transport="udp",
            priority=aioice.candidate.candidate_priority(component, "host"),
            host=host,
            port=port,
            type="host",
        )
        self._protocols.append(protocol)
        candidates.append(protocol.local_candidate)
    # aioice's own gathering for the rest: relayed candidates (TURN), and host (and server-reflexive)
    # candidates on the addresses the shared socket could not take.
    candidates += await _original_get_component_candidates(self, component, unshared, timeout)
    return candidates


def udp_path(dtls: RTCDtlsTransport) -> aiortc_hooks.UdpPath | None:
    """The fastest path of a connected DTLS transport: batched ``sendmmsg`` on the mux when its
    nominated pair is on it, else aiortc_hooks.udp_path (protect, then ``sendto``)."""
    srtp = getattr(dtls, "_tx_srtp", None)
    if dtls.state != "connected" or srtp is None:
        return None
    pair: Any = dtls.transport._connection._nominated.get(1)
    if pair is None:
        return None
    transport = pair.protocol.transport
    if isinstance(transport, udpmux.MuxTransport) and transport.mux.send_batch is not None:
        batch = transport.mux.send_batch
        return aiortc_hooks.UdpPath(
            batch.protector(srtp), batch.queue, batch.destination(pair.remote_addr)  # type: ignore[arg-type]
        )
    return aiortc_hooks.udp_path(dtls)


def take_rtcp(dtls: RTCDtlsTransport, handle: Callable[[bytes], None]) -> bool:
    """Read the connection's incoming SRTCP on the shared socket: decrypt with the DTLS transport's
    receive session and hand it to ``handle`` (media/rtcpin.py), instead of aiortc's receive task.
    False (nothing changes) when the connection is not on the mux."""
    srtp = getattr(dtls, "_rx_srtp", None)
    pair: Any = dtls.transport._connection._nominated.get(1)
    if srtp is None or pair is None or not isinstance(pair.protocol.transport, udpmux.MuxTransport):
        return False
    unprotect = srtp.unprotect_rtcp

    def on_rtcp(data: bytes) -> None:
        udpmux.rtcp_received += 1
        try:
            plain = unprotect(data)
        except Exception:  # a replay, a forgery, a packet from before the keys: dropped
            udpmux.rtcp_dropped += 1
            return
        try:
            handle(plain)
        except Exception:  # never into the socket's callback: counted, logged once per connection
            udpmux.rtcp_dropped += 1
            if not getattr(on_rtcp, "logged", False):
                on_rtcp.logged = True  # type: ignore[attr-defined]
                log.exception("a viewer's RTCP could not be handled")

    pair.protocol.transport.mux.rtcp[pair.protocol] = on_rtcp
    return True


def nominated_pair(dtls: RTCDtlsTransport | None) -> tuple[Any, Any] | None:
    """The (local, remote) aioice candidates of a connection's nominated pair (component 1), or None
    before nomination. Read by media/figures.py for the troubleshooting report."""
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    pair = nominated.get(1) if isinstance(nominated, dict) else None
    if pair is None:
        return None
    return pair.local_candidate, pair.remote_candidate
