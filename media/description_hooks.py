"""Forget the parsed offer and answer once a viewer's connection is negotiated for good.

aiortc 1.16 keeps both session descriptions of a connection, parsed (``SessionDescription`` with its
``MediaDescription``s, codecs, feedback, SSRC lines: ≈ 2,200 objects and ≈ 128 KB for a viewer's 12
m-lines), for renegotiation and for ``localDescription``/``remoteDescription``. A viewer's connection
is negotiated once (pre-allocated slots, no renegotiation ever); once every sender has its parameters
nothing reads them again: ``addIceCandidate`` skips a missing remote description
(rtcpeerconnection.py 441), a second answer is refused by the signalling state before any description
is read, and ``close()`` reads none.

Every reach into aiortc's private names for this lives here; ``check()`` verifies them at start-up and
``tests/media/test_description_hooks.py`` runs it.
"""

from __future__ import annotations

from typing import Any

_LOCAL = "_RTCPeerConnection__currentLocalDescription"
_REMOTE = "_RTCPeerConnection__currentRemoteDescription"
_PENDING = ("_RTCPeerConnection__pendingLocalDescription", "_RTCPeerConnection__pendingRemoteDescription")


class HookMissing(RuntimeError):
    """aiortc no longer looks the way this module was written against."""


def forget_descriptions(pc: Any) -> bool:
    """Drop ``pc``'s parsed descriptions if negotiation is over (signalling state ``stable``).

    In ``stable`` the pending local description is our applied offer: aiortc 1.16 never moves an offer
    it made from pending to current when the answer arrives (rtcpeerconnection.py 871-875)."""
    if pc.signalingState != "stable":
        return False
    for name in (_LOCAL, _REMOTE, *_PENDING):
        setattr(pc, name, None)
    return True


def check() -> None:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    missing = [name for name in (_LOCAL, _REMOTE, *_PENDING) if not hasattr(pc, name)]
    if missing:
        raise HookMissing(f"RTCPeerConnection.{', '.join(missing)} gone")
