"""A WebSocket client that reads only when told to: a plain socket with a tiny receive buffer.

The server's frames pile up in its own outbox once this socket's (and the kernel's) buffers are full,
which is what a browser on a stalled network looks like to the node. Client-side framing (RFC 6455:
masked frames out, unmasked in) is written out here: a WebSocket library would read in the background.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from typing import Any

RECEIVE_BUFFER = 2048  # bytes; Linux doubles it and keeps a floor of about 2 KB


class Closed(Exception):
    """The server closed the WebSocket (``code``) or the TCP connection (``code`` None)."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(f"closed: {code} {reason}")
        self.code = code
        self.reason = reason


class SlowSocket:
    """Blocking calls: run ``recv`` in a thread from async tests (``asyncio.to_thread``)."""

    def __init__(self, port: int, path: str = "/ws", timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect: the window the server may fill is announced in the handshake.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self._buffer = b""
        while b"\r\n\r\n" not in self._buffer:
            self._fill()
        head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise AssertionError(f"no WebSocket upgrade: {head!r}")

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Closed(None, "connection closed without a close frame")
        self._buffer += chunk

    def _take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, message: dict[str, Any]) -> None:
        self._send_frame(0x1, json.dumps(message).encode())

    def recv(self) -> dict[str, Any]:
        """The next text frame, decoded; answers pings; raises Closed at the close frame."""
        while True:
            first, second = self._take(2)
            opcode, size = first & 0x0F, second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self._take(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", self._take(8))
            payload = self._take(size)
            if opcode == 0x1:
                frame: dict[str, Any] = json.loads(payload)
                return frame
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                try:
                    self._send_frame(0x8, payload[:2])
                except OSError:
                    pass  # the server may have dropped the TCP connection already
                raise Closed(code, payload[2:].decode(errors="replace"))
            if opcode == 0x9:
                self._send_frame(0xA, payload)

    def recv_until(self, request_id: str) -> list[dict[str, Any]]:
        """Every frame up to and including the reply to ``request_id``."""
        frames = []
        while True:
            frame = self.recv()
            frames.append(frame)
            if frame.get("id") == request_id:
                return frames
