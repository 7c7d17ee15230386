"""A viewer's connection without the per-connection weight it never uses: lean receivers on its
send-only transceivers (media/transceiver_hooks.py), no aiortc tasks per sender
(aiortc_hooks.take_over_sender), and a memory ceiling on what a connected viewer holds."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc

import pytest
from aiortc import RTCSessionDescription

from media import transceiver_hooks
from media.transceiver_hooks import LeanSender, SendOnlyReceiver
from tests.media.peers import answer, connected, loopback_ice, new_subscriber, offer, viewer_side
from tests.support.waiting import eventually


def test_the_receiver_hook_still_exists() -> None:
    transceiver_hooks.check()


def test_check_fails_loudly_when_aiortc_no_longer_builds_senders_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiortc.rtcpeerconnection

    monkeypatch.delattr(aiortc.rtcpeerconnection, "RTCRtpSender")
    with pytest.raises(transceiver_hooks.HookMissing, match="RTCRtpSender is gone"):
        transceiver_hooks.check()


def test_check_fails_loudly_when_aiortc_no_longer_builds_receivers_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aiortc.rtcpeerconnection

    monkeypatch.delattr(aiortc.rtcpeerconnection, "RTCRtpReceiver")
    with pytest.raises(transceiver_hooks.HookMissing, match="RTCRtpReceiver is gone"):
        transceiver_hooks.check()


async def test_a_lean_receiver_becomes_a_full_one_when_something_unforeseen_reads_it() -> None:
    sub = new_subscriber(slots=1)
    try:
        receiver = sub.pc.getReceivers()[1]
        assert isinstance(receiver, SendOnlyReceiver) and receiver.lean
        transport = receiver.transport
        assert receiver.getSynchronizationSources() == []  # reads a name the lean one never set
        assert not receiver.lean
        assert receiver.transport is transport and receiver.track is None  # what was set is kept
        assert (await receiver.getStats()) is not None
    finally:
        await sub.pc.close()


async def test_a_lean_sender_becomes_a_full_one_when_something_unforeseen_reads_it() -> None:
    sub = new_subscriber(slots=1)
    try:
        sender = sub.pc.getSenders()[1]
        assert isinstance(sender, LeanSender) and sender.lean
        ssrcs, transport = (sender._ssrc, sender._rtx_ssrc), sender.transport
        assert (await sender.getStats()) is not None  # reads names the lean one never set
        assert not sender.lean
        assert (sender._ssrc, sender._rtx_ssrc) == ssrcs and sender.transport is transport
        assert sender.kind == "video" and sender.track is None
    finally:
        await sub.pc.close()


async def test_a_connected_viewer_keeps_lean_receivers_runs_no_task_per_sender_and_closes() -> None:
    with loopback_ice():
        before = len(asyncio.all_tasks())
        sub, client = new_subscriber(), viewer_side()
        try:
            await sub.pc.setRemoteDescription(
                RTCSessionDescription(await answer(client, await offer(sub)), "answer")
            )
            assert await connected(sub.pc, client) == ["connected", "connected"]
            await eventually(sub.on_connected, 5)  # every sender got its parameters
            receivers = sub.pc.getReceivers()
            assert len(receivers) == 12 and all(isinstance(r, SendOnlyReceiver) and r.lean for r in receivers)
            senders = sub.pc.getSenders()
            assert len(senders) == 12 and all(isinstance(s, LeanSender) and s.lean for s in senders)
            # aiortc's sender would run 2 tasks per sender (24 here); what is left is the connection's
            # own (ICE, DTLS) and the viewer side's.
            assert len(asyncio.all_tasks()) - before < 24
        finally:
            async with asyncio.timeout(5):  # RTCRtpSender.stop() and the lean receivers' stop() complete
                await sub.pc.close()
            await client.close()
        assert sub.pc.connectionState == "closed"


async def test_a_viewer_connection_with_its_offer_holds_under_250_kb() -> None:
    """Python memory a viewer's connection holds once its offer is made (tracemalloc; before the lean
    receivers and the node certificate it was ≈ 890 KB)."""
    with loopback_ice():
        keep = [new_subscriber("warm-up")]
        await offer(keep[0])
        gc.collect()
        tracemalloc.start()
        try:
            start = tracemalloc.take_snapshot()
            for i in range(10):
                keep.append(new_subscriber(f"v{i}"))
                await offer(keep[-1])
            gc.collect()
            grown = sum(d.size_diff for d in tracemalloc.take_snapshot().compare_to(start, "filename"))
        finally:
            tracemalloc.stop()
            await asyncio.gather(*(s.pc.close() for s in keep))
        assert grown / 10 < 250_000, f"{grown / 10 / 1024:.0f} KB per viewer connection"
