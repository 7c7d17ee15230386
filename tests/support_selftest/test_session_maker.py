"""Self-test of tests/support/session_maker.py: the session it writes is what a recording leaves (the
recorder's TrackWriter files, finalized, VP8 and Opus in WebM; a manifest whose first_frame_at places
each file; a ledger SharePolicy reads), and the marks it promises are where it says in the files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import numpy as np

from recording.sharing import SharePolicy
from tests.support.session_maker import FPS, T0, Capture, Speaker, make_session


def test_a_made_session_holds_recorder_files_with_the_marks_where_promised(tmp_path: Path) -> None:
    session = make_session(
        tmp_path,
        [
            Speaker("p-a", (200, 30, 30), flashes=[1.0], beeps=[1.0], audio_delay=0.05),
            Speaker("p-b", (30, 30, 220), share=False, captures=[Capture(0.7, 2.0)]),
        ],
    )
    manifest = json.loads((session / "manifest.json").read_text())
    tracks = {t["file"]: t for t in manifest["tracks"]}
    assert set(tracks) == {f"tracks/p-{p}-{k}-1.webm" for p in "ab" for k in ("video", "audio")}
    assert tracks["tracks/p-b-video-1.webm"]["first_frame_at"] == T0 + 0.7
    assert abs(tracks["tracks/p-a-audio-1.webm"]["first_frame_at"] - (T0 + 0.05)) < 1e-9
    for name, entry in tracks.items():
        assert entry["finalized"] and entry["dropped_frames"] == 0
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name:format=format_name,duration",
             "-of", "json", str(session / name)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        info = json.loads(probe.stdout)
        assert info["streams"][0]["codec_name"] == ("vp8" if entry["kind"] == "video" else "opus")
        assert "webm" in info["format"]["format_name"]
        assert abs(float(info["format"]["duration"]) - entry["duration_s"]) < 0.05
    with av.open(str(session / "tracks/p-a-video-1.webm")) as c:
        lit = [float(f.time) for f in c.decode(video=0) if f.to_ndarray(format="rgb24").min() > 220]
    assert lit and abs(lit[0] - 1.0) < 1 / FPS + 1e-6 and abs(lit[-1] - 1.2) < 2 / FPS
    with av.open(str(session / "tracks/p-a-audio-1.webm")) as c:
        sound = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    loud = np.flatnonzero(np.abs(sound) > 0.25) / 48_000  # file time: the beep at 1.0 s is at 0.95 s
    assert abs(loud[0] - 0.95) < 0.01 and abs(loud[-1] - 1.15) < 0.01
    policy = SharePolicy.of_session(session)
    assert policy.shared("p-a") and not policy.shared("p-b") and policy.allows("p-b", "media")
