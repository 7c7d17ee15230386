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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import msgspec
import pytest

from recording.keys import FileKeyStore, default_keys_dir
from recording.timeline import opened
from recording.vault import load_ring
from server.api.recordings import RecordingManifest
from tests.conftest import ROOT, RunningNode, start_node
from tests.support.client import MedstageClient
from tests.support.clip import MAX_LAG_S, EncodedAudioTrack, EncodedVideoTrack, load_clip
from tests.support.sealed_tracks import ffprobe, open_recorded
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


@dataclass(frozen=True)
class Decoded:
    """A track file as PyAV reads it: every packet fed to a decoder, failures counted, not raised."""

    packets: int  # media packets demuxed (the flush packet excluded)
    frames: int  # frames the decoder gave back
    errors: int  # packets the decoder refused
    duration: float  # seconds from the first packet's pts to the end of the last one
    starts_on_keyframe: bool

    @property
    def decodable(self) -> float:
        return self.frames / self.packets if self.packets else 0.0


def decode_all(path: Path) -> Decoded:
    packets = frames = errors = 0
    first: float | None = None
    end = 0.0
    starts_on_keyframe = False
    with open_recorded(path) as container:  # sealed with the publisher's key: read through it
        stream = container.streams[0]
        for packet in container.demux(stream):
            if packet.size:
                packets += 1
                if packets == 1:
                    starts_on_keyframe = bool(packet.is_keyframe)
                if packet.pts is not None:
                    start = float(packet.pts * packet.time_base)
                    first = start if first is None else min(first, start)
                    end = max(end, start + float((packet.duration or 0) * packet.time_base))
            try:  # the flush packet (size 0) drains what the decoder still holds
                frames += len(packet.decode())
            except av.FFmpegError:
                errors += 1
    return Decoded(packets, frames, errors, end - (first or 0.0), starts_on_keyframe)


# Frames per second of the test clip (tests/support/clip.py): 30 video frames, 50 Opus packets.
RATES = {"video": 30, "audio": 50}
# A test loop stalled by load sends the clip up to MAX_LAG_S late (then bursts, or skips beyond it):
# media time and arrival time may differ by that much. Only the bounds that do not test the product's
# promise (the capture ran long enough; the kill is not before the end) allow for it.
SLACK = MAX_LAG_S


def assert_decodable(path: Path, kind: str) -> Decoded:
    """Every packet decodes, and the file holds about as many frames as its duration should."""
    seen = decode_all(path)
    assert seen.errors == 0, (path.name, seen)
    assert seen.packets == ffprobe_packets(path), "PyAV and ffprobe agree on the packets"
    assert seen.frames >= 0.98 * seen.packets, (path.name, seen)
    assert seen.packets >= 0.9 * seen.duration * RATES[kind], ("frames missing in the file", path.name, seen)
    if kind == "video":
        assert seen.starts_on_keyframe, path.name
    return seen


def ffprobe_packets(path: Path) -> int:
    """ffprobe's own count of the file's packets (a reader independent of PyAV's demuxing loop)."""
    args = ["-v", "error", "-count_packets", "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0"]
    return int(ffprobe(args, path).strip().splitlines()[0])


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
        seen = assert_decodable(path, kind)
        assert seen.duration > 1.5, (kind, seen)
        entry = next(t for t in done["tracks"] if t["kind"] == kind)
        assert entry["frames"] == seen.packets, (entry, seen)  # the manifest counts what is in the file
        assert abs(entry["duration_s"] - seen.duration) < 0.05, (entry, seen)
    assert files[(yes.participant_id, "video")].name.endswith(".webm.sealed")  # the publisher's key
    assert all(t["sealed"] and len(t["key_id"]) == 32 for t in done["tracks"]), done["tracks"]

    timeline = json.loads((session / "timeline.json").read_text())
    assert "kept: I consented" not in json.dumps(timeline), "sealed with its author's key"
    ring = await load_ring(FileKeyStore(default_keys_dir(rec_root)))  # the node's key store
    texts = json.dumps(opened(timeline, ring))
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
    """The times are the test's own (around its requests), the media's end what PyAV reads in the
    file: neither comes from the server's manifest or ledger."""
    stage = "rec-" + uuid.uuid4().hex[:6]
    async with MedstageClient(node.url) as host, MedstageClient(node.url) as speaker:
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Speaker", "speaker")
        await consent(speaker, ["media"])
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await host.wait_media(kind="video", timeout=10)
        asked_start = time.time()
        started = await host.request({"type": "recording.start"})
        answered_start = time.time()
        session = rec_root / stage / started["session_id"]
        await asyncio.sleep(3)
        asked_withdrawal = time.time()
        await speaker.request({"type": "consent.withdraw"})
        withdrawn = time.time()
        # Media keeps flowing to the stage, not to the files.
        video, audio = host.received("video").frames_complete, host.received("audio").packets
        await eventually(
            lambda: (
                host.received("video").frames_complete >= video + 45
                and host.received("audio").packets >= audio + 75
            ),
            5,
        )
        await host.request({"type": "recording.stop"})
        done = await wait_status(session, "complete")

    files = {(t["participant_id"], t["kind"]): session / t["file"] for t in done["tracks"]}
    assert set(files) == {(speaker.participant_id, k) for k in ("audio", "video")}, done["tracks"]
    for (_, kind), path in files.items():
        seen = assert_decodable(path, kind)
        # Nothing is captured before the start was asked for, so media reaching more than a second
        # past the withdrawal's reply makes the file longer than this...
        assert seen.duration <= withdrawn - asked_start + 1.0, (kind, seen.duration, withdrawn - asked_start)
        # ...and the capture ran up to the withdrawal (it starts at a keyframe: GOP 1 s, or sooner on
        # PLI; a loaded test loop may skip up to half a second of the clip: SLACK).
        assert seen.duration >= asked_withdrawal - answered_start - 1.0 - SLACK, (kind, seen.duration)
        # The same on the wall clock, the file placed by its first frame's time (on this machine's
        # clock, which the test shares): it ends within a second of the withdrawal.
        track = next(t for t in done["tracks"] if t["kind"] == kind)
        assert asked_start <= track["first_frame_at"] <= asked_withdrawal, track
        ends_at = track["first_frame_at"] + seen.duration
        assert asked_withdrawal - 1.0 - SLACK <= ends_at <= withdrawn + 1.0, (kind, ends_at - withdrawn)
    ledger = [json.loads(line) for line in (session / "consent.jsonl").read_text().splitlines()]
    assert [e["record"]["decision"] for e in ledger].count("withdrawn") == 1


async def test_consenting_again_after_a_withdrawal_starts_a_second_file(
    node: RunningNode, rec_root: Path, clip
) -> None:  # type: ignore[no-untyped-def]
    """docs/recording.md: one file per capture, ``<participant>-<kind>-<n>``; a new consent after a
    withdrawal is a new capture, ``-2``, holding only what came after that consent."""
    stage = "rec-" + uuid.uuid4().hex[:6]
    async with MedstageClient(node.url) as host, MedstageClient(node.url) as speaker:
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Speaker", "speaker")
        await consent(speaker, ["media"])
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        await host.wait_media(kind="video", timeout=10)
        started = await host.request({"type": "recording.start"})
        session = rec_root / stage / started["session_id"]
        await asyncio.sleep(2)
        await speaker.request({"type": "consent.withdraw"})
        withdrawn = time.time()
        await asyncio.sleep(1.5)  # not recorded
        asked_again = time.time()
        await consent(speaker, ["media"])
        answered_again = time.time()
        await asyncio.sleep(2.5)
        asked_stop = time.time()
        await host.request({"type": "recording.stop"})
        done = await wait_status(session, "complete")

    pid = speaker.participant_id
    files = {Path(t["file"]).name: t for t in done["tracks"]}
    names = {f"{pid}-{kind}-{n}.webm.sealed" for kind in ("audio", "video") for n in (1, 2)}
    assert set(files) == names, files
    for kind in ("audio", "video"):
        first, second = files[f"{pid}-{kind}-1.webm.sealed"], files[f"{pid}-{kind}-2.webm.sealed"]
        one = assert_decodable(session / first["file"], kind)
        assert first["first_frame_at"] + one.duration <= withdrawn + 1.0, (kind, "the first file ends")
        two = assert_decodable(session / second["file"], kind)
        # Nothing from the time without consent: the second file starts after it was given again...
        assert second["first_frame_at"] >= asked_again, (kind, second["first_frame_at"] - asked_again)
        assert two.duration <= time.time() - asked_again, (kind, two.duration)
        # ...and holds what came after it (from a keyframe: GOP 1 s, or sooner on PLI).
        assert two.duration >= asked_stop - answered_again - 1.0 - SLACK, (kind, two.duration)
    decisions = [json.loads(line)["record"]["decision"] for line in (session / "consent.jsonl").open()]
    assert decisions == ["granted", "withdrawn", "granted"], decisions
    assert recording_cli("verify", str(session)).returncode == 0


async def test_auto_mode_records_from_the_start_and_only_who_consented(
    tmp_path: Path, rec_root: Path, clip
) -> None:  # type: ignore[no-untyped-def]
    """MEDSTAGE_RECORDING_MODE=auto: nobody sends ``recording.start``; consent still decides."""
    auto = start_node(tmp_path, {"MEDSTAGE_RECORDING_MODE": "auto", "MEDSTAGE_RECORDINGS_DIR": str(rec_root)})
    try:
        stage = "rec-" + uuid.uuid4().hex[:6]
        async with (
            MedstageClient(auto.url) as host,
            MedstageClient(auto.url) as yes,
            MedstageClient(auto.url) as no,
        ):
            await host.join(stage, "Dr Host", "host")
            recording = host.joined["state"]["recording"]
            assert recording["mode"] == "auto" and recording["active"] is True, recording
            session = rec_root / stage / recording["session_id"]
            await yes.join(stage, "Dr Yes", "speaker")
            await no.join(stage, "Dr No", "speaker")
            for person in (yes, no):  # the client asks at join: recording, and no decision yet
                assert person.joined["state"]["recording"]["active"] is True
                assert person.joined["state"]["consent"]["mine"] is None, person.joined["state"]["consent"]
            await consent(yes, ["media", "comments"])
            await consent(no, [])
            await yes.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
            await no.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
            await host.wait_for(
                "slot.assigned", lambda m: m["participant_id"] == no.participant_id and m["kind"] == "video"
            )
            await no.request({"type": "comment.post", "text": "secret: I declined"})
            await yes.request({"type": "comment.post", "text": "kept: I consented"})
            await asyncio.sleep(2.5)
            stopped = await host.request({"type": "recording.stop"})
            assert stopped["type"] == "ok"
            done = await wait_status(session, "complete")

        assert done["session_id"] == recording["session_id"]
        files = {(t["participant_id"], t["kind"]): session / t["file"] for t in done["tracks"]}
        assert set(files) == {(yes.participant_id, "audio"), (yes.participant_id, "video")}, done["tracks"]
        assert not list((session / "tracks").glob(f"{no.participant_id}*")), "nothing of who declined"
        for (_, kind), path in files.items():
            assert assert_decodable(path, kind).duration > 1.5
        stored = json.loads((session / "timeline.json").read_text())
        assert "kept: I consented" not in json.dumps(stored), "sealed with its author's key"
        ring = await load_ring(FileKeyStore(default_keys_dir(rec_root)))
        timeline = json.dumps(opened(stored, ring))
        assert "kept: I consented" in timeline and "secret: I declined" not in timeline
        started = [e for e in json.loads(timeline) if e["type"] == "recording.started"]
        assert [e["by"] for e in started] == [None], "the stage started it by itself"
        assert recording_cli("verify", str(session)).returncode == 0
    finally:
        assert auto.stop() == 0


async def test_sigkill_leaves_readable_files_that_repair_finalizes(
    node: RunningNode, rec_root: Path, clip
) -> None:  # type: ignore[no-untyped-def]
    """The node itself is killed; what ``python -m recording repair`` recovers ends within a second
    of the kill (the kill time is the test's, the media's end what PyAV reads in the repaired file)."""
    stage = "rec-" + uuid.uuid4().hex[:6]
    async with MedstageClient(node.url) as host, MedstageClient(node.url) as speaker:
        await host.join(stage, "Dr Host", "host")
        await speaker.join(stage, "Dr Speaker", "speaker")
        await consent(speaker, ["media", "comments"])
        await speaker.publish(EncodedAudioTrack(clip), EncodedVideoTrack(clip))
        asked_start = time.time()
        started = await host.request({"type": "recording.start"})
        session = rec_root / stage / started["session_id"]
        # The reply may leave (a direct write) a moment before the recorder's sink has made the
        # session's directory on disk, which this test reads behind the node's back.
        await eventually(
            lambda: (session / "manifest.json").exists() and len(manifest(session)["tracks"]) == 2, 10
        )
        capturing = time.time()
        await asyncio.sleep(4)
        killed_at = time.time()
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(5)

    tracks = manifest(session)["tracks"]
    assert {t["kind"] for t in tracks} == {"audio", "video"}, tracks
    for track in tracks:
        seen = decode_all(session / track["file"])  # readable as the crash left it
        assert seen.packets > 0 and seen.errors == 0, (track["kind"], seen)

    repaired = recording_cli("repair", str(session))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    for track in manifest(session)["tracks"]:
        path = session / track["file"]
        with open_recorded(path) as container:
            assert container.duration is not None and container.duration > 0, "finalized: has duration"
        assert track["finalized"] is True
        seen = assert_decodable(path, track["kind"])
        # Captured from before ``capturing`` (the manifest listed the track) up to the kill, less at
        # most a second lost; and never more media than the whole recording could hold.
        assert seen.duration >= killed_at - capturing - 1.0 - SLACK, (track["kind"], seen.duration)
        assert seen.duration <= killed_at - asked_start + SLACK, (track["kind"], seen.duration)
        assert asked_start <= track["first_frame_at"] <= capturing + 1.0 + SLACK, track
        lost = killed_at - (track["first_frame_at"] + seen.duration)
        assert -SLACK <= lost <= 1.0, (track["kind"], lost)
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
            manifest = await r.json()
        assert manifest["status"] == "complete"
        msgspec.convert(manifest, RecordingManifest)  # what /api/openapi.json says of it holds
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
                seen = decode_all(path)  # what was written stays readable
                assert seen.frames > 0 and seen.errors == 0, (path.name, seen)
        assert recording_cli("verify", str(session)).returncode == 0
    finally:
        assert node.stop() == 0
