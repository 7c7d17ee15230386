"""``python -m recording export SESSION --composite``: the export at low priority, with a progress bar."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from recording.composite.export import CompositeExport, Progress
from recording.composite.plan import ExportError
from recording.composite.video import VideoSettings
from recording.vault import KeyRing

DEFAULT_NICE = 19  # below everything: the node sharing the machine keeps its CPU (docs/benchmarks.md)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("composite export (--composite)")
    group.add_argument(
        "--composite",
        action="store_true",
        help="build exports/composite.mp4: one playable file of the tracks shared with attendees",
    )
    group.add_argument(
        "--force", action="store_true", help="start over, even if an export is done or half done"
    )
    group.add_argument("--size", default="1280x720", metavar="WxH", help="picture size (default 1280x720)")
    group.add_argument("--fps", type=int, default=25, help="frames per second (default 25)")
    group.add_argument("--preset", default="veryfast", help="libx264 preset (default veryfast)")
    group.add_argument("--crf", type=int, default=23, help="libx264 quality, lower is better (default 23)")
    group.add_argument(
        "--segment-s", type=float, default=30.0, help="seconds per resumable segment (default 30)"
    )
    group.add_argument(
        "--nice", type=int, default=DEFAULT_NICE, help=f"CPU niceness to add (default {DEFAULT_NICE})"
    )
    group.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="processes encoding video segments at once (default: one per core)",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar (a line when done)")


def settings(args: argparse.Namespace) -> VideoSettings:
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
    if not (16 <= width <= 3840 and 16 <= height <= 2160) or width % 2 or height % 2:
        raise ValueError("--size: even numbers, from 16x16 to 3840x2160")
    if not 1 <= args.fps <= 60:
        raise ValueError("--fps: 1 to 60")
    if not 0 <= args.crf <= 51:
        raise ValueError("--crf: 0 to 51")
    if not 1 <= args.segment_s <= 3600:
        raise ValueError("--segment-s: 1 to 3600")
    if args.jobs is not None and not 1 <= args.jobs <= 64:
        raise ValueError("--jobs: 1 to 64")
    return VideoSettings(width=width, height=height, fps=args.fps, preset=args.preset, crf=args.crf)


def lower_priority(nice: int) -> None:
    """Below the node: ``nice`` for this process and, when it leads its own session (the node starts
    it so), for the session's autogroup too. With autogroup scheduling (Linux's default:
    /proc/sys/kernel/sched_autogroup_enabled) the CPU is shared between sessions first and a process's
    nice counts only inside its own: measured by bench/export.py, an export at nice 19 in a session of
    its own still took its full share from a node beside it until its autogroup was lowered too."""
    os.nice(nice)
    if os.getsid(0) == os.getpid():
        try:
            Path("/proc/self/autogroup").write_text(str(min(19, nice)))
        except OSError:  # no autogroups (kernel option), or not Linux: the nice above is what counts
            pass


def run(session: os.PathLike[str] | str, args: argparse.Namespace, ring: KeyRing | None = None) -> int:
    """Export; 0 when ``exports/composite.mp4`` is there, 1 when it could not be made. Sealed tracks
    are read with the keys of ``ring``."""
    video = settings(args)
    if args.nice > 0:
        lower_priority(args.nice)
    export = CompositeExport(
        Path(session), video, segment_s=args.segment_s, force=args.force, jobs=args.jobs, ring=ring
    )
    try:
        if args.no_progress:
            result = export.run()
        else:
            result = _with_bar(export)
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(result)
    return 0


def _with_bar(export: CompositeExport) -> Path:
    from rich import progress as rich  # only for the bar: --no-progress (the node's runs) needs none

    columns = (
        rich.TextColumn("{task.description:<10}"),
        rich.BarColumn(),
        rich.TextColumn("{task.percentage:>5.1f} %"),
        rich.TextColumn("{task.fields[media]}"),
        rich.TimeElapsedColumn(),
        rich.TimeRemainingColumn(),
    )
    with rich.Progress(*columns, transient=False) as bar:
        task = bar.add_task("export", total=1.0, media="")

        def update(p: Progress) -> None:
            bar.update(
                task,
                completed=p.fraction,
                description=p.stage,
                media=f"{_clock(p.done_s)} / {_clock(p.total_s)}",
            )

        export.on_progress = update
        return export.run()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
