"""What ``verify`` checks of sealed track files without any key: header, the manifest's key id, the
chunks' structure; a crash's cut tail said, not a failure; a file that is gone not its concern."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recording.keys import new_key
from recording.sealed import HEADER_BYTES, MAGIC
from recording.trackcheck import check_tracks
from tests.support.session_maker import Capture, Speaker, make_session

KEY, OTHER = new_key("id-p-a", 1.0), new_key("id-p-b", 1.0)


@pytest.fixture
def session(tmp_path: Path) -> Path:
    return make_session(
        tmp_path / "s", [Speaker("p-a", (200, 30, 30), captures=[Capture(0.0, 1.0)], key=KEY)]
    )


def _manifest(session: Path) -> dict:
    return json.loads((session / "manifest.json").read_text())


def test_intact_sealed_tracks_pass_and_are_listed(session: Path) -> None:
    result = check_tracks(session)
    assert result.problems == []
    assert len(result.lines) == 2 and all(f"sealed with key {KEY.key_id}" in line for line in result.lines)


def test_a_cut_last_chunk_is_said_not_failed(session: Path) -> None:
    video = session / "tracks" / "p-a-video-1.webm.sealed"
    os.truncate(video, video.stat().st_size - 10)
    result = check_tracks(session)
    assert result.problems == [] and any("a cut last chunk of" in line for line in result.lines)


def test_another_key_a_plain_file_or_damage_fail(session: Path) -> None:
    video = session / "tracks" / "p-a-video-1.webm.sealed"
    raw = video.read_bytes()
    # The header names another key than the manifest (and than its own chunks).
    video.write_bytes(MAGIC + bytes.fromhex(OTHER.key_id) + raw[len(MAGIC) + 16 :])
    assert [p for p in check_tracks(session).problems if f"sealed with key {OTHER.key_id}" in p]
    # A plain file where the manifest says sealed.
    video.write_bytes(b"\x1a\x45\xdf\xa3" + b"\0" * 100)
    assert [p for p in check_tracks(session).problems if "the file is not" in p]
    # An impossible chunk length.
    video.write_bytes(raw[:HEADER_BYTES] + b"\xff\xff\xff\xff" + raw[HEADER_BYTES + 4 :])
    assert [p for p in check_tracks(session).problems if "impossible length" in p]
    # A chunk of another key spliced in.
    video.write_bytes(raw[: HEADER_BYTES + 5] + bytes.fromhex(OTHER.key_id) + raw[HEADER_BYTES + 21 :])
    assert [p for p in check_tracks(session).problems if "another key" in p]


def test_a_sealed_file_the_manifest_calls_plain_fails_and_a_deleted_one_is_not_checked(session: Path) -> None:
    manifest = _manifest(session)
    manifest["tracks"][0]["sealed"] = False
    (session / "manifest.json").write_text(json.dumps(manifest))
    assert len(check_tracks(session).problems) == 1
    (session / manifest["tracks"][0]["file"]).unlink()  # erased: the file is gone
    result = check_tracks(session)
    assert result.problems == [] and len(result.lines) == 1
