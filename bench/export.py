"""Composite export benchmark (issue 14): speed, memory over time, and the node's forwarding beside it.

The session: two speakers, each a camera (VP8 640x360 30 fps, ~1 Mbit/s, moving test pattern) and a
microphone (Opus), for ``--minutes`` (10): the load generator's cached clip (tests/support/clip.py,
made once with the ffmpeg CLI) looped, written by the recorder's own TrackWriter with RTP timestamps as
a recording writes them, plus a manifest and a consent ledger where both granted ``share``. Cached
under bench/.cache/export-<minutes>min.

``speed``: ``python -m recording export SESSION --composite --force --no-progress`` (1280x720, 25 fps,
libx264 veryfast: the defaults), ``--runs`` times; for each run the wall time, the speed (session
seconds per wall second) and the RSS of the child and its
segment workers together, sampled every 0.5 s: at 10 %, 50 % and 90 % of the run,
the maximum, and the slope from 10 % to the end (MiB per minute of session: flat is ≈ 0). Prints the
medians. ``--nice 0`` by default here (the CLI's own default is 19): the figure is the export's speed,
not its share of a busy machine.

``beside``: bench/forwarding.py (a real node, one publisher, ``--subscribers`` subscribers, no naive
relay) alone and with an export running beside it (the CLI as the node runs it: in a session of its
own, nice 19, restarted with ``--force`` while the window lasts), alternating, ``--repeat`` pairs: the
node's CPU per packet sent and the packets its subscribers received per second, and their change.

    python bench/export.py speed --minutes 10 --runs 3
    unshare --net sh -c 'ip link set lo up && exec python bench/export.py beside --subscribers 25'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from recording.ledger import Ledger  # noqa: E402
from recording.writer import TrackWriter  # noqa: E402
from tests.support.clip import clip_path  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
T0 = 1_795_000_000.0


def log(message: str) -> None:
    print(f"[export bench] {message}", file=sys.stderr, flush=True)


# --- the session ---------------------------------------------------------------------------------


def _write_track(clip: Path, kind: str, stem: Path, seconds: float, offset_s: float) -> dict:
    """The clip's ``kind`` track looped for ``seconds``, through a TrackWriter (RTP clock timestamps)."""
    clock_rate = 90_000 if kind == "video" else 48_000
    writer = TrackWriter(
        stem, "video/VP8" if kind == "video" else "audio/opus", clock=lambda: T0 + offset_s, max_queue=10**7
    )
    loop = 0
    done = False
    while not done:
        with av.open(str(clip)) as container:
            stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
            assert stream.time_base is not None
            length = 10.0  # tests/support/clip.py: DURATION_S
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                t = loop * length + float(packet.pts * stream.time_base)
                if t >= seconds:
                    done = True
                    break
                writer.write(bytes(packet), 1234 + round(t * clock_rate), packet.is_keyframe)
        loop += 1
    writer.close()
    return {
        "kind": kind,
        "source": "camera",
        "codec": "vp8" if kind == "video" else "opus",
        "file": f"tracks/{writer.path.name}",
        "capture_started_at": T0 + offset_s,
        "capture_ended_at": T0 + offset_s + seconds,
        "first_frame_at": writer.first_wall_time,
        "duration_s": round(writer.written_duration, 3),
        "frames": writer.stats.frames_written,
        "bytes": writer.stats.bytes_written,
        "dropped_frames": writer.stats.dropped,
        "finalized": writer.finalized is not None,
        "error": None,
    }


def make_session(minutes: float) -> Path:
    directory = CACHE / f"export-{minutes:g}min"
    if (directory / "manifest.json").is_file():
        return directory
    clip = clip_path(CACHE)
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    (tmp / "tracks").mkdir()
    ledger = Ledger(tmp / "consent.jsonl")
    tracks, participants = [], []
    seconds = minutes * 60
    for i, pid in enumerate(("p-speaker-a", "p-speaker-b")):
        log(f"writing {pid}'s tracks ({seconds:g} s)")
        record = {
            "record_id": f"c-{pid}",
            "stage_id": "bench",
            "session_id": "bench",
            "participant_id": pid,
            "identity": pid,
            "name": pid,
            "scopes": ["comments", "media", "share"],
            "policy_version": "bench",
            "decision": "granted",
            "at": T0,
            "method": "join_prompt",
        }
        ledger.append(record)
        participants.append({"participant_id": pid, "name": pid, "role": "speaker", "consent": record})
        # B joins 2 s late: the layout has a late joiner, the tracks are not in lockstep.
        for kind in ("video", "audio"):
            entry = _write_track(clip, kind, tmp / "tracks" / f"{pid}-{kind}-1", seconds - 2 * i, 2.0 * i)
            tracks.append({"participant_id": pid, **entry})
    manifest = {
        "version": 1,
        "stage_id": "bench",
        "session_id": "bench",
        "status": "complete",
        "started_at": T0,
        "stopped_at": T0 + seconds,
        "policy_version": "bench",
        "participants": participants,
        "tracks": tracks,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    tmp.rename(directory)
    return directory


# --- speed and memory ----------------------------------------------------------------------------


def _rss(pid: int) -> int:
    """The RSS of ``pid`` and of its descendants (the export's segment workers) together."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                total += _rss(int(child))
    except OSError:
        pass
    return total


def export_once(session: Path, args: argparse.Namespace) -> dict:
    command = [
        sys.executable, "-m", "recording", "export", str(session), "--composite", "--force",
        "--no-progress", "--nice", str(args.nice), "--size", args.size,
        *(["--jobs", str(args.jobs)] if args.jobs else []),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[tuple[float, int]] = []
    while child.poll() is None:
        samples.append((time.monotonic() - started, _rss(child.pid)))
        time.sleep(0.5)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if child.returncode != 0:
        raise SystemExit(f"export failed: {child.stderr.read().decode() if child.stderr else ''}")
    state = json.loads((session / "exports" / "composite.json").read_text())
    duration = float(state["duration_s"])
    samples = [(t, r) for t, r in samples if r > 0]

    def at(fraction: float) -> int:
        return next((r for t, r in samples if t >= fraction * wall), samples[-1][1])

    tail = [(t, r) for t, r in samples if t >= 0.1 * wall]
    slope = 0.0
    if len(tail) > 2:
        slope = statistics.linear_regression([t for t, _ in tail], [r for _, r in tail]).slope  # bytes/s wall
    mib = 1 << 20
    return {
        "wall_s": wall,
        "speed": duration / wall,
        # CPU seconds per session second: what the machine's load does not change; on 2 idle cores the
        # speed approaches 2 / this (x264 and the decoders keep both busy).
        "cpu_per_s": cpu / duration,
        "rss10": at(0.1) / mib,
        "rss50": at(0.5) / mib,
        "rss90": at(0.9) / mib,
        "rss_max": max(r for _, r in samples) / mib,
        # MiB per minute of session rendered (wall seconds * speed = session seconds).
        "slope_mib_per_min": slope / mib * 60 / (duration / wall),
        "bytes": state.get("bytes"),
    }


def cmd_speed(args: argparse.Namespace) -> None:
    session = make_session(args.minutes)
    log(f"session {session}; machine load {os.getloadavg()}")
    runs = []
    for i in range(args.runs):
        r = export_once(session, args)
        runs.append(r)
        log(
            f"run {i + 1}: {r['wall_s']:.1f} s, {r['speed']:.2f}x real time, RSS {r['rss10']:.0f}/"
            f"{r['rss50']:.0f}/{r['rss90']:.0f} MiB (10/50/90 %), max {r['rss_max']:.0f}, "
            f"CPU {r['cpu_per_s']:.3f} s per session s, "
            f"slope {r['slope_mib_per_min']:+.2f} MiB/min"
        )
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "bytes"}
    what = f"{args.minutes:g} min, {args.size}, nice {args.nice}, {args.runs} run(s)"
    print(f"composite export, 2 speakers, {what}")
    print("| wall s | speed | CPU s per s | RSS 10 % | RSS 50 % | RSS 90 % | RSS max | RSS slope | file |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {med['wall_s']:.1f} | **{med['speed']:.2f}x** | {med['cpu_per_s']:.3f} "
        f"| {med['rss10']:.0f} MiB | {med['rss50']:.0f} MiB "
        f"| {med['rss90']:.0f} MiB | {med['rss_max']:.0f} MiB | {med['slope_mib_per_min']:+.2f} MiB/min "
        f"| {runs[-1]['bytes'] / 1e6:.1f} MB |"
    )
    print(f"load average at the end: {os.getloadavg()}")


# --- forwarding beside an export ------------------------------------------------------------------


def _forwarding(args: argparse.Namespace, out: Path) -> dict:
    command = [
        sys.executable, str(ROOT / "bench" / "forwarding.py"), "--subscribers", str(args.subscribers),
        "--no-naive", "--window", str(args.window), "--json", str(out),
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())[0]
    return {
        "us_per_packet": 1e6 * result["server_cpu_s"] / max(1.0, result["sent"]),
        "received_pps": result["received_by_subscribers"] / result["window_s"],
        "sent_pps": result["sent"] / result["window_s"],
    }


def _export_loop(session: Path, size: str, stop: threading.Event) -> None:
    """Exports, started over and over until ``stop``, as the node starts them: a session of their own
    (the CLI then lowers its autogroup as well as its nice: recording/composite/cli.py)."""
    while not stop.is_set():
        child = subprocess.Popen(
            [sys.executable, "-m", "recording", "export", str(session), "--composite", "--force",
             "--no-progress", "--size", size],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        while child.poll() is None:
            if stop.wait(0.2):
                child.kill()
        child.wait()


def cmd_beside(args: argparse.Namespace) -> None:
    session = make_session(args.minutes)
    alone: list[dict] = []
    beside: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(args.repeat):
            for with_export in (False, True) if pair % 2 == 0 else (True, False):
                stop = threading.Event()
                worker = threading.Thread(target=_export_loop, args=(session, args.size, stop))
                if with_export:
                    worker.start()
                    time.sleep(2.0)  # the export past its start-up, encoding
                try:
                    r = _forwarding(args, Path(tmp) / f"run-{pair}-{with_export}.json")
                finally:
                    stop.set()
                    if with_export:
                        worker.join()
                (beside if with_export else alone).append(r)
                log(f"pair {pair + 1}, export beside: {with_export}: {r}")
    a = {k: statistics.median(r[k] for r in alone) for k in alone[0]}
    b = {k: statistics.median(r[k] for r in beside) for k in beside[0]}
    print(f"node forwarding, {args.subscribers} subscribers, window {args.window:g} s, {args.repeat} pairs")
    print("| | CPU µs per packet sent | packets sent /s | received by subscribers /s |")
    print("|---|---|---|---|")
    print(f"| alone | {a['us_per_packet']:.2f} | {a['sent_pps']:.0f} | {a['received_pps']:.0f} |")
    print(
        f"| export beside (nice 19) | {b['us_per_packet']:.2f} | {b['sent_pps']:.0f} "
        f"| {b['received_pps']:.0f} |"
    )
    print(
        f"| change | **{100 * (b['us_per_packet'] / a['us_per_packet'] - 1):+.1f} %** "
        f"| {100 * (b['sent_pps'] / a['sent_pps'] - 1):+.1f} % "
        f"| {100 * (b['received_pps'] / a['received_pps'] - 1):+.1f} % |"
    )
    print(f"load average at the end: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("speed", help="export speed and RSS over time")
    speed.add_argument("--runs", type=int, default=3)
    speed.add_argument("--nice", type=int, default=0)
    speed.add_argument("--jobs", type=int, default=0, help="segment workers (0: the CLI's default)")
    beside = commands.add_parser("beside", help="forwarding CPU with an export beside the node")
    beside.add_argument("--subscribers", type=int, default=25)
    beside.add_argument("--window", type=float, default=15.0)
    beside.add_argument("--repeat", type=int, default=2)
    for sub in (speed, beside):
        sub.add_argument("--minutes", type=float, default=10.0)
        sub.add_argument("--size", default="1280x720")
    parser.add_argument("--clean", action="store_true", help="delete the cached sessions first")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    if args.clean:
        for path in CACHE.glob("export-*min"):
            shutil.rmtree(path)
    {"speed": cmd_speed, "beside": cmd_beside}[args.command](args)


if __name__ == "__main__":
    main()
