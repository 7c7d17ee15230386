"""Send-only transceivers without the machinery they never use: lean receivers and lean senders.

aiortc 1.16 builds an ``RTCRtpReceiver`` for every transceiver (rtcpeerconnection.py 1208), send-only
ones included. A video receiver's ``__init__`` alone costs ≈ 0.3 ms and 95 KB: a remote bitrate
estimator with a 1,000-bucket rate counter, a 512-slot jitter buffer, a decoder queue and thread
event. A viewer's connection has 12 send-only transceivers (6 slot pairs) whose receivers aiortc
never starts (it calls ``receive()`` only for recvonly/sendrecv, rtcpeerconnection.py 1080-1091).

:class:`SendOnlyReceiver` sets only what aiortc touches on a receiver it does not start
(``transport``, ``setTransport``, ``_set_rtcp_ssrc``, ``track``, ``stop``). Reading any other
attribute completes aiortc's own ``__init__`` first, so a path we did not foresee gets a real
receiver instead of an ``AttributeError``.

:class:`LeanSender` does the same for a sender whose media, reports and RTCP handling are taken over
(``aiortc_hooks.take_over_sender``): no RTP history, stats report, header-extension map or the four
``asyncio.Event`` of aiortc's packet and report loops, which never start (≈ 2 KB each, 12 per viewer).

Every reach into aiortc's private names for this lives here; ``check()`` verifies them at start-up
and ``tests/media/test_transceiver_hooks.py`` runs it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import aiortc.rtcpeerconnection
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.exceptions import InvalidStateError
from aiortc.utils import random32

T = TypeVar("T")

_P = "_RTCRtpReceiver__"
# Exactly what RTCRtpReceiver's methods read on a receiver that was never started.
_LEAN = ("_enabled", "_track", f"{_P}kind", f"{_P}transport", f"{_P}started", f"{_P}rtcp_ssrc")


class HookMissing(RuntimeError):
    """aiortc no longer looks the way this module was written against."""


class _LeanUntilUsed:
    """Reading an attribute the lean ``__init__`` did not set completes the aiortc class's own
    ``__init__`` first, keeping what was set since (ids, transport, track, RTCP SSRC)."""

    _KEPT: tuple[str, ...] = ()
    _PREFIX = ""

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        if name.startswith("__") or d.get("_medstage_full"):
            raise AttributeError(name)
        kept = {k: d[k] for k in self._KEPT if k in d}
        d["_medstage_full"] = True
        # The aiortc class that follows this mixin in the subclass's bases.
        super().__init__(kept[f"{self._PREFIX}kind"], kept[f"{self._PREFIX}transport"])  # type: ignore[call-arg]
        d.update(kept)
        return getattr(self, name)

    @property
    def lean(self) -> bool:
        return not self.__dict__.get("_medstage_full", False)


class SendOnlyReceiver(_LeanUntilUsed, RTCRtpReceiver):
    """The receiver of a send-only transceiver: a handful of attributes until something needs more."""

    _KEPT, _PREFIX = _LEAN, _P

    def __init__(self, kind: str, transport: Any) -> None:
        if transport.state == "closed":
            raise InvalidStateError
        d = self.__dict__
        d["_enabled"] = True
        d["_track"] = None
        d[f"{_P}kind"] = kind
        d[f"{_P}transport"] = transport
        d[f"{_P}started"] = False
        d[f"{_P}rtcp_ssrc"] = None
        d[f"{_P}decoder_thread"] = None  # _handle_disconnect() -> __stop_decoder() reads it



_S = "_RTCRtpSender__"
# What aiortc reads on a sender it built and never started, and what take_over_sender reads.
_LEAN_SENDER = (
    "_enabled",
    "_ssrc",
    "_rtx_ssrc",
    "_stream_id",
    "_track_id",
    f"{_S}kind",
    f"{_S}track",
    f"{_S}transport",
    f"{_S}started",
)


class LeanSender(_LeanUntilUsed, RTCRtpSender):
    """A sender whose work is taken over: identifiers and transport until something needs more."""

    _KEPT, _PREFIX = _LEAN_SENDER, _S

    def __init__(self, kind: str, transport: Any) -> None:
        if not isinstance(kind, str):
            raise TypeError("a lean sender starts without a track")
        if transport.state == "closed":
            raise InvalidStateError
        d = self.__dict__
        d["_enabled"] = True
        d["_ssrc"] = random32()
        d["_rtx_ssrc"] = random32()
        d["_stream_id"] = str(uuid.uuid4())
        d["_track_id"] = str(uuid.uuid4())
        d[f"{_S}kind"] = kind
        d[f"{_S}track"] = None
        d[f"{_S}transport"] = transport
        d[f"{_S}started"] = False



def with_lean_transceivers(make: Callable[[], T]) -> T:
    """``make()`` (``addTransceiver`` calls for send-only transceivers whose senders are taken over)
    with lean receivers and senders.

    The module globals are swapped only for the duration of the synchronous calls: nothing else runs
    meanwhile on this thread, and peer connections are only built on the event loop's thread.
    """
    module: Any = aiortc.rtcpeerconnection
    receiver, sender = module.RTCRtpReceiver, module.RTCRtpSender
    module.RTCRtpReceiver, module.RTCRtpSender = SendOnlyReceiver, LeanSender
    try:
        return make()
    finally:
        module.RTCRtpReceiver, module.RTCRtpSender = receiver, sender


def _outside_a_loop_too(make: Callable[[], T]) -> T:
    """``make()``, with a throwaway event loop when none runs (RTCRtpSender.__init__ looks one up)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return make()
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    return make()


def check() -> None:
    """Fail loudly if aiortc no longer builds or reads receivers the way hooked here."""
    problems = []
    module: Any = aiortc.rtcpeerconnection
    if getattr(module, "RTCRtpReceiver", None) is not RTCRtpReceiver:
        problems.append("aiortc.rtcpeerconnection.RTCRtpReceiver is gone")
    if getattr(module, "RTCRtpSender", None) is not RTCRtpSender:
        problems.append("aiortc.rtcpeerconnection.RTCRtpSender is gone")
    # aiortc's own __init__ must still set every name the lean one sets (else names moved).
    from aiortc import RTCCertificate, RTCDtlsTransport
    from aiortc.rtcicetransport import RTCIceGatherer, RTCIceTransport

    ice = RTCIceTransport(RTCIceGatherer(iceServers=[]))
    dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])
    full = RTCRtpReceiver("video", dtls).__dict__
    problems += [f"RTCRtpReceiver.{n} is gone" for n in (*_LEAN, f"{_P}decoder_thread") if n not in full]
    lean = SendOnlyReceiver("video", dtls)
    lean._set_rtcp_ssrc(1234)
    if lean.transport is not dtls or not lean.lean:
        problems.append("a lean receiver's transport/_set_rtcp_ssrc now read more than it sets")
    full_sender = _outside_a_loop_too(lambda: RTCRtpSender("video", dtls)).__dict__
    problems += [f"RTCRtpSender.{n} is gone" for n in _LEAN_SENDER if n not in full_sender]
    sender = LeanSender("video", dtls)
    if sender.transport is not dtls or sender.track is not None or sender.kind != "video" or not sender.lean:
        problems.append("a lean sender's transport/track/kind now read more than it sets")
    if problems:
        raise HookMissing("; ".join(problems))
