"""aiortc peer connections configured for a server: explicit ICE servers, announced addresses."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer, RTCPeerConnection

from media import (
    aiortc_hooks,
    description_hooks,
    dtls_hooks,
    ice_hooks,
    negotiation_hooks,
    simulcast_hooks,
    transceiver_hooks,
    udpmux,
)
from media.nackguard import ResendLimits


@dataclass(frozen=True, slots=True)
class IceServer:
    urls: list[str]
    username: str | None = None
    credential: str | None = None

    def to_browser(self) -> dict[str, object]:
        out: dict[str, object] = {"urls": self.urls}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """What media/ needs to know; built once by server.config."""

    ice_addresses: list[str] = field(default_factory=list)
    ice_servers: list[IceServer] = field(default_factory=list)
    slots: int = 6
    loss_timeout: float = 0.15
    pli_interval: float = 0.5
    resend: ResendLimits = field(default_factory=ResendLimits)  # answering subscribers' NACKs
    # Viewers' ICE on one UDP socket per address (media/udpmux.py); its port, 0 for an ephemeral one.
    single_port: bool = True
    media_port: int = 0
    # Viewers' offers ask for transport feedback on padding probes (media/twcc.py): a probe then ends
    # when its padding starts to queue at the viewer's link, not once the queue overflows.
    probe_feedback: bool = True


def setup(config: MediaConfig) -> list[str]:
    """Process-wide set-up: verify the hooks, announce addresses, count decodes, match codecs without
    deep copies (media/negotiation_hooks.py).

    Returns the host addresses ICE will announce: the configured ones, else every non-loopback
    interface, else 127.0.0.1 (a machine with loopback only can still serve itself).
    """
    aiortc_hooks.check()
    dtls_hooks.check()
    transceiver_hooks.check()
    negotiation_hooks.check()
    description_hooks.check()
    simulcast_hooks.check()
    negotiation_hooks.install()
    addresses = config.ice_addresses or aiortc_hooks.default_host_addresses() or ["127.0.0.1"]
    aiortc_hooks.announce_host_addresses(addresses)
    aiortc_hooks.count_decodes()
    aiortc_hooks.guard_remb_routing()
    if config.single_port:
        problems = ice_hooks.check()
        if problems:
            raise aiortc_hooks.HookMissing("; ".join(problems))
        udpmux.configure(config.media_port)
        ice_hooks.install()
    else:
        ice_hooks.uninstall()
    return addresses


def new_peer_connection(config: MediaConfig) -> RTCPeerConnection:
    # An explicit list, even empty: with None, aiortc 1.16 silently adds a public Google STUN server.
    servers = [
        RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in config.ice_servers
    ]
    # max-bundle: one transport for every m-line from the start. With aiortc's default (balanced),
    # the second and later video transceivers stay bound to a per-kind transport that BUNDLE never
    # connects (rtcpeerconnection.py 1020: already "_bundled"), so their senders never start.
    configuration = RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    # One DTLS certificate per node (media/dtls_hooks.py): no key generation, fingerprint hashing or
    # SSL context per connection; each SDP still carries the fingerprint, each handshake checks the peer.
    return dtls_hooks.with_node_certificate(lambda: RTCPeerConnection(configuration))
