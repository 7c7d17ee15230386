"""Two real aiortc peers in one process: a node-side viewer connection (``Subscriber``) and the
viewer's own aiortc connection answering it, over loopback. No node, no signalling."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aioice.ice
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media import aiortc_hooks
from media.peer import MediaConfig, new_peer_connection
from media.subscriber import Subscriber
from tests.support.waiting import eventually


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """Gather 127.0.0.1 only (the tests run in a loopback-only namespace); restored afterwards."""
    original = aioice.ice.get_host_addresses
    aiortc_hooks.announce_host_addresses(["127.0.0.1"])
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = original


def viewer_side() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))


async def offer(sub: Subscriber) -> str:
    await sub.pc.setLocalDescription(await sub.pc.createOffer())
    return str(sub.pc.localDescription.sdp)


async def answer(client: RTCPeerConnection, offer_sdp: str) -> str:
    await client.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
    await client.setLocalDescription(await client.createAnswer())
    return str(client.localDescription.sdp)


def new_subscriber(name: str = "viewer", slots: int = 6) -> Subscriber:
    return Subscriber(name, new_peer_connection(MediaConfig(ice_addresses=["127.0.0.1"])), slots)


async def connected(*pcs: RTCPeerConnection, timeout: float = 10.0) -> list[str]:
    """Wait until every connection is connected or failed; their final states."""
    settled = ("connected", "failed", "closed")
    await eventually(lambda: all(pc.connectionState in settled for pc in pcs), timeout)
    return [pc.connectionState for pc in pcs]


def fingerprints(sdp: str) -> set[str]:
    return {line.split(":", 1)[1].strip() for line in sdp.splitlines() if line.startswith("a=fingerprint:")}
