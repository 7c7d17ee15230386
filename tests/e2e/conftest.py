"""Fixtures for end-to-end tests: a medstage node and Debian's Chromium driven by Playwright.

Run inside a loopback-only network namespace so no packet can leave the machine:
    unshare --net sh -c 'ip link set lo up && exec python -m pytest tests/e2e -x -q'
"""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import playwright
import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright, expect

from tests.support.tokens import bearer

CHROMIUM = "/usr/bin/chromium"


def playwright_disabled_features() -> list[str]:
    """The features Playwright disables with its own ``--disable-features`` switch.

    Chromium keeps only the last ``--disable-features``, so ours must repeat Playwright's list.
    Read from the installed driver (``chromiumSwitches``), so an upgrade cannot silently drop one.
    """
    lib = Path(playwright.__file__).parent / "driver" / "package" / "lib"
    candidates = [lib / "server" / "chromium" / "chromiumSwitches.js", lib / "coreBundle.js"]
    for path in candidates:
        if not path.is_file():
            continue
        match = re.search(r"disabledFeatures\s*=\s*\[(.*?)\]", path.read_text(encoding="utf-8"), re.S)
        if match:
            body = re.sub(r"//[^\n]*", "", match.group(1))
            names = re.findall(r"[\"']([A-Za-z0-9_]+)[\"']", body)
            if names:
                return names
    raise RuntimeError(f"Playwright's disabledFeatures list not found under {lib}: update this reader")


def chromium_args() -> list[str]:
    """Flags for WebRTC between Debian's Chromium (fake camera and microphone) and a node on 127.0.0.1."""
    return [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        # getDisplayMedia picks the (fake, 1280x720) screen without asking: screen sharing tests.
        "--auto-select-desktop-capture-source=Entire screen",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        # Without it Chromium gathers no 127.0.0.1 candidate and ICE never completes.
        "--allow-loopback-in-peer-connection",
        # No DNS leaves the machine, even outside a network namespace.
        "--host-resolver-rules=MAP * 127.0.0.1",
        "--disable-features=" + ",".join(["WebRtcHideLocalIpsWithMdns", *playwright_disabled_features()]),
    ]


# --- the browser -------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium for the session; each participant gets its own context."""
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args())
        try:
            yield launched
        finally:
            await launched.close()


# In-page JavaScript run through page.evaluate. `medstage` is the client's test hook (app.js).

# Sums inbound-rtp counters of one connection: all slots of a subscriber connection count.
_INBOUND = """async (pcName) => {
  const pc = window.medstage[pcName];
  const totals = {video: {framesDecoded: 0, packetsReceived: 0}, audio: {packetsReceived: 0}};
  if (!pc) return totals;
  (await pc.getStats()).forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    if (r.kind === 'video') {
      totals.video.framesDecoded += r.framesDecoded || 0;
      totals.video.packetsReceived += r.packetsReceived || 0;
    } else if (r.kind === 'audio') {
      totals.audio.packetsReceived += r.packetsReceived || 0;
    }
  });
  return totals;
}"""

# Polls every 100 ms until the subscriber connection has decoded video (and, if asked, received
# audio); returns when that was first seen, in the page's performance.now() clock, or null.
_WAIT_FOR_MEDIA = """async ({timeoutMs, needAudio}) => {
  const deadline = performance.now() + timeoutMs;
  const sample = async () => {
    const pc = window.medstage.subscriberPc;
    if (!pc) return {video: 0, audio: 0};
    let video = 0, audio = 0;
    (await pc.getStats()).forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      if (r.kind === 'video') video += r.framesDecoded || 0;
      if (r.kind === 'audio') audio += r.packetsReceived || 0;
    });
    return {video, audio};
  };
  let videoAt = null;
  for (;;) {
    const now = performance.now();
    const {video, audio} = await sample();
    if (video > 0 && videoAt === null) videoAt = now;
    if (videoAt !== null && (!needAudio || audio > 0)) return {videoAt, video, audio};
    if (now > deadline) return {videoAt: null, video, audio};
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}"""

# Polls every 100 ms until `count` video transceivers (mids) of the subscriber connection have decoded
# at least `frames` frames more than they had when called; returns framesDecoded per mid.
_WAIT_FOR_VIDEO_STREAMS = """async ({count, frames, timeoutMs}) => {
  const deadline = performance.now() + timeoutMs;
  const sample = async () => {
    const decoded = {};
    const pc = window.medstage.subscriberPc;
    if (!pc) return decoded;
    (await pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') decoded[r.mid] = r.framesDecoded || 0;
    });
    return decoded;
  };
  const base = await sample();
  for (;;) {
    const decoded = await sample();
    const moving = Object.keys(decoded).filter((mid) => decoded[mid] - (base[mid] || 0) >= frames);
    if (moving.length >= count) return {ok: true, base, decoded};
    if (performance.now() > deadline) return {ok: false, base, decoded};
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}"""

_SELECTED_PAIR = """async (pcName) => {
  const pc = window.medstage[pcName];
  if (!pc) return null;
  const stats = await pc.getStats();
  let pairId = null;
  stats.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
  });
  const pair = pairId && stats.get(pairId);
  if (!pair) return null;
  const local = stats.get(pair.localCandidateId) || {};
  const remote = stats.get(pair.remoteCandidateId) || {};
  return {state: pair.state, protocol: local.protocol,
          local: local.address ?? local.ip ?? null, remote: remote.address ?? remote.ip ?? null,
          localType: local.candidateType, remoteType: remote.candidateType};
}"""


# The slot that carries one participant's video (from the client's slot.assigned bookkeeping) and the
# frames decoded on its transceiver.
_VIDEO_OF = """async (participantId) => {
  const slot = window.medstage.slots.find((s) => s.participantId === participantId && s.kind === 'video');
  const pc = window.medstage.subscriberPc;
  if (!slot || !pc) return null;
  let framesDecoded = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'video' && String(r.mid) === String(slot.mid)) {
      framesDecoded = r.framesDecoded || 0;
    }
  });
  return {slot: slot.slot, mid: slot.mid, framesDecoded};
}"""

_WAIT_FOR_VIDEO_OF = """async ({participantId, frames, timeoutMs}) => {
  const deadline = performance.now() + timeoutMs;
  let last = null;
  for (;;) {
    const slot = window.medstage.slots.find((s) => s.participantId === participantId && s.kind === 'video');
    const pc = window.medstage.subscriberPc;
    if (slot && pc) {
      let framesDecoded = 0;
      (await pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'video' && String(r.mid) === String(slot.mid)) {
      framesDecoded = r.framesDecoded || 0;
    }
      });
      last = {slot: slot.slot, mid: slot.mid, framesDecoded};
      if (framesDecoded >= frames) return {ok: true, ...last};
    }
    if (performance.now() > deadline) return {ok: false, last};
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}"""


# What a page reports while its node is down: the signalling socket (opened in signalling.js) and the
# development-token request refused.
_REFUSED = (
    r"(net::ERR_CONNECTION_REFUSED @ \S+/(static/signalling\.js|api/dev/token)"
    r"|request failed: POST \S+/api/dev/token: net::ERR_CONNECTION_REFUSED)$"
)


@dataclass
class StagePage:
    """One participant's browser tab on a stage page, driven through the client's UI."""

    page: Page
    name: str
    log: list[str] = field(default_factory=list)
    # Console errors, failed requests and uncaught exceptions: each fails the test (`check_errors`)
    # unless the test tolerates it by name (`tolerate`).
    errors: list[str] = field(default_factory=list)
    tolerated: list[tuple[re.Pattern[str], str]] = field(default_factory=list)

    def tolerate(self, pattern: str, why: str) -> None:
        """Let the errors that match `pattern` (re.search) pass: the test causes them on purpose, `why`."""
        self.tolerated.append((re.compile(pattern), why))

    def tolerate_node_down(self) -> None:
        """The test stops the page's node on purpose: its socket and token requests are refused."""
        self.tolerate(_REFUSED, "the test stops the node; the page retries its socket and token requests")

    def tolerate_unopened_stage(self, stage: str) -> None:
        """The page reads a stage nobody opened yet (404): its host opens it by joining, or it is missing."""
        missing = rf"status of 404 \(Not Found\) @ \S+/api/stages/{re.escape(stage)}$"
        self.tolerate(missing, "no such stage yet")

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p, _ in self.tolerated)]

    async def join(self) -> str:
        """Fill the join form, click Join, wait for `joined`; returns our participant id."""
        await self.page.get_by_test_id("join-name").fill(self.name)
        await self.page.get_by_test_id("join-button").click()
        await self.page.wait_for_function("window.medstage.state === 'joined'", timeout=10_000)
        return await self.participant_id()

    async def participant_id(self) -> str:
        return await self.page.evaluate("window.medstage.participantId")

    async def go_on_stage(self) -> None:
        """Click "Go on stage" and wait until the publisher connection is connected."""
        await self.page.get_by_test_id("publish-button").click()
        await self.page.wait_for_function(
            "window.medstage.publisherPc && window.medstage.publisherPc.connectionState === 'connected'",
            timeout=10_000,
        )

    async def wait_for_media(self, timeout_s: float = 10, need_audio: bool = True) -> dict:
        """Poll getStats every 100 ms until video frames are decoded (and audio packets received)."""
        return await self.page.evaluate(
            _WAIT_FOR_MEDIA, {"timeoutMs": timeout_s * 1000, "needAudio": need_audio}
        )

    async def wait_for_video_streams(self, count: int, frames: int = 1, timeout_s: float = 5) -> dict:
        """Poll until `count` slots decode `frames` new video frames; {ok, base, decoded per mid}."""
        return await self.page.evaluate(
            _WAIT_FOR_VIDEO_STREAMS, {"count": count, "frames": frames, "timeoutMs": timeout_s * 1000}
        )

    async def inbound(self, pc: str = "subscriberPc") -> dict:
        return await self.page.evaluate(_INBOUND, pc)

    async def selected_pair(self, pc: str) -> dict | None:
        return await self.page.evaluate(_SELECTED_PAIR, pc)

    async def marks(self) -> dict[str, float]:
        return await self.page.evaluate("({...window.medstage.marks})")

    def tile_of(self, participant_id: str) -> str:
        return f'[data-testid="tile"][data-participant-id="{participant_id}"]'

    def person(self, participant_id: str) -> Locator:
        """The participant's row in the People tab."""
        return self.page.locator(f'[data-testid="participant"][data-participant-id="{participant_id}"]')

    async def open_tab(self, name: str) -> None:
        """Show one of the sidebar tabs: people, chat, qa, polls."""
        await self.page.get_by_test_id(f"tab-{name}").click()
        await expect(self.page.get_by_test_id(f"panel-{name}")).to_be_visible()

    async def open_menu(self, participant_id: str) -> Locator:
        """Open the participant's action menu in the People tab; returns the menu."""
        await self.open_tab("people")
        await self.person(participant_id).get_by_test_id("participant-menu-button").click()
        menu = self.page.get_by_test_id("participant-menu")
        await expect(menu).to_be_visible()
        return menu

    async def moderate(self, participant_id: str, action: str) -> None:
        """Pick `action` (e.g. "invite", "demote", "ban") in the participant's menu."""
        menu = await self.open_menu(participant_id)
        await menu.get_by_test_id(f"action-{action}").click()

    async def video_of(self, participant_id: str) -> dict | None:
        """The subscriber slot carrying `participant_id`'s video and its framesDecoded, or None."""
        return await self.page.evaluate(_VIDEO_OF, participant_id)

    async def wait_for_video_of(self, participant_id: str, frames: int = 1, timeout_s: float = 8) -> dict:
        """Poll until the slot assigned to `participant_id`'s video has decoded `frames` frames."""
        return await self.page.evaluate(
            _WAIT_FOR_VIDEO_OF,
            {"participantId": participant_id, "frames": frames, "timeoutMs": timeout_s * 1000},
        )

    async def post_comment(self, text: str) -> None:
        await self.open_tab("chat")
        await self.page.get_by_test_id("comment-input").fill(text)
        await self.page.get_by_test_id("comment-send").click()
        await expect(self.page.get_by_test_id("comment-input")).to_have_value("")


@pytest_asyncio.fixture(loop_scope="session")
async def open_stage(browser: Browser, node: Any) -> AsyncIterator[Callable[..., Awaitable[StagePage]]]:
    """Factory: a fresh browser context with a stage page loaded (not yet joined).

    `node` is the shared fixture of tests/conftest.py (a real node on 127.0.0.1).
    """
    contexts: list[BrowserContext] = []
    pages: list[StagePage] = []

    async def open_page(
        stage: str,
        role: str,
        name: str,
        init_script: str | None = None,
        at: Any = None,
        camera: str = "360p",
        query: str = "",
    ) -> StagePage:
        """``at``: the node that serves the page (default ``node``). ``camera``: the capture size the
        page asks for, 360p unless a test needs 720p (three simulcast layers of 720p per speaker
        would take most of the 2 cores the suite runs on). ``query``: more page parameters
        (``simulcast=0``...)."""
        context = await browser.new_context(viewport={"width": 1280, "height": 720})
        contexts.append(context)
        if init_script:
            await context.add_init_script(init_script)
        page = await context.new_page()
        stage_page = watch(page, name)
        extra = f"&{query}" if query else ""
        await page.goto(f"{(at or node).url}/s/{stage}?role={role}&camera={camera}{extra}")
        await page.wait_for_function("window.medstage !== undefined", timeout=10_000)
        pages.append(stage_page)
        return stage_page

    yield open_page

    for stage_page in pages:
        print(f"--- {stage_page.name} ---")
        print("\n".join(stage_page.log[-80:]))
    print(f"--- node log ---\n{node.log()[-6000:]}")
    unexpected = unexpected_errors(pages)  # before closing: closing aborts what is still loading
    for context in contexts:
        await context.close()
    check_errors(unexpected)


def watch(page: Page, name: str) -> StagePage:
    """Log what a page says and sends, and collect its errors: every console error (a failed HTTP
    request logs one too), every request that failed (refused, reset, aborted) and every uncaught
    exception."""
    stage_page = StagePage(page=page, name=name)

    def on_console(msg: Any) -> None:
        stage_page.log.append(f"[{msg.type}] {msg.text}")
        if msg.type == "error":
            where = (msg.location or {}).get("url", "")
            stage_page.errors.append(f"console error: {msg.text} @ {where}")

    def on_request_failed(request: Any) -> None:
        stage_page.errors.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def on_page_error(exc: Any) -> None:
        stage_page.log.append(f"[pageerror] {exc}")
        stage_page.errors.append(f"uncaught exception: {exc}")

    page.on("console", on_console)
    page.on("requestfailed", on_request_failed)
    page.on("pageerror", on_page_error)
    page.on("websocket", lambda ws: _log_frames(ws, stage_page.log))
    return stage_page


def unexpected_errors(pages: list[StagePage]) -> list[str]:
    return [f"{p.name}: {e}" for p in pages for e in p.unexpected_errors()]


def check_errors(unexpected: list[str]) -> None:
    """A page's error is a bug even when the test's assertions held (issue 11, item 9)."""
    assert not unexpected, "errors in the pages (tolerate one in its test, saying why):\n" + "\n".join(
        unexpected
    )


def _log_frames(ws, log: list[str]) -> None:
    def short(payload: object) -> str:
        text = payload if isinstance(payload, str) else f"<{len(payload)} bytes>"  # type: ignore[arg-type]
        return text if len(text) < 300 else text[:300] + "…"

    ws.on("framesent", lambda payload: log.append(f"[ws →] {short(payload)}"))
    ws.on("framereceived", lambda payload: log.append(f"[ws ←] {short(payload)}"))
    ws.on("close", lambda _ws: log.append("[ws] closed"))


@pytest.fixture
def stage(node: Any) -> str:
    """A fresh stage created over HTTP (`POST /api/stages`); its id."""
    stage_id = f"e2e-{uuid.uuid4().hex[:10]}"
    request = urllib.request.Request(
        f"{node.url}/api/stages",
        data=json.dumps({"id": stage_id, "title": "E2E grand rounds"}).encode(),
        headers={"Content-Type": "application/json", **bearer()},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201, response.status
        return json.loads(response.read())["id"]


# --- consent and recording (issue 4) -----------------------------------------------------------

CONSENT_SCOPES = ("media", "comments", "share")

# Polls window.medstage.events (app.js pushes every consent.* and recording.* frame there) until one
# of `type` matches every field of `match` (nested in `record` for consent.recorded); returns it.
_WAIT_FOR_EVENT = """async ({type, match, timeoutMs}) => {
  const deadline = performance.now() + timeoutMs;
  const fits = (event) => {
    if (event.type !== type) return false;
    const subject = event.record ?? event;
    const same = ([key, value]) => JSON.stringify(subject[key]) === JSON.stringify(value);
    return Object.entries(match).every(same);
  };
  for (;;) {
    const found = window.medstage.events.find(fits);
    if (found) return found;
    if (performance.now() > deadline) return null;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}"""


async def wait_for_event(
    stage_page: StagePage, type_: str, timeout_s: float = 5, **match: Any
) -> dict[str, Any]:
    """The first `type_` event (a frame the page received) whose fields equal `match`; fails if none."""
    event = await stage_page.page.evaluate(
        _WAIT_FOR_EVENT, {"type": type_, "match": match, "timeoutMs": timeout_s * 1000}
    )
    assert event is not None, f"{stage_page.name}: no {type_} with {match} in {timeout_s} s"
    return event


async def answer_consent(stage_page: StagePage, scopes: tuple[str, ...] | list[str] = CONSENT_SCOPES) -> dict:
    """Answer the open consent prompt through its UI (no scope: "Decline all"); returns the
    ``consent.recorded`` record the server sent back about this person."""
    dialog = stage_page.page.get_by_test_id("consent-dialog")
    await expect(dialog).to_be_visible(timeout=5000)
    method = await dialog.get_attribute("data-method")
    for scope in scopes:
        await dialog.get_by_test_id(f"consent-scope-{scope}").check()
    await dialog.get_by_test_id("consent-agree" if scopes else "consent-decline").click()
    await expect(dialog).to_have_count(0)
    event = await wait_for_event(
        stage_page,
        "consent.recorded",
        participant_id=await stage_page.participant_id(),
        method=method,
        scopes=sorted(scopes),
    )
    return event["record"]


async def join_with_consent(
    stage_page: StagePage, scopes: tuple[str, ...] | list[str] = CONSENT_SCOPES
) -> str:
    """Join a stage that may record and answer the consent prompt; returns our participant id."""
    participant_id = await stage_page.join()
    await answer_consent(stage_page, scopes)
    return participant_id
