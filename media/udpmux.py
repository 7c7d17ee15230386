"""One UDP socket for every viewer's ICE connection, and batched sends on it.

Single-port mode, as LiveKit's and mediasoup's: one socket per local address (per process), announced as
the host candidate of every subscriber connection. Incoming datagrams are demultiplexed by remote
address; a new address is learnt from a STUN binding request's USERNAME (our ufrag first, RFC 8445
§7.2.2), or from a datagram we sent to it (our own connectivity checks). Each ICE connection still gets
its own aioice protocol object: its transport (``MuxTransport``) writes through the shared socket.

With one socket, a packet's copies for every viewer leave in one ``sendmmsg`` (``SendBatch``):
SRTP-protected straight into preallocated buffers (no bytes object per viewer), flushed at the end of
the current event-loop callback. Where ``sendmmsg`` is missing (not Linux), ``send_batch`` is None and
the slots use the plain path (``sendto`` per datagram, still on the shared socket).

Sending never blocks and never raises into the forwarding loop: a datagram the kernel refuses (a full
send buffer: EAGAIN/ENOBUFS, or an error for one destination) is dropped and counted (``send_drops``).
The hooks into aioice that put connections on the mux are in media/ice_hooks.py.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DATAGRAM_SIZE = 1500  # one batch buffer: an MTU-sized SRTP packet
BATCH_CAPACITY = 1024  # UIO_MAXIOV: sendmmsg's own limit per call
SOCKET_BUFFER = 4 * 1024 * 1024  # a keyframe to a thousand viewers leaves in one burst
SOCKADDR_SIZE = 28  # sockaddr_in6; Linux takes a longer msg_namelen for AF_INET, so one size for all

rtcp_received = 0  # viewers' SRTCP packets read on the shared socket (media/rtcpin.py)
rtcp_dropped = 0  # viewers' SRTCP packets that failed to decrypt or to parse here (media/rtcpin.py)
send_drops = 0  # datagrams to viewers the kernel refused (full send buffer, unreachable): dropped
unroutable = 0  # datagrams from an address no connection owns (and no STUN request naming one)

_STUN_BINDING_REQUEST = b"\x00\x01"
_STUN_USERNAME = 0x0006
_attr_header = struct.Struct("!HH").unpack_from


def stun_username(data: bytes) -> str | None:
    """The USERNAME of a STUN binding request, or None (RFC 5389 §6, §15.3). Parsed by hand: the mux
    only needs this attribute, and aioice parses the whole message again in its protocol."""
    if len(data) < 20 or data[0:2] != _STUN_BINDING_REQUEST or data[4:8] != b"\x21\x12\xa4\x42":
        return None
    end = min(len(data), 20 + int.from_bytes(data[2:4], "big"))
    pos = 20
    while pos + 4 <= end:
        kind, length = _attr_header(data, pos)
        if kind == _STUN_USERNAME:
            try:
                return data[pos + 4 : pos + 4 + length].decode()
            except UnicodeDecodeError:
                return None
        pos += 4 + ((length + 3) & ~3)
    return None


# --- sendmmsg ---------------------------------------------------------------------------------

_CDEF = """
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr {
    void *msg_name; unsigned int msg_namelen; struct iovec *msg_iov; size_t msg_iovlen;
    void *msg_control; size_t msg_controllen; int msg_flags;
};
struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags);
"""


def _load_libc() -> tuple[Any, Any] | None:
    """cffi in ABI mode on the C library already in the process: no compiler, no build step."""
    try:
        from cffi import FFI  # type: ignore[import-untyped]

        ffi = FFI()
        ffi.cdef(_CDEF)
        libc = ffi.dlopen(None)
        libc.sendmmsg  # noqa: B018 - resolves the symbol now: AttributeError where it is missing
    except (ImportError, OSError, AttributeError):
        return None
    return ffi, libc


_libc = _load_libc()
_AGAIN = {errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS}


def sockaddr(addr: tuple[Any, ...]) -> bytes:
    """``addr`` as the kernel's sockaddr, padded to SOCKADDR_SIZE."""
    host, port = addr[0], addr[1]
    if ":" in host:
        raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + socket.inet_pton(
            socket.AF_INET6, host
        ) + struct.pack("=I", addr[3] if len(addr) > 3 else 0)
    else:
        raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host)
    return raw.ljust(SOCKADDR_SIZE, b"\0")


class SendBatch:
    """Datagrams queued for one socket, sent with one ``sendmmsg`` when flushed.

    A slot's path is ``protector(session)`` + ``queue`` + ``destination(addr)``, used exactly like the
    plain path: ``queue(protect(packet), destination)``. ``protect`` SRTP-protects into the next free
    buffer and returns its length; ``queue`` addresses it. The first queued datagram schedules a flush
    at the end of the current callback (``call_soon``), so nothing waits beyond it; a full batch
    flushes at once. ``flush()`` may be called earlier (benchmarks, tests).
    """

    def __init__(
        self, fd: int, loop: asyncio.AbstractEventLoop | None, capacity: int = BATCH_CAPACITY
    ) -> None:
        if _libc is None:
            raise OSError("sendmmsg is not available")
        ffi, libc = _libc
        self._ffi = ffi
        self._sendmmsg = libc.sendmmsg
        self.fd = fd
        self.capacity = capacity
        self._loop = loop
        self._armed = False
        self.count = 0
        self._data = ffi.new("char[]", capacity * DATAGRAM_SIZE)
        self._msgs = ffi.new("struct mmsghdr[]", capacity)
        self._iovs = ffi.new("struct iovec[]", capacity)
        self.buffers = [self._data + i * DATAGRAM_SIZE for i in range(capacity)]
        # Writable views of the same buffers: a slice assignment copies in C, where ffi.memmove is a
        # Python method in front of the C call (one frame per datagram more).
        self.views = [memoryview(ffi.buffer(b, DATAGRAM_SIZE)) for b in self.buffers]
        self.iovs = [self._iovs + i for i in range(capacity)]
        self.names = [ffi.addressof(self._msgs[i], "msg_hdr") for i in range(capacity)]
        for i in range(capacity):
            self.iovs[i].iov_base = self.buffers[i]
            hdr = self.names[i]
            hdr.msg_iov = self.iovs[i]
            hdr.msg_iovlen = 1
            hdr.msg_namelen = SOCKADDR_SIZE
        self._destinations: dict[tuple[Any, ...], Any] = {}

    def destination(self, addr: tuple[Any, ...]) -> Any:
        """The kernel address of ``addr``, built once (a slot keeps it as its ``addr``)."""
        key = (addr[0], addr[1])
        found = self._destinations.get(key)
        if found is None:
            found = self._destinations[key] = self._ffi.new("char[]", sockaddr(addr))
        return found

    def protector(self, session: Any) -> Callable[[Any], int]:
        """SRTP-protect (pylibsrtp ``Session``, libsrtp 2's ``srtp_protect`` on its context, as
        aiortc_hooks.fast_protect) into the batch's next buffer; returns the protected length."""
        from pylibsrtp import SRTP_MAX_TRAILER_LEN, Error
        from pylibsrtp._binding import lib

        ctx = session._srtp[0]
        len_p = self._ffi.new("int *")
        srtp_protect = lib.srtp_protect
        limit = DATAGRAM_SIZE - SRTP_MAX_TRAILER_LEN
        buffers = self.buffers
        views = self.views
        iovs = self.iovs
        batch = self
        keep = session  # the context lives as long as the session object

        def protect(packet: Any) -> int:
            n = len(packet)
            if n > limit:
                raise ValueError("packet is too long")
            i = batch.count
            if i == batch.capacity:
                batch.flush()
                i = 0
            views[i][:n] = packet
            len_p[0] = n
            err = srtp_protect(ctx, buffers[i], len_p)
            if err:
                raise Error(f"srtp_protect failed: {err} ({keep is not None})")
            protected: int = len_p[0]
            iovs[i].iov_len = protected
            return protected

        return protect

    def queue(self, length: int, destination: Any) -> None:
        """Address the datagram ``protect`` just wrote (``length`` is its return value)."""
        i = self.count
        self.names[i].msg_name = destination
        self.count = i + 1
        if not self._armed and self._loop is not None:
            self._armed = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send what is queued; never raises, never blocks (the socket is non-blocking)."""
        global send_drops
        self._armed = False
        count = self.count
        if not count:
            return
        self.count = 0
        sent = 0
        msgs = self._msgs
        while sent < count:
            n = self._sendmmsg(self.fd, msgs + sent, count - sent, 0)
            if n > 0:
                sent += n
                continue
            error = self._ffi.errno
            if error in _AGAIN:
                # The send buffer is full: the rest of this batch is dropped, as a router would.
                send_drops += count - sent
                return
            if error == errno.EINTR:
                continue
            # An error for the datagram at ``sent`` only (an unreachable destination): skip it.
            send_drops += 1
            sent += 1


# --- the shared socket ------------------------------------------------------------------------


class MuxTransport(asyncio.DatagramTransport):
    """What one ICE connection's protocol sees as its socket: writes go through the shared one."""

    def __init__(self, mux: UdpMux, protocol: Any) -> None:
        super().__init__()
        self.mux = mux
        self.protocol = protocol
        self._closed = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closed:
            return
        # Our connectivity checks reach an address before its answer comes back: learn it now.
        key = (addr[0], addr[1])
        if self.mux.by_addr.get(key) is not self.protocol:
            self.mux.by_addr[key] = self.protocol
        self.mux.sendto(data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self.mux.sockname
        # Not "socket": aioice would resize the shared socket's buffer per connection.
        return default

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.mux.unregister(self.protocol)
        self.mux.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


class UdpMux(asyncio.DatagramProtocol):
    """One bound UDP socket and the ICE connections that share it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        self.loop = loop
        self.sock = sock
        self.sockname = sock.getsockname()
        self.transport: asyncio.DatagramTransport | None = None
        self.by_addr: dict[tuple[Any, Any], Any] = {}
        self.by_ufrag: dict[str, Any] = {}
        # Connections whose SRTCP we read here (media/rtcpin.py), not through aioice and aiortc.
        self.rtcp: dict[Any, Callable[[bytes], None]] = {}
        try:
            self.send_batch: SendBatch | None = SendBatch(sock.fileno(), loop)
        except OSError:
            self.send_batch = None

    @classmethod
    async def open(cls, address: str, port: int) -> UdpMux:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            sock.bind((address, port))
            mux = cls(loop, sock)
            await loop.create_datagram_endpoint(lambda: mux, sock=sock)
        except BaseException:
            sock.close()
            raise
        log.info("single-port media socket on %s:%d", *mux.sockname[:2])
        return mux

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        global unroutable
        if len(data) < 2:
            return
        key = (addr[0], addr[1])
        protocol = self.by_addr.get(key)
        if data[:2] == _STUN_BINDING_REQUEST:
            # A check names the connection it is for: an address moves to whoever it names.
            username = stun_username(data)
            named = self.by_ufrag.get(username.partition(":")[0]) if username else None
            if named is not None and named is not protocol:
                self.by_addr[key] = protocol = named
        if protocol is None:
            unroutable += 1
            return
        if 191 < data[1] < 224 and data[0] > 127:
            # RTCP (RFC 5761 §4): a viewer's feedback, read at once when its connection takes it.
            handler = self.rtcp.get(protocol)
            if handler is not None:
                handler(data)
                return
        if data[0] > 3:
            # Not STUN (RFC 7983: DTLS, RTP/RTCP): straight to the connection, as aioice's protocol
            # would after failing to parse it as STUN (an exception per datagram).
            protocol.receiver.data_received(data, protocol.local_candidate.component)
        else:
            protocol.datagram_received(data, key)

    def error_received(self, exc: Exception) -> None:
        log.debug("single-port media socket: %s", exc)

    def sendto(self, data: Any, addr: Any) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def attach(self, protocol: Any, ufrag: str) -> MuxTransport:
        """Give ``protocol`` (an aioice StunProtocol of the connection whose ufrag is ``ufrag``) its
        transport on this socket."""
        self.by_ufrag[ufrag] = protocol
        transport = MuxTransport(self, protocol)
        protocol.connection_made(transport)
        return transport

    def unregister(self, protocol: Any) -> None:
        for ufrag in [u for u, p in self.by_ufrag.items() if p is protocol]:
            del self.by_ufrag[ufrag]
        for key in [k for k, p in self.by_addr.items() if p is protocol]:
            del self.by_addr[key]
        self.rtcp.pop(protocol, None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# --- per process ------------------------------------------------------------------------------

_port = 0
# Per event loop (the test suite runs one loop per test), then per local address.
_muxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Future[UdpMux]]] = (
    weakref.WeakKeyDictionary()
)


def configure(port: int) -> None:
    """The port every address's shared socket binds (0: one ephemeral port, chosen by the kernel)."""
    global _port
    _port = port


async def for_address(address: str) -> UdpMux:
    """The process's shared socket on ``address``, opened on first use (concurrent callers wait for
    the same one)."""
    muxes = _muxes.setdefault(asyncio.get_running_loop(), {})
    found = muxes.get(address)
    if found is None or (found.done() and (found.cancelled() or found.exception() is not None)):
        found = muxes[address] = asyncio.ensure_future(UdpMux.open(address, _port))
    return await asyncio.shield(found)


def opened() -> list[UdpMux]:
    """The shared sockets of the running loop that are open."""
    muxes = _muxes.get(asyncio.get_running_loop(), {})
    return [f.result() for f in muxes.values() if f.done() and not f.cancelled() and f.exception() is None]


def close_all() -> None:
    """Close the running loop's shared sockets (at shutdown)."""
    for mux in opened():
        mux.close()
    _muxes.pop(asyncio.get_running_loop(), None)
