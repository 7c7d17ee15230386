"""Guard: the aioice internals single-port mode (media/ice_hooks.py) relies on are still there."""

from __future__ import annotations

import aioice.ice
import pytest
from aiortc import RTCPeerConnection

from media import ice_hooks
from media.subscriber import Subscriber


def test_every_aioice_hook_of_single_port_mode_still_exists() -> None:
    assert ice_hooks.check() == []


def test_check_names_a_hook_an_upgrade_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(aioice.ice.StunProtocol, "datagram_received")
    monkeypatch.delattr(aioice.ice.Connection, "get_component_candidates")
    assert ice_hooks.check() == [
        "aioice Connection.get_component_candidates is gone",
        "aioice StunProtocol.datagram_received is gone",
    ]


async def test_install_routes_gathering_and_uninstall_restores_aioice() -> None:
    original = aioice.ice.Connection.get_component_candidates
    try:
        ice_hooks.install()
        ice_hooks.install()  # idempotent
        assert aioice.ice.Connection.get_component_candidates is ice_hooks._get_component_candidates
        ice_hooks.uninstall()
        assert aioice.ice.Connection.get_component_candidates is ice_hooks._original_get_component_candidates
    finally:
        aioice.ice.Connection.get_component_candidates = original  # type: ignore[method-assign]


async def test_every_transport_of_a_subscriber_connection_is_marked_for_the_mux() -> None:
    pc, publisher = RTCPeerConnection(), RTCPeerConnection()
    try:
        Subscriber("viewer", pc, 2)
        assert len(pc.getTransceivers()) == 4
        assert ice_hooks.on_mux(pc)
        publisher.addTransceiver("video", direction="recvonly")
        assert not ice_hooks.on_mux(publisher)  # publishers keep a socket each
    finally:
        await pc.close()
        await publisher.close()
