"""One DTLS certificate per node, and one SSL context per certificate and SRTP profile list.

aiortc 1.16 generates an EC key and a self-signed X.509 certificate in every ``RTCPeerConnection``
(rtcpeerconnection.py 295), hashes it three times (SHA-256/384/512) for every m-line of every offer
(``RTCCertificate.getFingerprints``, 12 m-lines per viewer, twice per offer), and builds a fresh
``SSL.Context`` for every DTLS transport (rtcdtlstransport.py 519). The WebRTC security architecture
(RFC 8827 §6.5, RFC 8122 §5) lets an endpoint reuse one certificate across connections: each
connection's SDP still carries its fingerprint, and each DTLS handshake still checks the peer's.

Every reach into aiortc's private names for this lives here; ``check()`` verifies them at start-up
and ``tests/media/test_dtls_hooks.py`` runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiortc.rtcpeerconnection
from aiortc import RTCCertificate, RTCDtlsTransport
from aiortc.rtcdtlstransport import RTCDtlsFingerprint, SRTPProtectionProfile
from OpenSSL import SSL

# How long one node certificate serves new connections. aiortc's certificates are valid 30 days
# (rtcdtlstransport.py generate_certificate); a connection keeps the certificate it was made with,
# so a day leaves every live connection weeks of validity.
ROTATE_AFTER_S = 24 * 3600.0

T = TypeVar("T")


class HookMissing(RuntimeError):
    """aiortc no longer looks the way this module was written against."""


class NodeCertificate(RTCCertificate):
    """An ``RTCCertificate`` shared by every peer connection of the process.

    The fingerprints are computed once, and the SSL context once per SRTP profile list: a context
    holds the key, the certificate and the cipher list, nothing of a connection. Its session cache
    is off, so no handshake can resume another connection's session (a resumed handshake carries no
    certificate to check against the SDP fingerprint).
    """

    def __init__(self, key: Any, cert: Any) -> None:
        super().__init__(key=key, cert=cert)
        self.created = time.monotonic()
        self._fingerprints: list[RTCDtlsFingerprint] | None = None
        self._contexts: dict[tuple[str, ...], SSL.Context] = {}

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        if self._fingerprints is None:
            self._fingerprints = super().getFingerprints()
        # A new list each time: aiortc's callers may keep or extend it.
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        key = tuple(p.openssl_profile.decode() for p in srtp_profiles)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = super()._create_ssl_context(srtp_profiles)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            self._contexts[key] = ctx
        return ctx


_current: NodeCertificate | None = None


def node_certificate(now: float | None = None) -> NodeCertificate:
    """The process's certificate, made on first use and replaced after ``ROTATE_AFTER_S``."""
    global _current
    now = time.monotonic() if now is None else now
    if _current is None or now - _current.created >= ROTATE_AFTER_S:
        _current = NodeCertificate.generateCertificate()
        _current.created = now
    return _current


class _NodeCertificateFactory:
    """Stands in for ``RTCCertificate`` in aiortc.rtcpeerconnection while a connection is built:
    ``RTCPeerConnection.__init__`` calls ``RTCCertificate.generateCertificate()`` and nothing else."""

    @staticmethod
    def generateCertificate() -> NodeCertificate:
        return node_certificate()


def with_node_certificate(make: Callable[[], T]) -> T:
    """``make()`` (an ``RTCPeerConnection(...)`` call) with the node certificate instead of a fresh one.

    The module global is swapped only for the duration of the synchronous constructor: nothing else
    runs meanwhile on this thread, and peer connections are only made on the event loop's thread.
    """
    module: Any = aiortc.rtcpeerconnection
    original = module.RTCCertificate
    module.RTCCertificate = _NodeCertificateFactory
    try:
        return make()
    finally:
        module.RTCCertificate = original


def certificate_of(pc: Any) -> RTCCertificate:
    """The certificate a peer connection presents (tests and check())."""
    certificates: list[RTCCertificate] = pc._RTCPeerConnection__certificates
    return certificates[0]


def check() -> None:
    """Fail loudly if aiortc no longer builds certificates and contexts the way hooked here."""
    problems = []
    module: Any = aiortc.rtcpeerconnection
    if getattr(module, "RTCCertificate", None) is not RTCCertificate:
        problems.append("aiortc.rtcpeerconnection.RTCCertificate is gone")
    if not callable(getattr(RTCCertificate, "_create_ssl_context", None)):
        problems.append("RTCCertificate._create_ssl_context is gone")
    if not hasattr(RTCDtlsTransport, "getLocalParameters"):
        problems.append("RTCDtlsTransport.getLocalParameters is gone")
    if not problems:
        pc = with_node_certificate(aiortc.RTCPeerConnection)
        try:
            if certificate_of(pc) is not node_certificate():
                problems.append("RTCPeerConnection no longer gets its certificate from generateCertificate")
        except AttributeError:
            problems.append("RTCPeerConnection.__certificates is gone")
    if problems:
        raise HookMissing("; ".join(problems))
