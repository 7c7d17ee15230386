"""The composite export over HTTP (issue 14): who may start and follow it, 202 and the same job when
asked twice, the child process that makes the file, the signed ``recording.exported`` webhook, 200
when already up to date, and a full queue refused with a problem document."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import aiohttp

from server.host.webhooks import verify
from tests.server.test_webhooks import Received, Receiver, answers
from tests.support.inprocess import serve
from tests.support.session_maker import Capture, Speaker, make_session
from tests.support.tokens import bearer, token
from tests.support.waiting import eventually

SECRET = "webhook-secret-for-the-export-test"


def _session(root: Path, stage: str, seconds: float = 3.0) -> str:
    session_id = "20261203T090000Z-" + uuid.uuid4().hex[:4]
    speakers = [
        Speaker("p-a", (200, 30, 30), captures=[Capture(0.0, seconds)], beeps=[1.0]),
        Speaker("p-b", (30, 200, 30), captures=[Capture(0.5, seconds)], share=False),
    ]
    make_session(root / stage / session_id, speakers, session_id)
    return session_id


async def _exported(receiver: Receiver) -> list[Received]:
    """The ``recording.exported`` webhooks received once the first one is there (others pass by)."""
    async with asyncio.timeout(60):
        count = 1
        while True:
            got = await receiver.wait_for(count, timeout=60)
            hits = [r for r in got if r.event["type"] == "recording.exported"]
            if hits:
                return hits
            count = len(got) + 1


async def test_an_export_is_started_followed_announced_and_served(tmp_path: Path) -> None:
    receiver = Receiver(answers(200))
    await receiver.start()
    # Nice 0: on the test machine, shared and loaded, an export at 19 waits behind everyone else.
    settings = {
        "webhook_urls": [receiver.url],
        "webhook_secret": SECRET,
        "export_size": "320x180",
        "export_nice": 0,
    }
    try:
        async with serve(tmp_path, media_workers=0, **settings) as node, aiohttp.ClientSession() as http:
            stage = "exp-" + uuid.uuid4().hex[:6]
            async with http.post(f"{node.url}/api/stages", json={"id": stage}, headers=bearer()) as r:
                assert r.status == 201
            session_id = _session(tmp_path / "recordings", stage)
            url = f"{node.url}/api/stages/{stage}/recordings/{session_id}/export"

            # Access: the same rules as the recordings (record grant of this stage, or the platform).
            async with http.post(url) as r:
                assert r.status == 401
            for other in (token("another-stage", "moderator"), token(stage, "audience")):
                async with http.post(url, headers=bearer(other)) as r:
                    assert r.status == 403, await r.text()
            async with http.get(url, headers=bearer()) as r:
                assert r.status == 404 and (await r.json())["code"] == "not_exported"
            async with http.post(url, json={"force": "yes"}, headers=bearer()) as r:
                assert r.status == 400

            moderator = bearer(token(stage, "moderator"))
            async with http.post(url, headers=moderator) as r:
                assert r.status == 202, await r.text()
                first = await r.json()
                assert r.headers["Location"] == f"/api/stages/{stage}/recordings/{session_id}/export"
            assert first["status"] in ("queued", "running")
            async with http.post(url, headers=bearer()) as r:  # asked twice: the same job
                assert r.status == 202 and (await r.json())["status"] in ("queued", "running")
            assert node.node.exports.running is not None or len(node.node.exports.queue) == 1

            hook = (await _exported(receiver))[0]
            assert verify(SECRET, hook.headers["Medstage-Signature"], hook.body, time.time())
            assert hook.event["type"] == "recording.exported"
            data = hook.event["data"]
            assert data["status"] == "done" and data["session_id"] == session_id, data
            assert data["url"] == f"/api/stages/{stage}/recordings/{session_id}/files/exports/composite.mp4"
            assert data["tracks"] == 2 and data["bytes"] > 0 and abs(data["duration_s"] - 3.0) < 0.1

            async with http.get(url, headers=moderator) as r:
                status = await r.json()
                assert r.status == 200 and status["status"] == "done" and status["progress"] == 1.0
                assert status["excluded_tracks"] == 2
            async with http.get(node.url + data["url"], headers={**moderator, "Range": "bytes=0-99"}) as r:
                assert r.status == 206 and len(await r.read()) == 100
            async with http.post(url, headers=moderator) as r:  # nothing changed: nothing to do
                assert r.status == 200 and (await r.json())["status"] == "done"
            assert node.node.exports.running is None and not node.node.exports.queue
            assert len(await _exported(receiver)) == 1, "no second run, no second webhook"
    finally:
        await receiver.stop()


async def test_a_full_queue_is_refused_and_a_session_with_nothing_shared_too(tmp_path: Path) -> None:
    settings = {"export_size": "320x180", "export_queue": 1, "media_workers": 0, "export_nice": 0}
    async with serve(tmp_path, **settings) as node, aiohttp.ClientSession() as http:
        stage = "exq-" + uuid.uuid4().hex[:6]
        async with http.post(f"{node.url}/api/stages", json={"id": stage}, headers=bearer()) as r:
            assert r.status == 201
        root = tmp_path / "recordings"
        long_one = _session(root, stage)  # running for its child's start-up alone (≈ 1 s): the posts take ms
        waiting, refused = _session(root, stage), _session(root, stage)
        base = f"{node.url}/api/stages/{stage}/recordings"
        async with http.post(f"{base}/{long_one}/export", headers=bearer()) as r:
            assert r.status == 202
        exports = node.node.exports
        async with asyncio.timeout(20):
            await exports.wait(lambda: exports.running is not None)
        async with http.post(f"{base}/{waiting}/export", headers=bearer()) as r:
            assert r.status == 202 and (await r.json())["position"] == 1
        async with http.post(f"{base}/{refused}/export", headers=bearer()) as r:
            assert r.status == 503, await r.text()
            assert (await r.json())["code"] == "export_queue_full" and int(r.headers["Retry-After"]) > 0

        lonely = "20261203T100000Z-none"
        make_session(root / stage / lonely, [Speaker("p-x", (9, 9, 9), share=False)], lonely)
        async with http.post(f"{base}/{lonely}/export", headers=bearer()) as r:
            assert r.status == 422 and (await r.json())["code"] == "nothing_to_export"
        async with asyncio.timeout(60):
            await exports.wait(lambda: exports.running is None and not exports.queue)
        for session_id in (long_one, waiting):
            state = json.loads((root / stage / session_id / "exports" / "composite.json").read_text())
            assert state["status"] == "done"


async def test_a_node_stopping_mid_export_leaves_it_interrupted_and_resumable(tmp_path: Path) -> None:
    receiver = Receiver(answers(200))
    await receiver.start()
    settings = {
        "webhook_urls": [receiver.url], "webhook_secret": SECRET, "export_size": "640x360", "export_nice": 0,
        "media_workers": 0,
    }  # fmt: skip
    stage = "exi-" + uuid.uuid4().hex[:6]
    root = tmp_path / "recordings"
    session_id = _session(root, stage, seconds=8.0)
    state_file = root / stage / session_id / "exports" / "composite.json"
    url = f"/api/stages/{stage}/recordings/{session_id}/export"
    try:
        async with serve(tmp_path, **settings) as node, aiohttp.ClientSession() as http:
            async with http.post(f"{node.url}/api/stages", json={"id": stage}, headers=bearer()) as r:
                assert r.status == 201
            async with http.post(node.url + url, headers=bearer()) as r:
                assert r.status == 202
            exports = node.node.exports
            await eventually(lambda: state_file.is_file(), timeout=30)  # the child is at work
            child = exports.process
            assert child is not None and child.returncode is None
        # The node stopped: its export with it, without a webhook (it did not fail).
        assert child.returncode is not None
        assert json.loads(state_file.read_text())["status"] == "running"
        assert not [r for r in receiver.requests if r.event["type"] == "recording.exported"]

        async with serve(tmp_path, **settings) as node, aiohttp.ClientSession() as http:
            async with http.post(f"{node.url}/api/stages", json={"id": stage}, headers=bearer()) as r:
                assert r.status == 201
            async with http.get(node.url + url, headers=bearer()) as r:
                assert r.status == 200 and (await r.json())["status"] == "interrupted"
            async with http.post(node.url + url, headers=bearer()) as r:
                assert r.status == 202  # resumes
            hook = (await _exported(receiver))[0]
            assert hook.event["data"]["status"] == "done"
    finally:
        await receiver.stop()
