"""The composite export of one session: plan, sound, layout, video segments, assembly; resumable.

Files, all under ``<session>/exports/``:

    composite.json         the state: status, progress, settings, the inputs' fingerprint, the layout,
                           the segments done (rewritten atomically after each step)
    composite.audio.m4a    the mixed sound (AAC), made first: the levels it measures decide the layout
    composite.seg-NNNNN.mp4  the video, ``segment_s`` at a time (H.264, each starting with a keyframe)
    composite.lock         held (flock) while an export runs: a second one is refused, not interleaved
    composite.mp4          the result: segments and sound remuxed (no re-encoding) with ``faststart``,
                           renamed into place when complete; the parts are then deleted

A run after an interruption (even a SIGKILL) keeps the sound and every finished segment if the
inputs and settings are those the state names, and goes on from the first segment missing; a
half-written part only ever exists under a ``.tmp`` name. A changed input (a new consent decision, a
repaired track) or ``force`` starts over.
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from queue import Empty
from typing import Any

import av

from recording.composite.audio import mix_audio
from recording.composite.layout import Scene, Span, scenes
from recording.composite.plan import ExportError, Plan, PlannedTrack, plan_session
from recording.composite.video import Compositor, VideoSettings, encode_segment
from recording.sealed import SealedError
from recording.signing import write_atomic
from recording.vault import KeyRing

STATE_VERSION = 1
EXPORTS = "exports"
STATE = "composite.json"
RESULT = "composite.mp4"
SEGMENT_S = 30.0
DEFAULT_SETTINGS = VideoSettings()
PR_SET_PDEATHSIG = 1  # linux/prctl.h
AUDIO_SHARE = 0.03  # of the progress bar: the sound pass is a few per cent of the work


class ExportBusy(ExportError):
    """Another process is exporting this session right now."""


@dataclass(frozen=True, slots=True)
class Progress:
    fraction: float  # 0..1 of the whole export
    stage: str  # "audio", "video", "assembling", "done"
    done_s: float  # seconds of the session rendered
    total_s: float


def exports_dir(session_dir: Path) -> Path:
    return session_dir / EXPORTS


def read_state(session_dir: Path) -> dict[str, Any] | None:
    """The state file, or None (never started, or unreadable: then it starts over)."""
    try:
        data = json.loads((exports_dir(session_dir) / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == STATE_VERSION else None


class _Lock:
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ExportBusy("an export of this session is already running") from None

    def release(self) -> None:
        os.close(self.fd)  # closing drops the flock; a killed process drops it too


def export_lock(session_dir: Path) -> _Lock | None:
    """The session's export lock, taken (``ExportBusy`` while an export runs); None when the session
    has no ``exports/`` (nothing was ever exported). Retention holds it while it deletes."""
    directory = exports_dir(session_dir)
    if not directory.is_dir():
        return None
    return _Lock(directory / "composite.lock")


def _refuse_deleted(session_dir: Path) -> None:
    try:
        manifest = json.loads((session_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # plan_session says what is wrong with it
    if isinstance(manifest, dict) and manifest.get("status") == "deleted":
        raise ExportError("the session's recording was deleted")


def _segment_name(index: int) -> str:
    return f"composite.seg-{index:05d}.mp4"


class CompositeExport:
    """One run of the export of ``session_dir``; :meth:`run` does everything that is not done yet."""

    def __init__(
        self,
        session_dir: Path,
        settings: VideoSettings = DEFAULT_SETTINGS,
        *,
        segment_s: float = SEGMENT_S,
        force: bool = False,
        progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.time,
        jobs: int | None = None,
        ring: KeyRing | None = None,  # the people's keys, for sealed tracks
    ) -> None:
        self.session_dir = session_dir
        self.ring = ring
        # Segment workers: one per core by default (their output is the same as one process's).
        self.jobs = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
        self.dir = exports_dir(session_dir)
        self.settings = settings
        self.segment_s = segment_s
        self.force = force
        self.on_progress = progress
        self.clock = clock
        self.state: dict[str, Any] = {}

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> Path:
        """Make ``exports/composite.mp4`` (or find it made from these very inputs); its path."""
        _refuse_deleted(self.session_dir)  # before making ``exports/`` again in a deleted session
        self.dir.mkdir(exist_ok=True)
        lock = _Lock(self.dir / "composite.lock")
        try:
            # Deleted meanwhile (recording/retention.py takes this lock to delete): nothing to make.
            _refuse_deleted(self.session_dir)
            return self._run()
        except ExportError as exc:
            self._fail(str(exc))
            raise
        except (OSError, av.error.FFmpegError, IndexError, ValueError, SealedError) as exc:  # a damaged input
            self._fail(f"{type(exc).__name__}: {exc}")
            raise ExportError(str(exc)) from exc
        finally:
            lock.release()

    def _run(self) -> Path:
        plan = plan_session(self.session_dir, self.ring)
        frames_total = max(1, round(plan.duration * self.settings.fps))
        seg_frames = max(1, round(self.segment_s * self.settings.fps))
        segments = -(-frames_total // seg_frames)
        identity = {
            "fingerprint": plan.fingerprint,
            "settings": self.settings.to_dict(),
            "segment_frames": seg_frames,
        }
        old = read_state(self.session_dir)
        result = self.dir / RESULT
        finished = old is not None and old.get("status") == "done" and result.is_file()
        if not self.force and old is not None and finished and _same(old, identity, "segment_frames"):
            self.state = old  # made from these very inputs (with segments of any length)
            self._report(Progress(1.0, "done", plan.duration, plan.duration))
            return result
        if not self.force and old is not None and not finished and _same(old, identity):
            self.state = old  # resume: the parts made so far fit
        else:
            self._clean()
            self.state = {
                "version": STATE_VERSION,
                **identity,
                "origin": plan.origin,
                "duration_s": round(plan.duration, 3),
                "tracks": [t.file for t in plan.tracks],
                "excluded_tracks": plan.excluded,
                "inputs": plan.inputs,
                "segments_total": segments,
                "segments_done": [],
                "audio_done": False,
                "layout": None,
                "created_at": self.clock(),
            }
        self.state.update(status="running", error=None, file=None, updated_at=self.clock())
        self._save()

        audio = self.dir / "composite.audio.m4a"
        if not (self.state["audio_done"] and audio.is_file() and self.state.get("layout") is not None):
            levels = mix_audio(
                plan.of_kind("audio"),
                plan.duration,
                audio,
                lambda f: self._report(Progress(AUDIO_SHARE * f, "audio", 0.0, plan.duration)),
            )
            layout = scenes(_spans(plan), levels, plan.duration)
            self.state.update(audio_done=True, layout=[s.to_dict() for s in layout])
            self._save()
        layout = [Scene.from_dict(s) for s in self.state["layout"]]

        done = {i for i in self.state["segments_done"] if (self.dir / _segment_name(i)).is_file()}
        pending = [i for i in range(segments) if i not in done]
        jobs = max(1, min(self.jobs, len(pending)))
        if jobs == 1:
            self._encode_here(plan, layout, pending, seg_frames, frames_total, done)
        else:
            self._encode_in_workers(plan, layout, pending, seg_frames, frames_total, done, jobs)

        self._report(Progress(0.99, "assembling", plan.duration, plan.duration))
        assemble(
            [self.dir / _segment_name(i) for i in range(segments)],
            audio,
            result,
            self.settings.fps,
            seg_frames,
        )
        self.state.update(
            status="done",
            progress=1.0,
            file=f"{EXPORTS}/{RESULT}",
            bytes=result.stat().st_size,
            finished_at=self.clock(),
            updated_at=self.clock(),
        )
        self._save()
        for i in range(segments):
            (self.dir / _segment_name(i)).unlink(missing_ok=True)
        audio.unlink(missing_ok=True)
        self._report(Progress(1.0, "done", plan.duration, plan.duration))
        return result

    # --- the video segments ----------------------------------------------------------------------

    def _segment_done(self, index: int, done: set[int], rendered: float, total: float) -> None:
        done.add(index)
        self.state["segments_done"] = sorted(done)
        self.state["progress"] = self._video_progress(rendered, total).fraction
        self._save()

    def _encode_here(
        self, plan: Plan, layout: list[Scene], pending: list[int], seg_frames: int, frames_total: int,
        done: set[int],
    ) -> None:
        compositor = Compositor(plan.of_kind("video"), layout, self.settings)
        fps = self.settings.fps
        # What is made so far, in frames: the segments done before (anywhere: workers of an earlier
        # run leave gaps) and those drawn here. The bar never goes back, nor understates a resume.
        made = sum(min(seg_frames, frames_total - i * seg_frames) for i in done)
        try:
            for index in pending:
                first = index * seg_frames
                count = min(seg_frames, frames_total - first)

                def step(i: int, made: int = made) -> None:
                    self._report(self._video_progress((made + i) / fps, plan.duration))

                encode_segment(compositor, first, count, self.dir / _segment_name(index), step)
                made += count
                self._segment_done(index, done, made / fps, plan.duration)
        finally:
            compositor.close()

    def _encode_in_workers(
        self, plan: Plan, layout: list[Scene], pending: list[int], seg_frames: int, frames_total: int,
        done: set[int], jobs: int,
    ) -> None:
        """The pending segments in ``jobs`` processes, each a contiguous run of them (one seek per
        worker, then decoding forward as a single process does). The compositor's Python work and the
        encoder then use every core: in one process the drawing of a frame waits for nothing but holds
        one core while x264 waits for it (bench/export.py: 3.1x real time in one process on 2 cores)."""
        runs = [pending[k * len(pending) // jobs : (k + 1) * len(pending) // jobs] for k in range(jobs)]
        settings = replace(self.settings, threads=max(1, (os.cpu_count() or 1) // jobs))
        ctx = multiprocessing.get_context("spawn")  # not fork: the node's or the CLI's threads stay home
        queue: Any = ctx.Queue()
        tracks = plan.of_kind("video")
        workers = [
            ctx.Process(
                target=_segment_worker,
                args=(no, tracks, [sc.to_dict() for sc in layout], settings, run, seg_frames,
                      frames_total, self.dir, queue, os.getpid()),
                daemon=True,
            )
            for no, run in enumerate(r for r in runs if r)
        ]
        rendered = [0.0] * len(workers)  # seconds each worker has drawn, for the progress
        base = sum(min(seg_frames, frames_total - i * seg_frames) for i in done) / self.settings.fps
        try:
            for worker in workers:
                worker.start()
            running = len(workers)
            while running:
                try:
                    message = queue.get(timeout=1.0)
                except Empty:
                    dead = [w for w in workers if w.exitcode not in (None, 0)]
                    if dead:
                        raise ExportError(f"a segment worker died (exit code {dead[0].exitcode})") from None
                    continue
                kind, worker_no, value = message
                if kind == "frames":
                    rendered[worker_no] = value
                    total = min(plan.duration, base + sum(rendered))
                    self._report(self._video_progress(total, plan.duration))
                elif kind == "segment":
                    self._segment_done(
                        value, done, min(plan.duration, base + sum(rendered)), plan.duration
                    )
                elif kind == "error":
                    raise ExportError(value)
                elif kind == "finished":
                    running -= 1
        finally:
            for worker in workers:
                if worker.is_alive():
                    worker.terminate()
            for worker in workers:
                worker.join(timeout=5)
            queue.close()

    # --- helpers ---------------------------------------------------------------------------------

    def _video_progress(self, rendered: float, total: float) -> Progress:
        fraction = AUDIO_SHARE + (0.99 - AUDIO_SHARE) * min(1.0, rendered / total if total else 1.0)
        return Progress(fraction, "video", rendered, total)

    def _report(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)

    def _save(self) -> None:
        self.state["updated_at"] = self.clock()
        write_atomic(self.dir / STATE, json.dumps(self.state, indent=1).encode())

    def _fail(self, reason: str) -> None:
        if not self.state:
            self.state = {"version": STATE_VERSION, "segments_done": [], "audio_done": False}
        self.state.update(status="failed", error=reason)
        try:
            self._save()
        except OSError:
            pass

    def _clean(self) -> None:
        """Start over: the parts of an earlier run (its result stays until a new one replaces it)."""
        for path in self.dir.glob("composite.seg-*"):
            path.unlink(missing_ok=True)
        for name in ("composite.audio.m4a", "composite.audio.m4a.tmp"):
            (self.dir / name).unlink(missing_ok=True)


def is_up_to_date(
    session_dir: Path, settings: VideoSettings = DEFAULT_SETTINGS, ring: KeyRing | None = None
) -> bool:
    """Is ``exports/composite.mp4`` finished from the session's inputs as they are now, with these
    settings? (Reads the manifest, the ledger and the tracks' headers: call it off the event loop.)
    Raises ``ExportError`` when there is nothing to export."""
    state = read_state(session_dir)
    if state is None or state.get("status") != "done" or not (exports_dir(session_dir) / RESULT).is_file():
        plan_session(session_dir, ring)  # nothing to export says so even before a first export
        return False
    plan = plan_session(session_dir, ring)
    return state.get("fingerprint") == plan.fingerprint and state.get("settings") == settings.to_dict()


def _same(old: dict[str, Any], identity: dict[str, Any], *ignoring: str) -> bool:
    return all(old.get(k) == v for k, v in identity.items() if k not in ignoring)


def _spans(plan: Plan) -> list[Span]:
    return [Span(t.file, t.participant_id, t.source, t.start, t.end) for t in plan.of_kind("video")]


# --- assembly: remux, no re-encoding -------------------------------------------------------------


def _packets(
    paths: list[Path], kind: str, out_stream: Any, offsets: list[Fraction]
) -> Iterator[tuple[float, int, Any]]:
    """The packets of ``paths`` (one stream of ``kind`` each) end to end, the n-th shifted by
    ``offsets[n]`` seconds, with their time in seconds for interleaving."""
    order = 0
    for path, offset in zip(paths, offsets, strict=True):
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
            tb = stream.time_base
            assert tb is not None
            shift = round(offset / tb)
            for packet in container.demux(stream):
                if packet.dts is None:
                    continue  # the demuxer's flush packet
                packet.pts = None if packet.pts is None else packet.pts + shift
                packet.dts += shift
                packet.stream = out_stream
                order += 1
                yield float(packet.dts * tb), order, packet


def assemble(segments: list[Path], audio: Path, result: Path, fps: int, seg_frames: int) -> None:
    """Join the video segments end to end and put the sound beside them, interleaved by time, into
    ``result`` with the index at the front (``faststart``: a browser plays before the download ends)."""
    tmp = result.with_name(result.name + ".tmp")
    with av.open(os.fspath(segments[0])) as first, av.open(os.fspath(audio)) as sound:
        extradata = first.streams.video[0].codec_context.extradata
        out = av.open(os.fspath(tmp), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            video = out.add_stream_from_template(first.streams.video[0])
            audio_stream = out.add_stream_from_template(sound.streams.audio[0])
            for path in segments[1:]:
                with av.open(os.fspath(path)) as other:
                    if other.streams.video[0].codec_context.extradata != extradata:
                        raise ExportError(
                            f"{path.name} was encoded with other parameters: export again with force"
                        )
            offsets = [Fraction(i * seg_frames, fps) for i in range(len(segments))]
            merged = heapq.merge(
                _packets(segments, "video", video, offsets),
                _packets([audio], "audio", audio_stream, [Fraction(0)]),
                key=lambda item: (item[0], item[1]),
            )
            for _, _, packet in merged:
                out.mux(packet)
        finally:
            out.close()
    os.replace(tmp, result)


def _segment_worker(
    worker_no: int,
    tracks: list[PlannedTrack], layout: list[dict[str, Any]], settings: VideoSettings, run: list[int],
    seg_frames: int, frames_total: int, directory: Path, queue: Any, parent: int,
) -> None:
    """One worker of ``_encode_in_workers``: encodes the segments of ``run`` in order, saying how far it
    got; stops when its parent is gone (a killed export must not leave encoders behind that would race
    a resumed one for the same segment files)."""
    _die_with_parent()
    compositor = Compositor(tracks, [Scene.from_dict(sc) for sc in layout], settings)
    drawn = 0

    try:
        for index in run:
            first = index * seg_frames
            count = min(seg_frames, frames_total - first)

            def step(i: int, before: int = drawn) -> None:
                if os.getppid() != parent:
                    raise SystemExit(1)
                queue.put(("frames", worker_no, (before + i) / settings.fps))

            encode_segment(compositor, first, count, directory / _segment_name(index), step)
            drawn += count
            queue.put(("frames", worker_no, drawn / settings.fps))
            queue.put(("segment", worker_no, index))
    except Exception as exc:  # said to the parent, which fails the export with it
        queue.put(("error", worker_no, f"{type(exc).__name__}: {exc}"))
    finally:
        compositor.close()
    queue.put(("finished", worker_no, None))


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when its parent dies (even by SIGKILL), at once rather
    than at the next progress check."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the progress check above still stops it
        pass
