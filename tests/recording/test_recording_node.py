"""Consent-bound recording on a running node, with real aiortc publishers; the files are judged by
ffprobe and PyAV (decoding every frame), the ledger by ``python -m recording verify``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from tests.conftest import ROOT, RunningNode, start_node
from tests.support.client import MedstageClient
from tests.support.clip import EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.tokens import token
from tests.support.waiting import eventually

POLICY = "2026-11"


@pytest.fixture
def node(recording_node: RunningNode) -> RunningNode:
    return recording_node


@pytest.fixture(scope="module")
def clip():  # type: ignore[no-untyped-def]
    return load_clip()


def manifest(session: Path) -> dict[str, Any]:
    return json.loads((session / "manifest.json").read_text())


def decode_all(path: Path) -> tuple[int, float]:
    """Frames decoded, and the media duration in seconds; raises if any frame fails."""
    frames, last = 0, 0.0
    with av.open(str(path)) as container:
        stream = container.streams[0]
        for packet in container.demux(stream):
            for _frame in packet.decode():
                frames += 1
            if packet.pts is not None:
                last = max(last, float(packet.pts * packet.time_base))
    return frames, last


def ffprobe_packets(path: Path) -> int:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.strip().splitlines()[0])


def recording_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recording", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def consent(client: MedstageClient, scopes: list[str]) -> dict[str, Any]:
    return await client.request(
        {"type": "consent.give", "scopes": scopes, "policy_version": POLICY, "method": "join_prompt"}
    )


async def wait_status(session: Path, status: str, timeout: float = 15) -> dict[str, Any]:
    await eventually(
        lambda: (session / "manifest.json").is_file() and manifest(session)["status"] == status, timeout
    )
    return manifest(session)


async def test_only_consented_media_and_comments_are_stored(node: RunningNode, rec_root: Path, clip) -> None:  # type: ignore[no-untyped-def]
    stage = "rec-" + uuid.uuid4().hex[:6]
    async with (
        MedstageClient(node.url) as host,
        MedstageClient(node.url) as yes,
        MedstageClient(node.url) as no,
    ):
        await host.join(stage, "Dr Host", "host")
        await yes.join(stage, "Dr Yes", "speaker")
        await no.join(stage, "Dr No", "speaker")
        assert host.joined["state"]["recording"]["mode"] == "manual"
        assert host.joined["policy"]["version"] == POLICY and host.joined["policy"]["text"]
        await consent(yes, ["media", "comments"])
        await consent(no, [])  # declined
        await yes.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await no.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await host.wait_for(
            "slot.assigned", lambda m: m["participant_id"] == no.participant_id and m["kind"] == "video"
        )

        started = await host.request({"type": "recording.start"})
        session = rec_root / stage / started["session_id"]
        await yes.wait_for("recording.started", timeout=5)
        await yes.request({"type": "comment.post", "text": "kept: I consented"})
        await no.request({"type": "comment.post", "text": "secret: I declined"})
        await asyncio.sleep(3)
        await host.request({"type": "recording.stop"})
        done = await wait_status(session, "complete")

    files = {(t["participant_id"], t["kind"]): session / t["file"] for t in done["tracks"]}
    assert set(files) == {(yes.participant_id, "audio"), (yes.participant_id, "video")}, done["tracks"]
    assert not list((session / "tracks").glob(f"{no.participant_id}*")), "nothing of who declined"
    for (_, kind), path in files.items():
        frames, duration = decode_all(path)
        assert frames > 0 and ffprobe_packets(path) >= frames * 0.95
        assert duration > 1.5, (kind, duration)
    assert files[(yes.participant_id, "video")].suffix == ".webm"

    timeline = json.loads((session / "timeline.json").read_text())
    texts = json.dumps(timeline)
    assert "kept: I consented" in texts
    assert "secret: I declined" not in texts, "a comment without consent is never stored"
    posted = [e for e in timeline if e["type"] == "comment.posted"]
    assert any(e["comment"].get("redacted") for e in posted), "it stays as a placeholder"
    people = {p["participant_id"]: p for p in done["participants"]}
    assert people[no.participant_id]["consent"]["decision"] == "declined"
    assert people[yes.participant_id]["consent"]["scopes"] == ["comments", "media"]

    result = recording_cli("verify", str(session))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok:")


async def test_a_withdrawal_ends_that_persons_media_within_a_second(
    node: RunningNode, rec_root: Path, clip
) -> None:  # type: ignore[no-untyped-def]
    stage = "rec-" + uuid.uuid4().hex[:6]
    async with MedstageClient(node.url) as host, MedstageClient(node.url) as speaker:
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Speaker", "speaker")
        await consent(speaker, ["media"])
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        started = await host.request({"type": "recording.start"})
        session = rec_root / stage / started["session_id"]
        await asyncio.sleep(3)
        await speaker.request({"type": "consent.withdraw"})
        await asyncio.sleep(2)  # media keeps flowing to the stage, not to the files
        await host.request({"type": "recording.stop"})
        done = await wait_status(session, "complete")

    ledger = [json.loads(line) for line in (session / "consent.jsonl").read_text().splitlines()]
    withdrawn = [e["record"] for e in ledger if e["record"]["decision"] == "withdrawn"]
    assert len(withdrawn) == 1
    withdrawn_at = withdrawn[0]["at"]
    for track in done["tracks"]:
        frames, duration = decode_all(session / track["file"])
        assert frames > 0
        ends_at = track["first_frame_at"] + duration
        assert ends_at <= withdrawn_at + 1.0, (track["kind"], ends_at - withdrawn_at)
        assert ends_at >= withdrawn_at - 1.5, "it did record until the withdrawal"


async def test_sigkill_leaves_readable_files_that_repair_finalizes(
    node: RunningNode, rec_root: Path, clip
) -> None:  # type: ignore[no-untyped-def]
    stage = "rec-" + uuid.uuid4().hex[:6]
    async with MedstageClient(node.url) as host, MedstageClient(node.url) as speaker:
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Speaker", "speaker")
        await consent(speaker, ["media", "comments"])
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        started = await host.request({"type": "recording.start"})
        session = rec_root / stage / started["session_id"]
        await eventually(lambda: len(manifest(session)["tracks"]) == 2, 10)
        await asyncio.sleep(4)
        killed_at = time.time()
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(5)

    tracks = manifest(session)["tracks"]
    for track in tracks:
        path = session / track["file"]
        frames, duration = decode_all(path)  # readable as the crash left it
        assert frames > 0
        lost = killed_at - (track["first_frame_at"] + duration)
        assert lost <= 1.0, (track["kind"], lost)

    repaired = recording_cli("repair", str(session))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    for track in manifest(session)["tracks"]:
        path = session / track["file"]
        with av.open(str(path)) as container:
            assert container.duration is not None and container.duration > 0, "finalized: has duration"
        assert track["finalized"] is True
    assert (session / "timeline.json").is_file()
    verified = recording_cli("verify", str(session))
    assert verified.returncode == 0, verified.stdout + verified.stderr


async def test_recording_commands_need_a_moderator_and_recordings_need_the_key(
    node: RunningNode,
    rec_root: Path,
    clip,  # type: ignore[no-untyped-def]
) -> None:
    import aiohttp

    stage = "rec-" + uuid.uuid4().hex[:6]
    async with MedstageClient(node.url) as host, MedstageClient(node.url) as viewer:
        await host.join(stage, "Dr Host", "host")
        await viewer.join(stage, "Dr Viewer", "audience")
        assert "recordings_key" not in viewer.joined
        refused = await viewer.request({"type": "recording.start"}, check=False)
        assert refused["code"] == "not_allowed"
        refused = await viewer.request({"type": "consent.withdraw"}, check=False)
        assert refused["code"] == "no_consent"
        started = await host.request({"type": "recording.start"})
        await host.request({"type": "recording.stop"})
        await wait_status(rec_root / stage / started["session_id"], "complete")
        key = token(stage, "host")  # the "record" grant, for this stage
        viewer_key = token(stage, "audience")
        other_stage_key = token("elsewhere", "host")

    async with aiohttp.ClientSession() as http:
        url = f"{node.url}/api/stages/{stage}/recordings"
        async with http.get(url) as r:
            assert r.status == 401
        async with http.get(url, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401  # not a token at all
        async with http.get(url, headers={"Authorization": f"Bearer {viewer_key}"}) as r:
            assert r.status == 403 and (await r.json())["code"] == "missing_grant"
        async with http.get(url, headers={"Authorization": f"Bearer {other_stage_key}"}) as r:
            assert r.status == 403 and (await r.json())["code"] == "token_wrong_stage"
        async with http.get(url, headers={"Authorization": f"Bearer {key}"}) as r:
            listing = await r.json()
        assert [s["session_id"] for s in listing["sessions"]] == [started["session_id"]]
        async with http.get(
            f"{url}/{started['session_id']}", headers={"Authorization": f"Bearer {key}"}
        ) as r:
            assert (await r.json())["status"] == "complete"
        async with http.get(
            f"{url}/{started['session_id']}/files/consent.jsonl", headers={"Authorization": f"Bearer {key}"}
        ) as r:
            assert r.status == 200
        async with http.get(
            f"{url}/{started['session_id']}/files/..%2F..%2Fmanifest.json",
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            assert r.status == 404


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 384 KiB tmpfs: a recording fills it in a few seconds."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path = tmp_path / "small"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=384k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_full_disk_stops_the_recording_cleanly_and_the_stage_goes_on(
    tmp_path: Path,
    small_disk: Path,
    clip,  # type: ignore[no-untyped-def]
) -> None:
    node = start_node(
        tmp_path, {"MEDSTAGE_RECORDING_MODE": "manual", "MEDSTAGE_RECORDINGS_DIR": str(small_disk)}
    )
    try:
        stage = "rec-" + uuid.uuid4().hex[:6]
        async with (
            MedstageClient(node.url) as host,
            MedstageClient(node.url) as speaker,
            MedstageClient(node.url) as viewer,
        ):
            await host.join(stage, "Dr Host", "host")
            await speaker.join(stage, "Dr Speaker", "speaker")
            await viewer.join(stage, "Dr Viewer", "audience")
            await consent(speaker, ["media", "comments"])
            await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
            started = await host.request({"type": "recording.start"})
            stopped = await host.wait_for("recording.stopped", timeout=30)
            assert stopped["session_id"] == started["session_id"]
            assert stopped["by"] is None and "No space left" in stopped["reason"], stopped
            # The live stage goes on: comments and media still flow.
            await speaker.request({"type": "comment.post", "text": "still here"})
            v = viewer.received("video").frames_complete
            await eventually(lambda: viewer.received("video").frames_complete > v + 10, 5)
        session = small_disk / stage / started["session_id"]
        for track in manifest(session)["tracks"]:
            path = session / track["file"]
            if path.is_file() and path.stat().st_size > 0:
                frames, _ = decode_all(path)  # what was written stays readable
                assert frames > 0
        assert recording_cli("verify", str(session)).returncode == 0
    finally:
        assert node.stop() == 0
