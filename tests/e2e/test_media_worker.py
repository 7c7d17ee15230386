"""A media worker dies under a browser audience: the viewer's page is told (4012), comes back by itself
and sees the host again; the host, whose connections live in the node's process, is not disturbed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

MEDIA_LOST = 4012
BACK_WITHIN_S = 5 + 5  # the 5 s, and slack for a machine shared by several test runs


def worker_pids(node) -> list[int]:  # type: ignore[no-untyped-def]
    pid = node.proc.pid
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_a_viewer_whose_media_worker_dies_is_back_with_the_hosts_video_by_itself(
    open_stage, stage, node
):
    host = await open_stage(stage, "host", "Dr Host")
    host_id = await host.join()
    await host.go_on_stage()
    viewer = await open_stage(stage, "audience", "Viewer")
    await viewer.join()
    media = await viewer.wait_for_media(timeout_s=10)
    assert media["videoAt"] is not None, media
    await host.page.evaluate("window.__pub = window.medstage.publisherPc")
    await viewer.page.evaluate("window.__sub = window.medstage.subscriberPc")

    pids = worker_pids(node)
    assert len(pids) == 2, pids
    for pid in pids:  # wherever the viewer's connection is, it is gone
        os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    page = viewer.page
    await page.wait_for_function(
        "window.medstage.state === 'joined' && window.medstage.session.rejoins === 1",
        timeout=BACK_WITHIN_S * 1000,
    )
    assert await page.evaluate("window.medstage.session.closeCode") == MEDIA_LOST
    video = await viewer.wait_for_video_of(host_id, frames=5, timeout_s=BACK_WITHIN_S)
    back = time.monotonic() - killed
    print(f"viewer decoding the host again {back:.2f} s after its worker was killed")
    assert video, video
    assert back < BACK_WITHIN_S + 2
    assert await page.evaluate("window.medstage.subscriberPc !== window.__sub")

    # The host noticed nothing: same socket, same publisher connection, still publishing.
    assert await host.page.evaluate("window.medstage.session.rejoins") == 0
    assert await host.page.evaluate("window.medstage.publisherPc === window.__pub")
    assert await host.page.evaluate("window.medstage.publisherPc.connectionState") == "connected"
    assert not host.unexpected_errors(), host.errors
    assert not viewer.unexpected_errors(), viewer.errors
