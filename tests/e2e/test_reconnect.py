"""Reconnection in a real browser: a node restarts under a live host and the page comes back by itself;
final closes (the stage ended, a removal) never bring it back.

The node here is restartable on a fixed port, so the page's URL stays valid across the restart. With
the in-process backend a restarted node has lost the stage; a host's `join` creates it again, so a
single node is enough to show the host's way back.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import WebSocketRoute, expect

from tests.conftest import ROOT, free_port
from tests.e2e.conftest import join_with_consent

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

BACK_WITHIN_S = 15
RETRY_AFTER_S = 0.5


class RestartableNode:
    """A node process on one fixed port that a test stops (SIGTERM) and starts again, as a restart does."""

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        self.port = free_port()
        self.log_path = tmp_path / f"node-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        env = {
            "MEDSTAGE_RECORDING_MODE": "off",
            **os.environ,
            "MEDSTAGE_ICE_ADDRESSES": "127.0.0.1",
            "MEDSTAGE_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        with open(self.log_path, "ab") as log_file:  # one log across restarts
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"node did not become healthy:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM: the node closes every signalling socket with 1001, then exits."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode


@pytest.fixture
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RestartableNode]:
    """Overrides the shared `node`: `open_stage` and `stage` then use this restartable one
    (parametrize it indirectly with a dict for more environment)."""
    running = RestartableNode(tmp_path, getattr(request, "param", None))
    running.start()
    try:
        yield running
    finally:
        code = running.stop()
        assert code == 0, f"node exited with {code}:\n{running.log()[-4000:]}"


def identity_script(identity: str) -> str:
    """Sets the identity the client keeps in localStorage (app.js, medstage.identity) before it runs."""
    return f"localStorage.setItem('medstage.identity', {json.dumps(identity)})"


def count_sockets(page: Any) -> list[str]:
    """Every signalling WebSocket the page opens from now on (their URLs)."""
    opened: list[str] = []
    page.on("websocket", lambda ws: opened.append(ws.url))
    return opened


async def stop_and_expect_the_banner(page: Any, node: RestartableNode, unreachable: bool = True) -> None:
    """Stop the node (1001 to every socket): the page shows it is reconnecting and keeps trying
    (`unreachable`: a try found nothing listening)."""
    await asyncio.to_thread(node.stop)
    banner = page.get_by_test_id("ended-screen")
    await expect(banner).to_have_attribute("data-reason", "reconnecting", timeout=3000)
    await expect(banner).to_be_visible()
    await expect(page.get_by_test_id("ended-heading")).to_have_text("Reconnecting…")
    await expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "reconnecting")
    assert await page.evaluate("window.medstage.session.closeCode") == 1001
    assert await page.evaluate("window.medstage.state") == "disconnected"
    if unreachable:
        await page.wait_for_function(
            "window.medstage.reconnecting?.error?.code === 'unreachable'", timeout=5000
        )


async def expect_live_again(page: Any, rejoins: int) -> None:
    """Back on the stage by itself: no banner, still host, publishing again on a new connection."""
    await page.wait_for_function(
        f"window.medstage.state === 'joined' && window.medstage.session.rejoins === {rejoins}",
        timeout=BACK_WITHIN_S * 1000,
    )
    await expect(page.get_by_test_id("ended-screen")).to_be_hidden()
    await expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "joined")
    await expect(page.get_by_test_id("role-chip")).to_have_text("You: Host")
    assert await page.evaluate("window.medstage.reconnecting") is None
    await page.wait_for_function(
        "window.medstage.publisherPc?.connectionState === 'connected'"
        " && !Object.values(window.__old).includes(window.medstage.publisherPc)",
        timeout=10_000,
    )
    await expect(page.get_by_test_id("tile-self")).to_be_visible()
    assert await page.evaluate("!Object.values(window.__old).includes(window.medstage.subscriberPc)")
    assert await page.evaluate("Object.values(window.__old).every((pc) => pc.connectionState === 'closed')")


_REMEMBER_PCS = """() => {
  window.__old = window.__old ?? {};
  const n = Object.keys(window.__old).length;
  window.__old[`sub${n}`] = window.medstage.subscriberPc;
  window.__old[`pub${n}`] = window.medstage.publisherPc;
}"""


async def test_after_a_node_restart_the_host_is_live_again_by_itself_with_its_identity_and_camera(
    open_stage, node
):
    stage_id = f"e2e-{uuid.uuid4().hex[:10]}"
    identity = f"host-{uuid.uuid4().hex[:8]}"
    host = await open_stage(stage_id, "host", "Dr Host", init_script=identity_script(identity))
    host.tolerate_unopened_stage(stage_id)  # the host opens it by joining
    host.tolerate_node_down()
    page = host.page
    joins: list[dict] = []  # every join the page sends

    def record(message: str | bytes) -> dict:
        frame = json.loads(message)
        if frame.get("type") == "join":
            joins.append(frame)
        return frame

    page.on("websocket", lambda ws: ws.on("framesent", record))
    await host.join()
    await host.go_on_stage()

    # A: the node restarts (1001, then nothing listens for a while): back by itself, publishing again.
    await page.evaluate(_REMEMBER_PCS)
    await stop_and_expect_the_banner(page, node)
    await asyncio.to_thread(node.start)
    started = time.monotonic()
    await expect_live_again(page, rejoins=1)
    print(f"A: live again {time.monotonic() - started:.2f} s after the node was up")

    # B: another node takes the stage over. Signalling now goes through a route that, meanwhile, answers
    # join itself as such a node does: stage_unavailable with a retry_after. The host had muted the mic.
    await page.get_by_test_id("mic-button").click()
    await expect(page.get_by_test_id("mic-button")).to_have_attribute("aria-pressed", "true")
    refusals: list[float] = []
    refused_twice = asyncio.Event()
    sockets: list[WebSocketRoute] = []
    taking_over = True

    def route(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        if not taking_over:
            server = ws.connect_to_server()  # the server's frames and closes reach the page as they are
            ws.on_message(lambda message: (record(message), server.send(message)))
            return

        def refuse(message: str | bytes) -> None:
            frame = record(message)
            if frame.get("type") != "join":
                return
            refusals.append(time.monotonic())
            if len(refusals) == 2:
                refused_twice.set()
            ws.send(
                json.dumps(
                    {
                        "type": "error",
                        "id": frame["id"],
                        "code": "stage_unavailable",
                        "message": "The stage is moving to another node.",
                        "retry_after": RETRY_AFTER_S,
                    }
                )
            )

        ws.on_message(refuse)

    await page.route_web_socket("**/ws", route)
    await page.evaluate(_REMEMBER_PCS)
    await stop_and_expect_the_banner(page, node, unreachable=False)
    await asyncio.wait_for(refused_twice.wait(), timeout=10)
    gap = refusals[1] - refusals[0]
    assert gap >= RETRY_AFTER_S * 0.9, f"tried again {gap:.3f} s after a retry_after of {RETRY_AFTER_S} s"
    await expect(page.get_by_test_id("ended-screen")).to_have_attribute("data-reason", "reconnecting")
    await expect(page.get_by_test_id("ended-reason")).to_contain_text("moving to another node")
    await asyncio.to_thread(node.start)
    taking_over = False
    await expect_live_again(page, rejoins=2)
    # Published again with the microphone still muted: the track and the server both say so.
    await expect(page.get_by_test_id("mic-button")).to_have_attribute("aria-pressed", "true")
    assert await page.evaluate(
        "window.medstage.session.localStream.getAudioTracks().every((t) => !t.enabled)"
    )
    await page.wait_for_function("window.medstage.session.self?.muted?.audio === true", timeout=3000)

    # C: the stage moves to another node (4010): the page comes back through the same URL.
    await page.evaluate(_REMEMBER_PCS)
    await sockets[-1].close(code=4010, reason="stage moved")
    await expect_live_again(page, rejoins=3)
    assert await page.evaluate("window.medstage.session.closeCode") == 4010

    # Every join (the first and each try to come back) named the same stage, identity, name and role.
    assert len(joins) >= 4 + len(refusals), joins
    fields = {(frame["stage"], frame.get("identity"), frame["name"], frame["role"]) for frame in joins}
    assert fields == {(stage_id, identity, "Dr Host", "host")}, fields

    # Leaving is final (1000): the page does not come back.
    joins_before, sockets_before = len(joins), len(sockets)
    await page.get_by_test_id("leave-button").click()
    await expect(page.get_by_test_id("ended-screen")).to_have_attribute("data-reason", "left")
    await asyncio.sleep(1.5)  # three times the first backoff: a reconnection would have started
    assert await page.evaluate("window.medstage.state") == "left"
    assert await page.evaluate("window.medstage.reconnecting") is None
    assert (len(joins), len(sockets)) == (joins_before, sockets_before), "a socket was opened after leaving"


@pytest.mark.parametrize("node", [{"MEDSTAGE_RECORDING_MODE": "manual"}], indirect=True)
async def test_a_speaker_who_decided_about_recording_is_not_asked_again_after_a_service_restart(
    open_stage, stage, tmp_path
):
    speaker = await open_stage(stage, "speaker", "Dr Speaker")
    page = speaker.page
    sockets: list[WebSocketRoute] = []

    def route(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        ws.connect_to_server()

    await page.route_web_socket("**/ws", route)
    await join_with_consent(speaker, ["media"])
    await speaker.go_on_stage()
    first = await page.evaluate("window.medstage.consent.mine")

    # The node that relays this connection restarts (1012); the stage and its consent records live on.
    await page.evaluate("window.__old = {pub: window.medstage.publisherPc}")
    await sockets[-1].close(code=1012, reason="service restart")
    await page.wait_for_function(
        "window.medstage.state === 'joined' && window.medstage.session.rejoins === 1",
        timeout=BACK_WITHIN_S * 1000,
    )
    # The new `joined` says the speaker decided under the current policy: no prompt, same decision.
    mine = await page.evaluate("window.medstage.consent.mine")
    assert mine is not None, first
    assert (mine["scopes"], mine["decision"], mine["at"]) == (["media"], "granted", first["at"]), (
        first,
        mine,
    )
    await expect(page.get_by_test_id("consent-dialog")).to_have_count(0)
    assert await page.evaluate("window.medstage.role") == "speaker"
    await page.wait_for_function(
        "window.medstage.publisherPc?.connectionState === 'connected'"
        " && window.medstage.publisherPc !== window.__old.pub",
        timeout=10_000,
    )
    await expect(page.get_by_test_id("consent-dialog")).to_have_count(0)
    assert len(sockets) == 2


async def test_a_stage_that_ends_or_a_removal_closes_for_good_without_reconnecting(open_stage, stage):
    host = await open_stage(stage, "host", "Dr Host")
    await host.join()
    removed = await open_stage(stage, "audience", "Off topic")
    stays = await open_stage(stage, "audience", "Attentive")
    removed_id, _ = await asyncio.gather(removed.join(), stays.join())
    sockets = {page.name: count_sockets(page.page) for page in (removed, stays)}

    await host.moderate(removed_id, "remove")
    await host.page.get_by_test_id("remove-dialog-input").fill("Please stay on topic")
    await host.page.get_by_test_id("remove-dialog-confirm").click()
    await expect(removed.page.get_by_test_id("ended-screen")).to_have_attribute("data-reason", "removed")

    await host.open_tab("people")
    await host.page.get_by_test_id("stage-end").click()
    await host.page.get_by_test_id("end-dialog-confirm").click()
    await expect(stays.page.get_by_test_id("ended-screen")).to_have_attribute("data-reason", "ended")

    await asyncio.sleep(1.5)  # three times the first backoff: a reconnection would have started
    for page, code, state in ((removed, 4003, "ended"), (stays, 1000, "ended")):
        assert await page.page.evaluate("window.medstage.session.closeCode") == code, page.name
        assert await page.page.evaluate("window.medstage.state") == state, page.name
        assert await page.page.evaluate("window.medstage.reconnecting") is None, page.name
        assert sockets[page.name] == [], f"{page.name} opened {sockets[page.name]}"
        await expect(page.page.get_by_test_id("connection-status")).not_to_have_attribute(
            "data-state", "reconnecting"
        )


# The client's own rules (reconnect.js), run in the page: which closes come back, and how soon.
_POLICY = """async () => {
  const { Backoff, afterFailure, reconnects } = await import('/static/reconnect.js');
  const codes = [1000, 1001, 1006, 1008, 1009, 1011, 1012, 1013, 4003, 4004, 4010];
  const high = new Backoff({ random: () => 1 });
  const low = new Backoff({ random: () => 0 });
  return {
    reconnects: Object.fromEntries(codes.map((code) => [code, reconnects(code)])),
    high: Array.from({ length: 7 }, () => high.next()),
    low: Array.from({ length: 7 }, () => low.next()),
    retryAfter: afterFailure({ code: 'stage_unavailable', retryAfter: 2.5 }, 1013, low),
    banned: afterFailure({ code: 'banned' }, null, low),
    ended: afterFailure({ code: 'stage_ended' }, null, low),
    closed: afterFailure({ code: 'disconnected' }, 1000, low),
    unreachable: afterFailure({ code: 'unreachable' }, null, new Backoff({ random: () => 0 })),
  };
}"""


async def test_only_a_node_or_network_failure_reconnects_with_backoff_from_half_a_second_to_eight(
    open_stage,
):
    page = await open_stage("any-stage", "audience", "Viewer")
    page.tolerate_unopened_stage("any-stage")  # only the page's reconnect policy is under test
    policy = await page.page.evaluate(_POLICY)
    assert {int(code) for code, again in policy["reconnects"].items() if again} == {
        1001,
        1006,
        1011,
        1012,
        1013,
        4010,
    }
    assert policy["high"] == [500, 1000, 2000, 4000, 8000, 8000, 8000]
    assert policy["low"] == [250, 500, 1000, 2000, 4000, 4000, 4000]
    assert policy["retryAfter"] == {"wait": 2500}
    assert policy["banned"] == {"final": "banned"} and policy["ended"] == {"final": "ended"}
    assert policy["closed"] == {"final": "closed"}
    assert policy["unreachable"] == {"wait": 250}
