"""Node death under a real browser (issue 5): two nodes on one redis-server; the host's browser is
served through node B while node A hosts the stage; node A is killed (SIGKILL). The page reconnects
by itself through B, B takes the stage over once A's lease runs out, and the host is back as host,
publishing again, and a viewer sees the host's camera again, now forwarded by B."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.conftest import RunningNode, start_node
from tests.e2e.test_reconnect import _REMEMBER_PCS, expect_live_again, identity_script
from tests.support.client import MedstageClient, RequestError
from tests.support.redis_server import RedisServer
from tests.support.tokens import bearer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

LEASE_MS = 2000
FAST = {"MEDSTAGE_LEASE_TTL_MS": str(LEASE_MS), "MEDSTAGE_HEARTBEAT_INTERVAL_MS": "300"}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RunningNode, RunningNode]]:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    env = {"MEDSTAGE_REDIS_URL": redis.url, **FAST}
    nodes: list[RunningNode] = []
    try:
        nodes.append(start_node(tmp_path, env))
        nodes.append(start_node(tmp_path, env))
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            node.stop()
        redis.stop()


@pytest.fixture
def node(pair: tuple[RunningNode, RunningNode]) -> RunningNode:
    """The node the browser talks to (`open_stage` uses it): B, which does not host the stage."""
    return pair[1]


def create_stage(node: RunningNode, stage: str) -> int:
    body = json.dumps({"id": stage}).encode()
    request = urllib.request.Request(
        f"{node.url}/api/stages",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **bearer()},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


async def viewer_on(node: RunningNode, stage: str) -> MedstageClient:
    """An aiortc viewer joined through ``node``, trying again while the stage is being taken over."""
    while True:
        viewer = MedstageClient(node.url)
        await viewer.connect()
        try:
            await viewer.join(stage, "Viewer", "audience")
            return viewer
        except RequestError as exc:
            await viewer.close()
            assert exc.reply["code"] == "stage_unavailable", exc.reply
            await asyncio.sleep(min(exc.reply["retry_after"], 0.5))


async def test_the_host_comes_back_by_itself_when_the_stage_node_dies(open_stage, pair) -> None:
    a, b = pair
    stage = f"fo-{uuid.uuid4().hex[:10]}"
    assert await asyncio.to_thread(create_stage, a, stage) == 201  # node A hosts the stage

    host = await open_stage(stage, "host", "Dr Host", init_script=identity_script("dr-failover-host"))
    page = host.page
    await host.join()
    await host.go_on_stage()
    viewer = await viewer_on(b, stage)
    try:
        await viewer.wait_media(kind="video", keyframe=True, timeout=15)
        assert b.metrics()["medstage_relayed_out"] >= 2  # both are served through node B
    finally:
        await viewer.close()

    await page.evaluate(_REMEMBER_PCS)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    killed = time.monotonic()
    banner = page.get_by_test_id("ended-screen")
    await expect(banner).to_have_attribute("data-reason", "reconnecting", timeout=5000)
    assert await page.evaluate("window.medstage.session.closeCode") == 1012

    await expect_live_again(page, rejoins=1)  # as host, publishing again, on new peer connections
    back_after = time.monotonic() - killed
    print(f"host live again {back_after:.2f} s after node A was killed (lease {LEASE_MS} ms)")
    assert b.metrics()["medstage_stages"] == 1  # node B hosts it now

    viewer = await viewer_on(b, stage)
    try:
        stats = await viewer.wait_media(kind="video", keyframe=True, timeout=15)
        assert stats.frames_complete > 0
    finally:
        await viewer.close()


async def test_a_page_whose_own_node_dies_comes_back_through_another_node(open_stage, pair) -> None:
    """The watcher's page was loaded from node A, which hosts the stage; A is killed. The page cannot
    reach its own node any more: it dials the next node of `joined.nodes` (B), asks B for its token
    (across origins), and is back on the stage with the host's camera and the stage's events."""
    a, b = pair
    stage = f"fo-{uuid.uuid4().hex[:10]}"
    assert await asyncio.to_thread(create_stage, a, stage) == 201  # node A hosts the stage

    host = await open_stage(stage, "host", "Dr Host", init_script=identity_script("dr-own-host"))  # on B
    await host.join()
    await host.go_on_stage()
    watcher = await open_stage(
        stage, "audience", "Watcher", init_script=identity_script("own-node-watcher"), at=a
    )
    page = watcher.page
    tokens: list[tuple[str, int]] = []  # every token request the watcher's page made: (url, status)
    page.on(
        "response",
        lambda response: (
            tokens.append((response.url, response.status))
            if response.url.endswith("/api/dev/token")
            else None
        ),
    )
    await watcher.join()
    assert await page.evaluate("window.medstage.session.url") == a.ws_url
    assert sorted(await page.evaluate("window.medstage.session.nodes")) == sorted([a.url, b.url])
    seen = await watcher.wait_for_video_of(await host.participant_id(), frames=5, timeout_s=15)
    assert seen["ok"], seen
    assert tokens == [(a.url + "/api/dev/token", 200)]

    await page.evaluate(_REMEMBER_PCS)
    await host.page.evaluate(_REMEMBER_PCS)
    watcher.tolerate_node_down()  # its own node: the page's first retry goes there and is refused
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    killed = time.monotonic()
    banner = page.get_by_test_id("ended-screen")
    await expect(banner).to_have_attribute("data-reason", "reconnecting", timeout=5000)

    await page.wait_for_function(
        "window.medstage.state === 'joined' && window.medstage.session.rejoins === 1", timeout=30_000
    )
    back_after = time.monotonic() - killed
    print(f"the page of the dead node is back through node B {back_after:.2f} s after the kill")
    assert await page.evaluate("window.medstage.session.url") == b.ws_url, "it went to the other node"
    await expect(page.get_by_test_id("ended-screen")).to_be_hidden()
    assert (b.url + "/api/dev/token", 200) in tokens, f"its token came from node B: {tokens}"
    assert await page.evaluate("window.medstage.role") == "audience"

    # The host (on B all along) is back too; the watcher gets its camera on a new connection.
    await expect_live_again(host.page, rejoins=1)
    host_id = await host.participant_id()
    seen = await watcher.wait_for_video_of(host_id, frames=5, timeout_s=20)
    assert seen["ok"], seen
    assert await page.evaluate("!Object.values(window.__old).includes(window.medstage.subscriberPc)")
    media = await watcher.inbound()
    assert media["video"]["framesDecoded"] >= 5 and media["audio"]["packetsReceived"] > 0, media

    # Events flow both ways again.
    await host.post_comment("after the failover")
    await page.wait_for_function(
        "window.medstage.model.comments.some((c) => c.text === 'after the failover')", timeout=5000
    )
    await watcher.post_comment("the watcher is back")
    await host.page.wait_for_function(
        "window.medstage.model.comments.some((c) => c.text === 'the watcher is back')", timeout=5000
    )
    # The dead node leaves the list (B's heartbeat no longer sees A).
    await page.wait_for_function(
        f"JSON.stringify(window.medstage.session.nodes) === JSON.stringify([{json.dumps(b.url)}])",
        timeout=10_000,
    )
    assert b.metrics()["medstage_stages"] == 1
