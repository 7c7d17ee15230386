"""A deletion appends a signed record to the session's consent ledger; the shared backend's copy of
the ledger's latest signed head (kept there as evidence outside the node's disk, server/routing/
ledgerheads.py) follows: after ``DELETE`` it is the session's final head, the deletion included."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from recording.signing import HEADS_FILENAME, NodeKey, SignedHead, default_key_path, read_heads
from tests.recording.recorded import record_session
from tests.support.inprocess import serve
from tests.support.tokens import bearer


async def test_a_deleted_sessions_final_head_reaches_the_backend(tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    key = NodeKey.load_or_create(default_key_path(root))  # the node signs with it too
    recorded = await record_session(root, key, session_id="rec-heads")
    stage, session_id = recorded.session.parent.name, recorded.session.name
    async with serve(tmp_path, media_workers=0) as node, aiohttp.ClientSession(node.url) as http:
        backend = node.node.cluster.backend
        assert await backend.ledger_head(stage, session_id) is None  # recorded elsewhere, by the test
        async with http.post("/api/stages", json={"id": stage}, headers=bearer()) as r:
            assert r.status == 201, await r.text()
        async with http.delete(f"/api/stages/{stage}/recordings/{session_id}", headers=bearer()) as r:
            assert r.status == 204, await r.text()
        heads, cut = read_heads(recorded.session / HEADS_FILENAME)
        last = heads[-1][1]
        assert not cut and isinstance(last, SignedHead) and last.final

        published = None
        async with asyncio.timeout(5):  # published by a task of the node's, after the 204
            while published is None:
                await asyncio.sleep(0.02)
                published = await backend.ledger_head(stage, session_id)
        assert published == last.line().encode()
        assert last.valid(key.public) and last.count == len(
            (recorded.session / "consent.jsonl").read_text().splitlines()
        )
