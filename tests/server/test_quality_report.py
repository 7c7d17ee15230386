"""Connection quality end to end with a real node process and real aiortc peers: the troubleshooting
report (GET /api/stages/{id}/participants/{pid}/connection) shows the round trip from the viewer's
receiver reports, no loss, a bit rate and the chosen candidate pair, in-process and with the viewer in
a media worker; the level reaches participant objects; who may read the report."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningNode, start_node
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.tokens import bearer, token


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


def _node(tmp_path: Path, workers: int) -> Iterator[RunningNode]:
    node = start_node(tmp_path, {"MEDSTAGE_MEDIA_WORKERS": str(workers)})
    try:
        yield node
    finally:
        code = node.stop()
        assert code == 0, f"node exited with {code}:\n{node.log()[-4000:]}"


async def _report(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with http.get(url, headers=headers) as r:
        return r.status, await r.json()


@pytest.fixture(params=[0, 2], ids=["in-process", "2-workers"])
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningNode]:
    yield from _node(tmp_path, request.param)


async def test_the_report_shows_rtt_no_loss_bitrate_and_the_chosen_pair(node: RunningNode, clip: Any) -> None:
    stage = "q-" + uuid.uuid4().hex[:8]
    async with (
        MedstageClient(node.url) as speaker,
        MedstageClient(node.url) as viewer,
        aiohttp.ClientSession() as http,
    ):
        await speaker.join(stage, "Dr Speaker", "host", identity="q-speaker")
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await viewer.join(stage, "Dr Viewer", "audience", identity="q-viewer")
        await viewer.wait_media(kind="video", timeout=20)
        vid, sid = viewer.participant_id, speaker.participant_id
        base = f"{node.url}/api/stages/{stage}/participants"

        down: dict[str, Any] = {}

        async def viewer_measured() -> bool:
            status, body = await _report(http, f"{base}/{vid}/connection", bearer())
            assert status == 200, body
            d = body["down"]
            if d is None or d["figures"]["rtt_ms"] is None:
                return False
            down.update(body)
            leveled = [t for t in body["timeline"] if t["level"] is not None]
            return bool(d["figures"]["bitrate"]) and body["quality"] is not None and bool(leveled)

        async with asyncio.timeout(25):
            while not await viewer_measured():  # noqa: ASYNC110 - polling an HTTP API
                await asyncio.sleep(0.5)
        d = down["down"]
        assert d["figures"]["loss"] == 0
        assert 0 < d["figures"]["rtt_ms"] < 1000
        assert d["figures"]["bitrate"] > 10_000
        assert d["path"]["connection"] == "connected" and d["path"]["dtls"] == "connected"
        assert d["path"]["local"] == {"family": "ipv4", "type": "host", "protocol": "udp"}
        assert d["path"]["remote"]["family"] == "ipv4"
        assert "127.0.0.1" not in str(down)  # no addresses in the report
        video = [s for s in d["slots"] if s["kind"] == "video" and s["forwarding"]]
        assert video and video[0]["publisher"] == sid and video[0]["codec"] == "video/vp8"
        assert video[0]["layer"] is None  # no simulcast here
        kinds = {n["kind"]: n for n in d["negotiated"]}
        assert {c["mime"] for c in kinds["video"]["codecs"]} >= {"video/vp8"}
        assert kinds["video"]["rtx"] is True and "nack" in kinds["video"]["feedback"]
        assert down["quality"] in ("excellent", "good")
        sample = next(t for t in down["timeline"] if t["level"] is not None)
        assert sample["down_loss"] == 0 and sample["down_jitter_ms"] is not None

        status, body = await _report(http, f"{base}/{sid}/connection", bearer())
        assert status == 200
        up = body["up"]
        assert up is not None and up["figures"]["bitrate"] > 10_000
        assert up["figures"]["loss"] == 0 and up["figures"]["rtt_ms"] is None and up["rtt_note"]
        assert {t["kind"] for t in up["tracks"]} == {"audio", "video"}
        assert all(t["packets"] > 0 and t["cumulative_lost"] == 0 for t in up["tracks"])
        assert up["path"]["local"]["type"] == "host"

        # The level went out in participant objects (participant.updated), to everyone.
        update = await speaker.wait_for(
            "participant.updated",
            lambda m: m["participant"]["id"] == vid and m["participant"]["quality"] is not None,
            timeout=10,
        )
        assert update["participant"]["quality"] in ("excellent", "good")
        async with http.get(base, headers=bearer()) as r:
            listed = {p["id"]: p for p in (await r.json())["participants"]}
        assert listed[vid]["quality"] in ("excellent", "good")
        async with http.get(f"{node.url}/metrics") as r:
            text = await r.text()
        by_level = {
            line.split('level="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("medstage_participants_by_quality{")
        }
        assert set(by_level) == {"excellent", "good", "poor", "lost", "unknown"}
        assert by_level["excellent"] + by_level["good"] >= 1 and sum(by_level.values()) == 2


@pytest.fixture
def node0(tmp_path: Path) -> Iterator[RunningNode]:
    yield from _node(tmp_path, 0)


async def test_who_may_read_a_connection_report(node0: RunningNode) -> None:
    node = node0
    stage = "qa-" + uuid.uuid4().hex[:8]
    async with (
        MedstageClient(node.url) as host,
        MedstageClient(node.url) as viewer,
        aiohttp.ClientSession() as http,
    ):
        await host.join(stage, "Dr Host", "host", identity="qa-host")
        await viewer.join(stage, "Dr Viewer", "audience", identity="qa-viewer")
        url = f"{node.url}/api/stages/{stage}/participants/{viewer.participant_id}/connection"

        async def status(headers: dict[str, str]) -> tuple[int, str | None]:
            code, body = await _report(http, url, headers)
            return code, body.get("code")

        assert (await status(bearer()))[0] == 200  # the platform
        assert (await status(bearer(token(stage, "audience", "qa-viewer"))))[0] == 200  # themselves
        assert (await status(bearer(token(stage, "moderator", "qa-mod"))))[0] == 200  # a moderator
        assert (await status(bearer(token(stage, "host", "qa-host"))))[0] == 200  # the host
        # Someone else on the same stage, and a token for another stage.
        assert await status(bearer(token(stage, "audience", "qa-stranger"))) == (403, "missing_grant")
        assert await status(bearer(token(stage, "speaker", "qa-speaker"))) == (403, "missing_grant")
        assert await status(bearer(token("elsewhere", "host", "qa-viewer"))) == (403, "token_wrong_stage")
        assert (await status({}))[0] == 401
        code, body = await _report(
            http, f"{node.url}/api/stages/{stage}/participants/p-none/connection", bearer()
        )
        assert (code, body["code"]) == (404, "participant_not_found")
