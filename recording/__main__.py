"""``python -m recording``: tools for recorded sessions, one subcommand per function.

    python -m recording verify SESSION [--root DIR]
    python -m recording repair SESSION [--root DIR]
    python -m recording export SESSION [--root DIR]

SESSION is a session directory, or a session id looked up under ``--root`` (default: the node's
``recordings_dir`` from the same configuration, ``MEDSTAGE_RECORDINGS_DIR`` or ``--config``, else
``~/.local/share/medstage/recordings``; see recording/location.py), searched as ``ROOT/SESSION`` and
``ROOT/<stage>/SESSION``. ``verify`` also
checks the ledger against ``ledger_count``/``ledger_head`` when the session's ``manifest.json`` has them.
Exit status: 0 when the check passes, 1 when it finds a problem, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from recording.ledger import FILENAME, truncate_incomplete, verify
from recording.location import LocationError, configured_root
from recording.repair import RepairFailed, is_finalized, repair_session
from recording.timeline import export_json

DEFAULT_ROOT = "~/.local/share/medstage/recordings"  # for the help text (location.default_root)
EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """The command line names something that is not there; exit status 2."""


def resolve_session(target: str, root: Path) -> Path:
    """The session directory ``target`` names: a path, or a session id under ``root``."""
    path = Path(target)
    if path.is_dir():
        return path
    candidates = [root / target, *sorted(root.glob(f"*/{target}"))] if root.is_dir() else []
    found = [c for c in candidates if c.is_dir()]
    if not found:
        raise UsageError(f"no session directory {target} (nor a session with that id under {root})")
    if len(found) > 1:
        raise UsageError(f"session id {target} is ambiguous under {root}: {', '.join(map(str, found))}")
    return found[0]


# --- subcommands: one function each, (args) -> exit status -------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    """Check the consent ledger's hash chain; name the first record altered, removed or inserted."""
    session = resolve_session(args.session, args.root)
    ledger = session / FILENAME
    if not ledger.is_file():
        raise UsageError(f"{session} has no consent ledger ({FILENAME})")
    try:
        result = verify(ledger, anchor=_anchor(session / "manifest.json"))
    except OSError as exc:
        raise UsageError(f"cannot read {ledger}: {exc.strerror or exc}") from exc
    print(result.message())
    if result.ok:
        return EXIT_OK
    print(f"  {ledger}, line {result.line}", file=sys.stderr)
    return EXIT_PROBLEM


def cmd_repair(args: argparse.Namespace) -> int:
    """Finalize what a crashed recorder wrote: track files (duration, cues), ledger, timeline, manifest."""
    session = resolve_session(args.session, args.root)
    status = EXIT_OK
    ledger = session / FILENAME
    if ledger.is_file():
        dropped = truncate_incomplete(ledger)
        if dropped:
            print(f"ledger: dropped an incomplete last entry ({dropped} bytes)")
    try:
        for line in repair_session(session):
            print(line)
    except RepairFailed as exc:
        for line in exc.messages:
            print(line)
        status = EXIT_PROBLEM
    timeline = session / "timeline.msgpack"
    if timeline.is_file():
        print(f"timeline: {export_json(timeline)}")
    manifest = session / "manifest.json"
    if manifest.is_file():
        _mark_repaired(manifest)
    return status


def cmd_export(args: argparse.Namespace) -> int:
    """Export the session's timeline (msgpack) as JSON next to it."""
    session = resolve_session(args.session, args.root)
    timeline = session / "timeline.msgpack"
    if not timeline.is_file():
        raise UsageError(f"{session} has no timeline (timeline.msgpack)")
    print(export_json(timeline))
    return EXIT_OK


def _mark_repaired(manifest: Path) -> None:
    """A session a crash interrupted says so; its tracks' finalized flags follow the files."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if data.get("status") == "recording":
        data["status"] = "interrupted"
    for track in data.get("tracks") or []:
        path = manifest.parent / track.get("file", "")
        for suffix in (".webm", ".mkv"):
            candidate = path if path.suffix else path.with_suffix(suffix)
            if candidate.is_file():
                track["finalized"] = is_finalized(candidate)
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    tmp.replace(manifest)


def _anchor(manifest: Path) -> tuple[int, str] | None:
    """``(ledger_count, ledger_head)`` from the session's manifest, when it notes them."""
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    count, head = (
        (data.get("ledger_count"), data.get("ledger_head")) if isinstance(data, dict) else (None, None)
    )
    if type(count) is int and isinstance(head, str):
        return count, head
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recording", description="Tools for recorded sessions.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    session = argparse.ArgumentParser(add_help=False)  # what every per-session subcommand takes
    session.add_argument(
        "session", metavar="SESSION", help="a session directory, or a session id under --root"
    )
    session.add_argument(
        "--root",
        type=Path,
        help="where recordings are kept (default: the node's recordings_dir, from MEDSTAGE_RECORDINGS_DIR "
        f"or --config, else {DEFAULT_ROOT})",
    )
    session.add_argument("--config", help="the node's TOML configuration file (for its recordings_dir)")
    _add(commands, "verify", cmd_verify, parents=[session])
    _add(commands, "repair", cmd_repair, parents=[session])
    _add(commands, "export", cmd_export, parents=[session])
    return parser


def _add(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: Callable[[argparse.Namespace], int],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """One subcommand: its help is the first line of ``run``'s docstring."""
    summary = (run.__doc__ or "").strip().splitlines()[0]
    sub = commands.add_parser(name, parents=list(parents), help=summary, description=summary)
    sub.set_defaults(run=run)
    return sub


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "root", None) is None:  # the node's, wherever this runs from
            args.root = configured_root(args.config, os.environ)
        status: int = args.run(args)
    except (LocationError, UsageError) as exc:
        parser.exit(EXIT_USAGE, f"{parser.prog} {args.command}: error: {exc}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
