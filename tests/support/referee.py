"""Chromium's own getStats as the referee of a viewer's experience (tests and bench/impairment.py).

``video_stats(page)``: the subscriber connection's video inbound-rtp counters summed over its slots
(framesDecoded, framesReceived, freezeCount, totalFreezesDuration, nackCount, pliCount, firCount,
jitterBufferDelay and its emitted count, packetsLost/Received, bytesReceived), the largest frameHeight and
framesPerSecond of the moment, and the selected candidate pair's local port (the viewer's own port,
what tests/support/impair.py impairs). ``sent_frames(page)``: a speaker's framesSent (of its busiest
encoding).
"""

from __future__ import annotations

from typing import Any

VIDEO_STATS = """async () => {
  const pc = window.medstage.subscriberPc;
  const out = {framesDecoded: 0, framesReceived: 0, framesDropped: 0, freezeCount: 0,
               totalFreezesDuration: 0, nackCount: 0, pliCount: 0, firCount: 0, jitterBufferDelay: 0,
               jitterBufferEmittedCount: 0, packetsLost: 0, packetsReceived: 0, bytesReceived: 0,
               frameHeight: 0, framesPerSecond: 0, keyFramesDecoded: 0, localPort: null, remotePort: null,
               at: performance.now()};
  if (!pc) return out;
  const stats = await pc.getStats();
  let pairId = null;
  stats.forEach((r) => {
    if (r.type === 'transport' && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId;
    if (r.type !== 'inbound-rtp' || r.kind !== 'video') return;
    for (const key of ['framesDecoded', 'framesReceived', 'framesDropped', 'freezeCount',
                       'totalFreezesDuration', 'nackCount', 'pliCount', 'firCount', 'jitterBufferDelay',
                       'jitterBufferEmittedCount', 'packetsLost', 'packetsReceived', 'bytesReceived',
                       'keyFramesDecoded']) {
      out[key] += r[key] || 0;
    }
    out.frameHeight = Math.max(out.frameHeight, r.frameHeight || 0);
    out.framesPerSecond = Math.max(out.framesPerSecond, r.framesPerSecond || 0);
  });
  const pair = pairId && stats.get(pairId);
  if (pair) {
    out.localPort = stats.get(pair.localCandidateId)?.port ?? null;
    out.remotePort = stats.get(pair.remoteCandidateId)?.port ?? null;
  }
  return out;
}"""

SENT_FRAMES = """async () => {
  const pc = window.medstage.publisherPc;
  let framesSent = 0;
  if (pc) (await pc.getStats()).forEach((r) => {
    // A simulcast camera has one outbound-rtp per encoding, each with the same frames: the most of them.
    if (r.type === 'outbound-rtp' && r.kind === 'video') framesSent = Math.max(framesSent, r.framesSent || 0);
  });
  return framesSent;
}"""


async def video_stats(page: Any) -> dict[str, Any]:
    """``page``: a Playwright Page on the stage page (``window.medstage`` is the client's test hook)."""
    return await page.evaluate(VIDEO_STATS)


async def sent_frames(page: Any) -> int:
    return int(await page.evaluate(SENT_FRAMES))


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, float]:
    """Counters' growth between two samples (gauges such as frameHeight: the later value)."""
    gauges = {"frameHeight", "framesPerSecond", "localPort", "remotePort"}
    out: dict[str, float] = {}
    for key, value in after.items():
        if key in gauges or not isinstance(value, (int, float)):
            out[key] = value
        else:
            out[key] = value - (before.get(key) or 0)
    out["seconds"] = (after["at"] - before["at"]) / 1000
    return out
