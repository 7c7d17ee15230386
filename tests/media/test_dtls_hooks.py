"""One DTLS certificate per node (media/dtls_hooks.py): the hook still exists, every connection of the
node presents the same fingerprint, and each one still completes, and checks, its own handshake."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCSessionDescription
from aiortc.rtcdtlstransport import SRTP_PROFILES
from OpenSSL import SSL

from media import dtls_hooks
from media.peer import MediaConfig, new_peer_connection
from tests.media.peers import (
    answer,
    connected,
    fingerprints,
    loopback_ice,
    new_subscriber,
    offer,
    viewer_side,
)


def test_the_certificate_hook_still_exists() -> None:
    dtls_hooks.check()


def test_check_fails_loudly_when_aiortc_no_longer_builds_certificates_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiortc.rtcpeerconnection

    monkeypatch.delattr(aiortc.rtcpeerconnection, "RTCCertificate")
    with pytest.raises(dtls_hooks.HookMissing, match="RTCCertificate is gone"):
        dtls_hooks.check()


async def test_every_connection_of_a_node_presents_the_node_certificate() -> None:
    a = new_peer_connection(MediaConfig())
    b = new_peer_connection(MediaConfig())
    try:
        assert dtls_hooks.certificate_of(a) is dtls_hooks.certificate_of(b) is dtls_hooks.node_certificate()
    finally:
        await asyncio.gather(a.close(), b.close())


def test_one_ssl_context_per_profile_list_with_no_session_cache() -> None:
    cert = dtls_hooks.node_certificate()
    ctx = cert._create_ssl_context(SRTP_PROFILES)
    assert cert._create_ssl_context(list(SRTP_PROFILES)) is ctx
    assert cert._create_ssl_context(SRTP_PROFILES[:1]) is not ctx
    # No handshake may resume another connection's session (it would carry no certificate to check).
    assert ctx.get_session_cache_mode() == SSL.SESS_CACHE_OFF


def test_the_node_certificate_is_replaced_after_a_day() -> None:
    first = dtls_hooks.node_certificate()
    assert dtls_hooks.node_certificate(first.created + dtls_hooks.ROTATE_AFTER_S - 1) is first
    # + 1: (created + ROTATE_AFTER_S) - created can round below ROTATE_AFTER_S for some clocks.
    second = dtls_hooks.node_certificate(first.created + dtls_hooks.ROTATE_AFTER_S + 1)
    assert second is not first
    assert second.getFingerprints() != first.getFingerprints()


async def test_two_viewers_see_one_fingerprint_and_both_complete_dtls() -> None:
    with loopback_ice():
        subs = [new_subscriber("a"), new_subscriber("b")]
        clients = [viewer_side(), viewer_side()]
        try:
            offers = [await offer(s) for s in subs]
            prints = [fingerprints(o) for o in offers]
            expected = {f"{f.algorithm} {f.value}" for f in dtls_hooks.node_certificate().getFingerprints()}
            assert prints[0] == prints[1] == expected, prints
            for sub, client, sdp in zip(subs, clients, offers, strict=True):
                await sub.pc.setRemoteDescription(RTCSessionDescription(await answer(client, sdp), "answer"))
            states = await connected(*(s.pc for s in subs), *clients)
            assert states == ["connected"] * 4
            # SRTP keys come from each handshake: the two connections share a certificate, not keys.
            keys = [s.pc.getSenders()[0].transport._tx_srtp for s in subs]
            assert keys[0] is not None and keys[1] is not None and keys[0] is not keys[1]
        finally:
            await asyncio.gather(*(s.pc.close() for s in subs), *(c.close() for c in clients))


async def test_a_viewer_whose_certificate_does_not_match_its_answer_is_refused() -> None:
    """The shared context still verifies each peer against the fingerprint of its own SDP."""
    with loopback_ice():
        sub, client = new_subscriber(), viewer_side()
        try:
            sdp = await answer(client, await offer(sub))
            for genuine in fingerprints(sdp):  # every algorithm's: one matching one would do
                value = genuine.split(" ")[1]
                sdp = sdp.replace(value, value[:-2] + ("00" if value[-2:] != "00" else "11"))
            await sub.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))
            states = await connected(sub.pc)
            assert states == ["failed"]
        finally:
            await asyncio.gather(sub.pc.close(), client.close())
