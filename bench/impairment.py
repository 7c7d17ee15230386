"""Viewers' experience under an impaired link (issue 13's table): Chromium viewers and one Chromium
speaker on a node, one viewer impaired with tests/support/impair.py, Chromium's getStats as the referee.

Scenarios (each ``--runs`` times; medians printed per scenario, every run logged to stderr):

- ``cap``: one viewer capped at ``--cap-kbit`` (300) kbit/s with tbf, the others unlimited, for
  ``--cap-s`` seconds: the capped viewer's fps and freezes longer than 1 s after the first 5 s, the
  frame height it decodes and the others' (the layer: one layer until simulcast lands);
- ``lift``: the cap removed: seconds until the capped viewer decodes the others' frame height again
  (for 1 s); with one layer it never left it;
- ``loss``: ``--loss-percent`` (5) % random loss (nftables) on one viewer's port for ``--loss-s``
  seconds: its frames decoded as a share of an unimpaired viewer's, freezes per minute (Chromium's
  freezeCount), NACKs it sent and the node's retransmissions.

Run as root inside a loopback-only network namespace (nftables and tc change the namespace's lo):

    unshare --net sh -c 'ip link set lo up && exec python3 bench/impairment.py --runs 3'
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playwright.async_api import Browser, async_playwright

from tests.conftest import RunningNode, start_node
from tests.e2e.conftest import CHROMIUM, StagePage, chromium_args
from tests.support.impair import loss, rate_cap
from tests.support.referee import delta, sent_frames, video_stats
from tests.support.tokens import bearer

SETTLE_S = 5  # the "after the first 5 s"
FREEZE_S = 1.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def create_stage(node: RunningNode) -> str:
    stage = f"bench-{uuid.uuid4().hex[:8]}"
    request = urllib.request.Request(
        f"{node.url}/api/stages",
        data=json.dumps({"id": stage, "title": "impairment"}).encode(),
        headers={"Content-Type": "application/json", **bearer()},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5):
        return stage


async def open_joined(browser: Browser, node: RunningNode, stage: str, role: str, name: str) -> StagePage:
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    await page.goto(f"{node.url}/s/{stage}?role={role}")
    await page.wait_for_function("window.medstage !== undefined", timeout=10_000)
    stage_page = StagePage(page=page, name=name)
    await stage_page.join()
    return stage_page


class Sampler:
    """Samples every viewer's getStats every 100 ms; gaps between decoded frames are freezes."""

    def __init__(self, viewers: dict[str, StagePage]) -> None:
        self.viewers = viewers
        self.samples: dict[str, list[dict[str, Any]]] = {name: [] for name in viewers}
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            for name, viewer in self.viewers.items():
                stats = await video_stats(viewer.page)
                stats["t"] = now
                self.samples[name].append(stats)
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - now)))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    def window(self, name: str, start: float, end: float) -> list[dict[str, Any]]:
        return [s for s in self.samples[name] if start <= s["t"] <= end]


def long_freezes(samples: list[dict[str, Any]], longer_than: float = FREEZE_S) -> int:
    """Stretches longer than ``longer_than`` in which no frame was decoded (100 ms resolution)."""
    count, last_change = 0, None
    frozen = False
    previous = None
    for s in samples:
        if previous is None or s["framesDecoded"] > previous:
            last_change, frozen = s["t"], False
        elif last_change is not None and not frozen and s["t"] - last_change > longer_than:
            count, frozen = count + 1, True
        previous = s["framesDecoded"]
    return count


def fps(samples: list[dict[str, Any]]) -> float:
    if len(samples) < 2:
        return 0.0
    return (samples[-1]["framesDecoded"] - samples[0]["framesDecoded"]) / (samples[-1]["t"] - samples[0]["t"])


def kbit(samples: list[dict[str, Any]]) -> float:
    if len(samples) < 2:
        return 0.0
    bits = 8 * (samples[-1]["bytesReceived"] - samples[0]["bytesReceived"])
    return bits / 1000 / (samples[-1]["t"] - samples[0]["t"])


def median_height(samples: list[dict[str, Any]]) -> float:
    return statistics.median(s["frameHeight"] for s in samples) if samples else 0.0


# Chromium scales a loaded machine's camera down (CPU adaptation) to 320x180 at ~50 kbit/s, which no
# 300 kbit/s cap touches: keep the resolution (frames are dropped instead) so the stream needs the link.
_KEEP_RESOLUTION = """async () => {
  const pc = window.medstage.publisherPc;
  for (const sender of pc.getSenders()) {
    if (sender.track?.kind !== 'video') continue;
    const params = sender.getParameters();
    params.degradationPreference = 'maintain-resolution';
    await sender.setParameters(params);
  }
}"""


# The speaker's encodings as its Chromium sends them: frames sent per rid (and their height), so a
# viewer's fps can be told from what the publisher sent on the layer it receives.
_SENT_PER_RID = """async () => {
  const out = {};
  (await window.medstage.publisherPc.getStats()).forEach((r) => {
    if (r.type === 'outbound-rtp' && r.kind === 'video') {
      out[r.rid || 'single'] = {framesSent: r.framesSent || 0, frameHeight: r.frameHeight || 0,
                               at: performance.now()};
    }
  });
  return out;
}"""


def sent_fps(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Frames per second each encoding sent between two samples, lowest encoding first."""
    rates = []
    for rid, end in after.items():
        start = before.get(rid)
        if start is not None and end["at"] > start["at"]:
            fps_ = (end["framesSent"] - start["framesSent"]) * 1000 / (end["at"] - start["at"])
            rates.append((end["frameHeight"], fps_))
    return {"low": min(rates)[1], "high": max(rates)[1]} if rates else {"low": 0.0, "high": 0.0}


async def speaker(browser: Browser, node: RunningNode, stage: str, args: argparse.Namespace) -> StagePage:
    host = await open_joined(browser, node, stage, "host", "Speaker")
    await host.go_on_stage()
    if args.keep_resolution:
        await host.page.evaluate(_KEEP_RESOLUTION)
    return host


async def run_cap(browser: Browser, node: RunningNode, args: argparse.Namespace) -> dict[str, float]:
    stage = create_stage(node)
    host = await speaker(browser, node, stage, args)
    viewers = {
        f"v{i}": await open_joined(browser, node, stage, "audience", f"v{i}") for i in range(args.viewers)
    }
    for viewer in viewers.values():
        assert (await viewer.wait_for_media(timeout_s=15, need_audio=False))["videoAt"] is not None
    await asyncio.sleep(2)
    capped = "v0"
    port = (await video_stats(viewers[capped].page))["localPort"]
    sampler = Sampler(viewers)
    sampler.start()
    metrics_before = node.metrics()
    try:
        with rate_cap(port, args.cap_kbit) as cap:
            started = time.monotonic()
            await asyncio.sleep(SETTLE_S)
            sent_before = await host.page.evaluate(_SENT_PER_RID)
            await asyncio.sleep(args.cap_s - SETTLE_S)
            sent_after = await host.page.evaluate(_SENT_PER_RID)
            ended = time.monotonic()
            tbf = cap.stats()
            metrics = node.metrics()
        # Lifted: until the capped viewer decodes the others' frame height (their layer) for a second.
        others_height = max(
            median_height(sampler.window(n, ended - 5, ended)) for n in viewers if n != capped
        )
        back_after = float("nan")
        deadline = ended + args.lift_s
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            recent = sampler.window(capped, max(ended, time.monotonic() - 1), time.monotonic())
            if recent and min(s["frameHeight"] for s in recent) >= others_height:
                back_after = recent[0]["t"] - ended
                break
    finally:
        await sampler.stop()
    after_settle = sampler.window(capped, started + SETTLE_S, ended)
    others = [sampler.window(n, started + SETTLE_S, ended) for n in viewers if n != capped]
    result = {
        "capped_fps": fps(after_settle),
        "capped_video_kbit": kbit(after_settle),
        "others_video_kbit": statistics.median(kbit(o) for o in others),
        "capped_freezes_over_1s": float(long_freezes(after_settle)),
        "capped_height": median_height(after_settle),
        "capped_min_height": float(min((s["frameHeight"] for s in after_settle), default=0)),
        "others_height": statistics.median(median_height(o) for o in others),
        # "others keep the high layer": the lowest any unimpaired viewer decoded in the window
        # (a dip to a lower layer shows here, however short)
        "others_min_height": float(min((s["frameHeight"] for o in others for s in o), default=0)),
        "others_fps": statistics.median(fps(o) for o in others),
        "speaker_low_layer_fps": sent_fps(sent_before, sent_after)["low"],
        "speaker_high_layer_fps": sent_fps(sent_before, sent_after)["high"],
        "tbf_dropped": float(tbf["dropped"]),
        "tbf_kbit": tbf["bytes"] * 8 / 1000 / (ended - started),
        "lift_back_s": back_after,
    }
    # The probes while capped (the capped viewer's: the others are on the top layer), how many rising
    # delay ended before any loss (media/twcc.py), and what was sent again (mostly to the capped one).
    names = ("probes_started", "probes_ended_by_delay", "transport_feedback", "retransmissions")
    for name in (*names, "redundant_copies"):
        key = f"medstage_{name}_total"
        result[name] = metrics.get(key, 0.0) - metrics_before.get(key, 0.0)
    for context in {v.page.context for v in [host, *viewers.values()]}:
        await context.close()
    return result


async def run_loss(browser: Browser, node: RunningNode, args: argparse.Namespace) -> dict[str, float]:
    stage = create_stage(node)
    host = await speaker(browser, node, stage, args)
    lossy = await open_joined(browser, node, stage, "audience", "lossy")
    clean = await open_joined(browser, node, stage, "audience", "clean")
    for viewer in (lossy, clean):
        assert (await viewer.wait_for_media(timeout_s=15, need_audio=False))["videoAt"] is not None
    await asyncio.sleep(2)
    port = (await video_stats(lossy.page))["localPort"]
    before = {"lossy": await video_stats(lossy.page), "clean": await video_stats(clean.page)}
    sent_before, metrics_before = await sent_frames(host.page), node.metrics()
    with loss(port, args.loss_percent) as rule:
        await asyncio.sleep(args.loss_s)
        lossy_d = delta(await video_stats(lossy.page), before["lossy"])
        clean_d = delta(await video_stats(clean.page), before["clean"])
        sent = await sent_frames(host.page) - sent_before
        dropped = rule.dropped()
    metrics = node.metrics()

    def grew(name: str) -> float:
        return metrics[f"medstage_{name}_total"] - metrics_before[f"medstage_{name}_total"]

    result = {
        "decoded_pct_of_clean": 100 * lossy_d["framesDecoded"] / max(1, clean_d["framesDecoded"]),
        "decoded_pct_of_sent": 100 * lossy_d["framesDecoded"] / max(1, sent),
        "freezes_per_min": lossy_d["freezeCount"] * 60 / lossy_d["seconds"],
        "freeze_s_per_min": lossy_d["totalFreezesDuration"] * 60 / lossy_d["seconds"],
        "clean_freezes_per_min": clean_d["freezeCount"] * 60 / clean_d["seconds"],
        "nacks_sent": lossy_d["nackCount"],
        "plis_sent": lossy_d["pliCount"],
        "datagrams_dropped": float(dropped),
        "retransmissions": grew("retransmissions"),
        "retransmissions_suppressed": grew("retransmissions_suppressed"),
        "redundant_copies": grew("redundant_copies"),
        "probes_started": grew("probes_started"),
        "probes_succeeded": grew("probes_succeeded"),
        "lossy_frames_dropped": lossy_d["framesDropped"],
        "lossy_keyframes": lossy_d["keyFramesDecoded"],
        "lossy_height_at_end": lossy_d["frameHeight"],
        "clean_height_at_end": clean_d["frameHeight"],
    }
    for page in (host, lossy, clean):
        await page.page.context.close()
    return result


def report(title: str, runs: list[dict[str, float]]) -> None:
    print(f"\n## {title} ({len(runs)} runs, medians; min-max)")
    for key in runs[0]:
        values = [r[key] for r in runs]
        finite = [v for v in values if v == v]  # NaN: did not happen in that run
        if not finite:
            print(f"  {key:28s} never")
            continue
        med = statistics.median(finite)
        never = f", never in {len(values) - len(finite)}" if len(finite) < len(values) else ""
        print(f"  {key:28s} {med:10.2f}   ({min(finite):.2f}-{max(finite):.2f}{never})")


def camera(tmp: str, args: argparse.Namespace) -> str:
    """A moving test pattern as a Y4M file Chromium's fake camera plays in a loop (4 s)."""
    path = str(Path(tmp) / "camera.y4m")
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={args.clip_size}:rate=30",
         "-t", "4", "-pix_fmt", "yuv420p", path],
        check=True,
    )  # fmt: skip
    return path


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default="cap,loss", help="comma-separated: cap (with lift), loss")
    parser.add_argument("--viewers", type=int, default=3, help="viewers in the cap scenario (one capped)")
    parser.add_argument("--cap-kbit", type=int, default=300)
    parser.add_argument("--cap-s", type=float, default=30)
    parser.add_argument("--lift-s", type=float, default=20, help="how long to wait for the high layer")
    parser.add_argument("--loss-percent", type=int, default=5)
    parser.add_argument("--loss-s", type=float, default=60)
    parser.add_argument("--media-workers", default="2")
    parser.add_argument(
        "--cpu-adaptation",
        dest="keep_resolution",
        action="store_false",
        help="let Chromium scale the speaker's video down when the machine is busy",
    )
    parser.add_argument(
        "--clip-size",
        default="1280x720",
        help="the speaker's camera: ffmpeg's testsrc2 at this size, 30 fps (Chromium's own fake camera "
        "pattern compresses to ~100 kbit/s, under any cap worth measuring); 'fake' for that pattern",
    )
    args = parser.parse_args()
    scenarios: dict[str, Callable[..., Any]] = {"cap": run_cap, "loss": run_loss}
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        node = start_node(Path(tmp), {"MEDSTAGE_MEDIA_WORKERS": args.media_workers})
        try:
            async with async_playwright() as p:
                browser = await p.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=chromium_args()
                )
                for run in range(args.runs):  # interleaved: run 1 of each, then run 2 ...
                    for name in args.scenarios.split(","):
                        result = await scenarios[name](browser, node, args)
                        log(
                            f"{name} run {run + 1}: {json.dumps({k: round(v, 2) for k, v in result.items()})}"
                        )
                        results.setdefault(name, []).append(result)
                await browser.close()
        finally:
            node.stop()
    kept = ", resolution kept" if args.keep_resolution else ""
    print(
        f"camera {args.clip_size}{kept}; media workers {args.media_workers}; cap {args.cap_kbit} kbit/s for "
        f"{args.cap_s:.0f} s ({args.viewers} viewers); loss {args.loss_percent} % for {args.loss_s:.0f} s"
    )
    titles = {"cap": "one viewer capped, then lifted", "loss": f"{args.loss_percent} % loss on one viewer"}
    for name, runs in results.items():
        report(titles[name], runs)


if __name__ == "__main__":
    asyncio.run(main())
