"""Sealed timeline items on a running node: a comment and a question posted by a real client are
stored sealed with their author's key (no plaintext in any file of the session), and the node's
report and playback APIs open them with its keys (recording/items.py, server/host/readers.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from recording.keys import FileKeyStore, default_keys_dir
from recording.vault import load_ring
from tests.conftest import RunningNode
from tests.recording.recorded import COMMENTS, T0, record_session
from tests.support.client import MedstageClient
from tests.support.tokens import admin_token, bearer, token
from tests.support.waiting import eventually

POLICY = "2026-11"
COMMENT = "MARKER-" + uuid.uuid4().hex
QUESTION = "MARKER-Q-" + uuid.uuid4().hex


async def consent(client: MedstageClient, scopes: list[str]) -> None:
    await client.request(
        {"type": "consent.give", "scopes": scopes, "policy_version": POLICY, "method": "join_prompt"}
    )


def status(session: Path) -> str | None:
    path = session / "manifest.json"
    return json.loads(path.read_text())["status"] if path.is_file() else None


async def test_a_comment_is_sealed_on_disk_and_shown_by_the_node(
    recording_node: RunningNode, rec_root: Path
) -> None:
    stage = "seal-" + uuid.uuid4().hex[:6]
    alice_id = "alice-" + uuid.uuid4().hex[:6]
    async with (
        MedstageClient(recording_node.url) as host,
        MedstageClient(recording_node.url) as alice,
        aiohttp.ClientSession(recording_node.url) as http,
    ):
        await host.join(stage, "Dr Host", "host")
        await alice.join(stage, "Alice Sealed", "audience", identity=alice_id)
        await consent(host, ["comments", "share"])
        await consent(alice, ["comments", "share"])
        started = await host.request({"type": "recording.start"})
        session = rec_root / stage / started["session_id"]
        await alice.request({"type": "comment.post", "text": COMMENT})
        await alice.request({"type": "question.ask", "text": QUESTION})
        await host.request({"type": "recording.stop"})
        await eventually(lambda: status(session) == "complete", 15)

        raw = b"".join(p.read_bytes() for p in session.rglob("*") if p.is_file())
        for secret in (COMMENT, QUESTION, alice_id, "Alice Sealed"):
            assert secret.encode() not in raw, secret

        report_url = f"/api/stages/{stage}/recordings/{started['session_id']}/report"
        async with http.get(report_url, headers=bearer(token(stage, "host"))) as r:
            assert r.status == 200, await r.text()
            report: dict[str, Any] = await r.json()
        items = report["questions"]["items"]
        assert [(q["text"], q["name"], q["identity"]) for q in items] == [
            (QUESTION, "Alice Sealed", alice_id)
        ]
        assert alice_id in {p["identity"] for p in report["attendance"]["people"]}

        playback_url = f"/api/recordings/{started['session_id']}/playback"
        async with http.get(playback_url, headers=bearer(admin_token())) as r:
            assert r.status == 200, await r.text()
            shown: dict[str, Any] = await r.json()
        assert [(c["author_name"], c["text"]) for c in shown["comments"]] == [("Alice Sealed", COMMENT)]


async def test_keys_not_on_the_node_are_read_from_its_store_and_a_destroyed_one_erases(
    recording_node: RunningNode, rec_root: Path
) -> None:
    """A session whose people are not on the node (recorded before it started): their keys come from
    the node's key store; once one is destroyed there, that person is counted, never named."""
    store = FileKeyStore(default_keys_dir(rec_root))  # the node's own store (one node: files)
    for identity in ("host@x", "alice@x", "bob@x", "carol@x", "dave@x"):
        await store.get_or_create(identity, T0 - 100)
    session_id = "sealed-" + uuid.uuid4().hex[:6]
    recorded = await record_session(rec_root, None, session_id=session_id, ring=await load_ring(store))
    async with aiohttp.ClientSession(recording_node.url) as http:
        async with http.post("/api/stages", json={"id": "cardio"}, headers=bearer()) as r:
            assert r.status in (201, 409), await r.text()

        async def named() -> set[str]:
            url = f"/api/stages/cardio/recordings/{session_id}/report"
            async with http.get(url, headers=bearer()) as r:
                assert r.status == 200, await r.text()
                return {p["identity"] for p in (await r.json())["attendance"]["people"]}

        async def comments() -> list[str]:
            url = f"/api/recordings/{session_id}/playback"
            async with http.get(url, headers=bearer(admin_token())) as r:
                assert r.status == 200, await r.text()
                return [c["text"] for c in (await r.json())["comments"]]

        assert await named() == {"host@x", "alice@x"}
        assert await comments() == [COMMENTS["alice@x"]]
        await store.destroy("alice@x", "erasure", T0 + 1000)
        assert await named() == {"host@x"}
        assert await comments() == []
    assert COMMENTS["alice@x"].encode() not in (recorded.session / "timeline.msgpack").read_bytes()
