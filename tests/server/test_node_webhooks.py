"""Webhooks from a real node (issue 6): stage started/ended, participant joined/left and recording
ready reach a real local receiver, signed; a receiver that answers 500 first gets them retried."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiohttp

from server.host.webhooks import verify
from tests.conftest import start_node
from tests.server.test_webhooks import Receiver, answers
from tests.support.tokens import bearer, signed
from tests.support.ws import Socket

SECRET = "webhook-secret-for-the-node-test"


async def test_a_node_sends_signed_webhooks_for_the_life_of_a_stage(tmp_path: Path) -> None:
    receiver = Receiver(answers(500, 200))  # the first delivery fails: retried
    await receiver.start()
    node = start_node(
        tmp_path,
        {
            "MEDSTAGE_WEBHOOK_URLS": receiver.url,
            "MEDSTAGE_WEBHOOK_SECRET": SECRET,
            "MEDSTAGE_RECORDING_MODE": "manual",
            "MEDSTAGE_RECORDINGS_DIR": str(tmp_path / "rec"),
        },
    )
    stage = "hook-" + uuid.uuid4().hex[:8]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{node.url}/api/stages", json={"id": stage}, headers=bearer()) as r:
                assert r.status == 201
            host = Socket(await session.ws_connect(node.ws_url))
            join = {"type": "join", "id": "j", "stage": stage, "name": "Dr Host", "role": "host"}
            joined = await host.request(signed({**join, "identity": "dr-host"}))
            assert joined["type"] == "joined", joined
            started = await host.request({"type": "recording.start", "id": "r1"})
            await host.request({"type": "recording.stop", "id": "r2"})
            viewer = Socket(await session.ws_connect(node.ws_url))
            await viewer.request(signed({**join, "role": "audience", "name": "Dr V", "identity": "dr-v"}))
            await viewer.ws.close()
            await asyncio.sleep(0.3)
            async with session.post(f"{node.url}/api/stages/{stage}/end", headers=bearer()) as r:
                assert r.status == 200, await r.text()

        got = await receiver.wait_for(8, timeout=15)  # 7 events, the first one twice
    finally:
        assert node.stop() == 0
        await receiver.stop()

    events = [r.event for r in got]
    assert events[0]["id"] == events[1]["id"], "the 500 was retried with the same event"
    kinds = [e["type"] for e in events[1:]]
    assert kinds[0] == "stage.started", kinds
    assert sorted(kinds) == sorted(
        ["stage.started", "participant.joined", "participant.joined", "recording.ready",
         "participant.left", "stage.ended", "participant.left"]
    ), kinds  # fmt: skip
    assert kinds.index("stage.ended") > kinds.index("recording.ready")
    for received in got:
        header = received.headers["Medstage-Signature"]
        assert verify(SECRET, header, received.body, time.time())
        assert received.headers["Medstage-Event"] == received.event["type"]
    joined_hooks = [e["data"] for e in events if e["type"] == "participant.joined"]
    assert {d["identity"] for d in joined_hooks} == {"dr-host", "dr-v"}
    left = [e["data"] for e in events if e["type"] == "participant.left"]
    assert {d["identity"] for d in left} >= {"dr-v"}
    ready = next(e["data"] for e in events if e["type"] == "recording.ready")
    assert ready["session_id"] == started["session_id"] and ready["status"] == "complete"
    assert ready["manifest"] == f"/api/stages/{stage}/recordings/{started['session_id']}"
