"""The composite export of sealed tracks: read through their publishers' keys (in worker processes
too, and from the CLI's standard input), an erased person's tracks (their key gone) left out of the
picture and the sound, and no plaintext track left anywhere on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from recording.composite import CompositeExport, VideoSettings, read_state
from recording.keys import key_to_dict, new_key
from recording.sealed import key_id_of
from recording.vault import KeyRing
from tests.conftest import ROOT
from tests.recording.test_composite_export import _frames, _sound, _tone_envelope
from tests.support.session_maker import Capture, Speaker, make_session

SETTINGS = VideoSettings(width=320, height=180, fps=25, preset="ultrafast")
A_KEY, B_KEY = new_key("id-p-a", 1.0), new_key("id-p-b", 1.0)
A_RGB, B_RGB = (200, 30, 30), (30, 30, 220)
A_HZ, B_HZ = 800.0, 3000.0


def _session(directory: Path) -> Path:
    speakers = [
        Speaker("p-a", A_RGB, captures=[Capture(0.0, 3.0)], tone_hz=A_HZ, tone_always=True, key=A_KEY),
        Speaker("p-b", B_RGB, captures=[Capture(0.0, 3.0)], tone_hz=B_HZ, tone_always=True, key=B_KEY),
    ]
    session = make_session(directory, speakers)
    assert all(key_id_of(p) is not None for p in (session / "tracks").iterdir())
    return session


def _pixels(rgb: np.ndarray, colour: tuple[int, int, int]) -> int:
    near = np.abs(rgb.astype(int) - np.array(colour)).max(axis=2) < 40
    return int(near.sum())


def _heard(session: Path, hz: float) -> float:
    return float(np.median(_tone_envelope(_sound(session / "exports" / "composite.mp4"), hz)))


def _no_plaintext_left(session: Path) -> None:
    for path in session.rglob("*"):
        if path.is_file() and path.suffix in (".webm", ".mkv"):
            raise AssertionError(f"a plaintext track on disk: {path}")


def test_sealed_tracks_are_exported_through_their_keys_in_worker_processes(tmp_path: Path) -> None:
    session = _session(tmp_path / "s")
    CompositeExport(session, SETTINGS, segment_s=1.0, jobs=2, ring=KeyRing([A_KEY, B_KEY])).run()
    state = read_state(session)
    assert state is not None and state["status"] == "done" and state["excluded_tracks"] == 0
    frames = _frames(session / "exports" / "composite.mp4")
    middle = frames[len(frames) // 2][1]
    assert _pixels(middle, A_RGB) > 1000 and _pixels(middle, B_RGB) > 1000
    assert _heard(session, A_HZ) > 0.05 and _heard(session, B_HZ) > 0.05
    _no_plaintext_left(session)


def test_an_erased_persons_tracks_are_left_out_of_the_export(tmp_path: Path) -> None:
    session = _session(tmp_path / "s")
    # B's key destroyed: the ring holds only A's. The CLI gets it on its standard input, as the node
    # hands keys to its export child (never on the command line).
    run = subprocess.run(
        [sys.executable, "-m", "recording", "export", str(session), "--composite", "--no-progress",
         "--size", "320x180", "--preset", "ultrafast", "--nice", "0", "--jobs", "1", "--keys-stdin"],
        input=json.dumps(key_to_dict(A_KEY)) + "\n", capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert A_KEY.key_id not in run.stdout + run.stderr
    state = read_state(session)
    assert state is not None and state["excluded_tracks"] == 2, state  # B's camera and microphone
    assert all("p-b" not in t for t in state["tracks"])
    frames = _frames(session / "exports" / "composite.mp4")
    assert max(_pixels(rgb, B_RGB) for _, rgb in frames) == 0
    assert _pixels(frames[len(frames) // 2][1], A_RGB) > 1000
    assert _heard(session, A_HZ) > 50 * _heard(session, B_HZ)
    _no_plaintext_left(session)

    # With no key at all, there is nothing to export: said, not a crash.
    none = subprocess.run(
        [sys.executable, "-m", "recording", "export", str(session), "--composite", "--no-progress",
         "--force", "--keys-stdin"],
        input="", capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert none.returncode == 1 and "nothing to export" in none.stderr, none.stderr
