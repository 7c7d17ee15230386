"""Debian's coturn (``turnserver``) for tests: a TURN server on 127.0.0.1 with the shared-secret
scheme medstage's credentials follow (server/turn.py), started on free ports and always stopped."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TURNSERVER = "/usr/bin/turnserver"
SECRET = "medstage-test-turn-secret-0123456789"


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free for both UDP and TCP")


@dataclass
class Coturn:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    secret: str

    def url(self, transport: str) -> str:
        return f"turn:127.0.0.1:{self.port}?transport={transport}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def coturn(
    tmp_path: Path, secret: str = SECRET, relay_ports: tuple[int, int] = (50000, 50999)
) -> Iterator[Coturn]:
    """Run ``turnserver`` on a free port of 127.0.0.1 (UDP and TCP listeners, UDP relays on
    127.0.0.1, loopback peers allowed: the node is on 127.0.0.1) until the block ends."""
    assert shutil.which(TURNSERVER), "coturn is not installed (apt-get install coturn)"
    port = _free_port()
    log_path = tmp_path / f"coturn-{port}.log"
    args = [
        TURNSERVER, "-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1",
        "--listening-port", str(port), "--min-port", str(relay_ports[0]), "--max-port", str(relay_ports[1]),
        "--use-auth-secret", "--static-auth-secret", secret, "--realm", "medstage",
        "--no-tls", "--no-dtls", "--allow-loopback-peers", "--no-cli", "--no-software-attribute",
        "--userdb", str(tmp_path / f"coturn-{port}.sqlite"),
        "--pidfile", str(tmp_path / f"coturn-{port}.pid"),
        "--log-file", "stdout", "--verbose",
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)
    server = Coturn(proc, port, log_path, secret)
    try:
        deadline = time.monotonic() + 10
        while True:  # listening once its TCP listener accepts
            if proc.poll() is not None:
                raise RuntimeError(f"turnserver exited with {proc.returncode}:\n{server.log()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"turnserver did not listen:\n{server.log()[-3000:]}") from None
                time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
