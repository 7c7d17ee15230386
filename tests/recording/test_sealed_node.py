"""Sealed tracks on a running node (issue 15): a real aiortc publisher's tracks are sealed on disk with
their key (no WebM byte in the clear), decode with PyAV through the key and over the API, and once
the key is destroyed nobody can open them: ``SealedKeyMissing`` on disk, 410 ``erased`` over HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from recording.composite import read_state
from recording.sealed import MAGIC, SealedKeyMissing, key_id_of, open_plaintext
from recording.tracks import open_track
from recording.vault import load_ring
from tests.conftest import ROOT
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.inprocess import serve
from tests.support.tokens import bearer
from tests.support.waiting import eventually

EBML = b"\x1a\x45\xdf\xa3"
IDENTITY = "speaker-with-a-key"


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


def _manifest(session: Path) -> dict[str, Any]:
    return json.loads((session / "manifest.json").read_text())


def _frames(container: Any) -> int:
    frames = 0
    for packet in container.demux(container.streams[0]):
        frames += len(packet.decode())
    return frames


async def test_recorded_tracks_are_sealed_with_the_publishers_key_and_erased_with_it(
    tmp_path: Path,
    clip,  # type: ignore[no-untyped-def]
) -> None:
    stage = "sealed-" + uuid.uuid4().hex[:6]
    async with (
        serve(
            tmp_path, recording_mode="manual", media_workers=0, export_size="320x180", export_nice=0
        ) as running,
        MedstageClient(running.url) as host,
        MedstageClient(running.url) as speaker,
        aiohttp.ClientSession() as http,
    ):
        node = running.node
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Sealed", "speaker", identity=IDENTITY)
        key = node.ring.for_identity(IDENTITY)
        assert key is not None
        await speaker.request(
            {"type": "consent.give", "scopes": ["media", "comments", "share"], "policy_version": "2026-11",
             "method": "join_prompt"}
        )  # fmt: skip
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        started = await host.request({"type": "recording.start"})
        session = tmp_path / "recordings" / stage / started["session_id"]
        await asyncio.sleep(2.5)
        await host.request({"type": "recording.stop"})
        await eventually(
            lambda: (session / "manifest.json").is_file() and _manifest(session)["status"] == "complete", 15
        )
        tracks = _manifest(session)["tracks"]
        assert {t["kind"] for t in tracks} == {"audio", "video"}, tracks

        files = {t["kind"]: session / t["file"] for t in tracks}
        for entry in tracks:
            path = session / entry["file"]
            assert entry["sealed"] is True and entry["key_id"] == key.key_id, entry
            assert path.name.endswith(".webm.sealed")
            raw = path.read_bytes()
            assert raw.startswith(MAGIC) and EBML not in raw, "no WebM byte in the clear"
            assert key_id_of(path) == key.key_id
            with open_track(path, node.ring) as container:
                assert _frames(container) >= 0.9 * entry["frames"] > 0, entry

        # Over the API: the file decrypted on the fly, a Range answered from the plaintext.
        base = f"{running.url}/api/stages/{stage}/recordings/{started['session_id']}/files/"
        name = tracks[0]["file"]
        with open_plaintext(session / name, node.ring) as stream:
            plaintext = stream.read()
        async with http.get(base + name, headers=bearer()) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "video/webm"
            assert r.headers["Cache-Control"] == "no-store"
            body = await r.read()
        assert body == plaintext and body.startswith(EBML)
        with av.open(io.BytesIO(body)) as container:
            assert _frames(container) > 0
        async with http.get(base + name, headers={**bearer(), "Range": "bytes=100-299"}) as r:
            assert r.status == 206 and await r.read() == plaintext[100:300]
            assert r.headers["Content-Range"] == f"bytes 100-299/{len(plaintext)}"
        async with http.get(base + name, headers={**bearer(), "Range": f"bytes={len(plaintext)}-"}) as r:
            assert r.status == 416

        # The composite export: the node hands the session's keys to its child on stdin.
        export = f"{running.url}/api/stages/{stage}/recordings/{started['session_id']}/export"
        async with http.post(export, headers=bearer()) as r:
            assert r.status == 202, await r.text()
        await eventually(lambda: (stage, started["session_id"]) in node.exports.finished, 120)
        job = node.exports.finished[(stage, started["session_id"])]
        assert job.status == "done", job.error
        state = read_state(session)
        assert state is not None and len(state["tracks"]) == 2 and state["excluded_tracks"] == 0, state

        # Erasure destroys the key: the files are still there, and nobody can read them.
        await node.keys.destroy(IDENTITY, "erasure", time.time())
        node.ring.drop(IDENTITY)
        for path in files.values():
            assert path.is_file()
            with pytest.raises(SealedKeyMissing):
                open_plaintext(path, node.ring)
            with pytest.raises(SealedKeyMissing):
                open_plaintext(path, await load_ring(node.keys))  # not in the store either
        for entry in tracks:
            async with http.get(base + entry["file"], headers=bearer()) as r:
                assert r.status == 410, await r.text()
                problem = await r.json()
            assert problem["code"] == "erased" and r.content_type == "application/problem+json"
        # An export made now leaves the erased person out: here nobody is left.
        async with http.post(export, json={"force": True}, headers=bearer()) as r:
            assert r.status == 422 and (await r.json())["code"] == "nothing_to_export", await r.text()

    # The session still verifies (the ledger; the sealed files' structure and key ids).
    verified = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "recording", "verify", str(session)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count(f"sealed with key {key.key_id}") == 2, verified.stdout


async def test_an_erased_person_is_not_recorded_again_not_even_unsealed(
    tmp_path: Path,
    clip,  # type: ignore[no-untyped-def]
) -> None:
    stage = "sealed-" + uuid.uuid4().hex[:6]
    async with (
        serve(tmp_path, recording_mode="manual", media_workers=0) as running,
        MedstageClient(running.url) as host,
        MedstageClient(running.url) as speaker,
    ):
        node = running.node
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Erased", "speaker", identity=IDENTITY)
        await speaker.request(
            {
                "type": "consent.give",
                "scopes": ["media"],
                "policy_version": "2026-11",
                "method": "join_prompt",
            }
        )
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        started = await host.request({"type": "recording.start"})
        session = tmp_path / "recordings" / stage / started["session_id"]

        def capturing() -> bool:
            if not (session / "manifest.json").is_file():
                return False
            tracks = _manifest(session)["tracks"]
            return len(tracks) == 2 and all(t["first_frame_at"] for t in tracks)

        await eventually(capturing, 15)
        await node.keys.destroy(IDENTITY, "erasure", time.time())
        assert node.ring.drop(IDENTITY) is not None and node.ring.dropped(IDENTITY)
        # The recorder checks its captures after every event: the next one stops theirs.
        await host.request({"type": "comment.post", "text": "after the erasure"})
        await eventually(lambda: all(t["capture_ended_at"] for t in _manifest(session)["tracks"]), 10)
        await asyncio.sleep(1.0)
        await host.request({"type": "comment.post", "text": "still after"})
        await asyncio.sleep(0.5)
        await host.request({"type": "recording.stop"})
        await eventually(lambda: _manifest(session)["status"] == "complete", 15)
    tracks = _manifest(session)["tracks"]
    assert len(tracks) == 2, tracks  # no new capture for them: neither sealed nor plain
    names = sorted(p.name for p in (session / "tracks").iterdir())
    assert all(n.endswith(".webm.sealed") for n in names), names
