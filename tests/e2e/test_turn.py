"""TURN end to end: Debian's coturn on 127.0.0.1 with the shared-secret scheme, the node handing each
participant its own credential in `joined` (server/turn.py), and Chromium forced to relay
(`iceTransportPolicy: "relay"`): media flows through coturn, over UDP and over TCP with UDP to coturn
blocked by nftables; with a credential coturn does not accept there is no relay candidate and no
media."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningNode, start_node
from tests.support.coturn import SECRET, Coturn, coturn

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

# The transport of each connection's selected pair, its local candidate (type, relayProtocol) and
# every local candidate type gathered, with the video frames decoded (inbound) or sent (outbound).
_ICE = """async (pcName) => {
  const pc = window.medstage[pcName];
  if (!pc) return null;
  const stats = await pc.getStats();
  let pairId = null, framesDecoded = 0, framesSent = 0;
  const localTypes = [];
  stats.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
    if (r.type === 'local-candidate') localTypes.push(r.candidateType);
    if (r.type === 'inbound-rtp' && r.kind === 'video') framesDecoded += r.framesDecoded || 0;
    if (r.type === 'outbound-rtp' && r.kind === 'video') framesSent += r.framesSent || 0;
  });
  const pair = pairId && stats.get(pairId);
  const local = pair ? stats.get(pair.localCandidateId) : null;
  return {policy: pc.getConfiguration().iceTransportPolicy, state: pc.connectionState,
          localType: local?.candidateType ?? null, relayProtocol: local?.relayProtocol ?? null,
          localTypes, framesDecoded, framesSent};
}"""


def _turn_env(server: Coturn, transports: tuple[str, ...], secret: str) -> dict[str, str]:
    return {
        "MEDSTAGE_TURN_URLS": ",".join(server.url(t) for t in transports),
        "MEDSTAGE_TURN_SECRET": secret,
        "MEDSTAGE_ICE_TRANSPORT_POLICY": "relay",
    }


@pytest.fixture
def turn(tmp_path: Path) -> Iterator[Coturn]:
    with coturn(tmp_path) as server:
        yield server
        print(f"--- coturn log ---\n{server.log()[-4000:]}")


@pytest.fixture
def node(request: pytest.FixtureRequest, tmp_path: Path, turn: Coturn) -> Iterator[RunningNode]:
    """The node of this module's tests: its TURN settings from the test's ``turn_setup`` marker
    (transports of the URLs it hands out, and the secret: coturn's unless the test says otherwise)."""
    marker = request.node.get_closest_marker("turn_setup")
    transports, secret = marker.args if marker else (("udp",), SECRET)
    running = start_node(tmp_path, _turn_env(turn, transports, secret))
    try:
        yield running
    finally:
        assert running.stop() == 0


@pytest.fixture
def udp_to_coturn_blocked(turn: Coturn) -> Iterator[None]:
    """nftables drops every UDP datagram to coturn's listening port (a network that blocks UDP)."""
    table = "medstage_turn_block"
    rules = (
        f"add table inet {table}\n"
        f"add chain inet {table} out {{ type filter hook output priority 0; }}\n"
        f"add rule inet {table} out udp dport {turn.port} counter drop\n"
    )
    subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=True)


async def _speaker_and_viewer(open_stage: Any, stage: str) -> tuple[Any, Any]:
    host = await open_stage(stage, "host", "Dr Host")
    await host.join()
    await host.go_on_stage()
    viewer = await open_stage(stage, "audience", "Viewer")
    await viewer.join()
    return host, viewer


async def _ice(page: Any, pc: str) -> dict[str, Any]:
    return await page.page.evaluate(_ICE, pc)


@pytest.mark.turn_setup(("udp",), SECRET)
async def test_speaker_and_viewer_forced_to_relay_get_media_through_coturn_over_udp(
    open_stage: Any, stage: str, turn: Coturn
) -> None:
    host, viewer = await _speaker_and_viewer(open_stage, stage)
    media = await viewer.wait_for_media(timeout_s=15)
    assert media["videoAt"] is not None, media
    sent = await _ice(host, "publisherPc")
    received = await _ice(viewer, "subscriberPc")
    for ice in (sent, received):
        assert ice["policy"] == "relay" and ice["state"] == "connected", ice
        assert ice["localType"] == "relay" and ice["relayProtocol"] == "udp", ice
        assert set(ice["localTypes"]) == {"relay"}, ice
    assert sent["framesSent"] > 0 and received["framesDecoded"] > 0
    assert "ALLOCATE processed, success" in turn.log()


@pytest.mark.turn_setup(("tcp",), SECRET)
async def test_turn_over_tcp_when_udp_to_the_turn_server_is_blocked(
    open_stage: Any, stage: str, turn: Coturn, udp_to_coturn_blocked: None
) -> None:
    host, viewer = await _speaker_and_viewer(open_stage, stage)
    media = await viewer.wait_for_media(timeout_s=15)
    assert media["videoAt"] is not None, media
    for ice in (await _ice(host, "publisherPc"), await _ice(viewer, "subscriberPc")):
        assert ice["localType"] == "relay" and ice["relayProtocol"] == "tcp", ice
    decoded = (await _ice(viewer, "subscriberPc"))["framesDecoded"]
    await asyncio.sleep(1)
    assert (await _ice(viewer, "subscriberPc"))["framesDecoded"] > decoded, "still flowing"


@pytest.mark.turn_setup(("udp", "tcp"), "not-the-secret-coturn-was-given")
async def test_a_credential_coturn_refuses_gives_no_relay_candidate_and_no_media(
    open_stage: Any, stage: str, turn: Coturn
) -> None:
    host = await open_stage(stage, "host", "Dr Host")
    await host.join()
    await host.page.get_by_test_id("publish-button").click()
    viewer = await open_stage(stage, "audience", "Viewer")
    await viewer.join()
    media = await viewer.wait_for_media(timeout_s=6, need_audio=False)
    assert media["videoAt"] is None and media["video"] == 0, media
    for page, pc in ((host, "publisherPc"), (viewer, "subscriberPc")):
        ice = await _ice(page, pc)
        assert ice is not None and "relay" not in ice["localTypes"] and ice["localType"] is None, ice
        assert ice["policy"] == "relay" and ice["state"] != "connected", ice
    assert "Cannot find credentials of user" in turn.log(), "coturn refused them"
