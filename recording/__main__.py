"""``python -m recording``: tools for recorded sessions, one subcommand per function.

    python -m recording verify SESSION [--root DIR] [--public-key KEY] [--signing-key FILE] [--head HEAD]
    python -m recording repair SESSION [--root DIR]
    python -m recording export SESSION [--root DIR] [--opened FILE [--people-keys DIR]]
    python -m recording report SESSION [--root DIR] [--format json|csv] [--table attendees|questions]
                                       [--people-keys DIR]
    python -m recording sweep [--root DIR] [--dry-run] [--default-days N]
    python -m recording export SESSION --composite [--force] [--size WxH] [--fps N] [--no-progress] ...

SESSION is a session directory, or a session id looked up under ``--root`` (default: the node's
``recordings_dir`` from the same configuration, ``MEDSTAGE_RECORDINGS_DIR`` or ``--config``, else
``~/.local/share/medstage/recordings``; see recording/location.py), searched as ``ROOT/SESSION`` and
``ROOT/<stage>/SESSION``. ``verify`` checks the ledger's chain against the heads the node signed
(recording/evidence.py), with the public key given by ``--public-key`` or else this node's own key
(``--signing-key``; by default ``keys/`` beside the recordings directory that holds the session, where
a node with the default ``signing_key`` keeps it).
Sealed track files (recording/sealed.py) are opened with the people's keys from ``--keys DIR`` (default:
``keys/people/`` beside the recordings directory, the node's file key store), or, with ``--keys-stdin``,
from key records (JSON, one per line) on standard input: how a node on Redis hands them to its export
child, never on a command line. ``verify`` checks sealed files' structure without any key.
Exit status: 0 when the check passes, 1 when it finds a problem or cannot prove the ledger intact
(unsigned, or no key to check the signature with), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from recording.composite import cli as composite_cli
from recording.evidence import TrustedKey, verify_session
from recording.keys import FileKeyStore, default_keys_dir, key_from_dict
from recording.ledger import FILENAME, truncate_incomplete
from recording.location import LocationError, configured_retention_days, configured_root
from recording.repair import RepairFailed, is_finalized, repair_session
from recording.report import TABLES, ReportError, build, to_csv
from recording.retention import sweep
from recording.signing import (
    HEADS_FILENAME,
    NodeKey,
    SignedHead,
    SigningKeyError,
    default_key_path,
    drop_incomplete_tail,
    load_private_key,
    load_public_key,
)
from recording.timeline import export_json
from recording.trackcheck import check_tracks
from recording.vault import KeyRing, load_ring

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
    """Check the consent ledger and its signed heads; name the first record altered, removed or added."""
    session = resolve_session(args.session, args.root)
    ledger = session / FILENAME
    if not ledger.is_file():
        raise UsageError(f"{session} has no consent ledger ({FILENAME})")
    key = _trusted_key(args, session)
    published = [_head(text) for text in args.head]
    try:
        result = verify_session(session, key, published)
    except OSError as exc:
        raise UsageError(f"cannot read {ledger}: {exc.strerror or exc}") from exc
    tracks = check_tracks(session)
    print(result.message)
    for line in tracks.lines:
        print(f"tracks: {line}")
    for line in tracks.problems:
        print(f"tracks: {line}", file=sys.stderr)
    if result.ok and not tracks.problems:
        return EXIT_OK
    if result.where:
        print(f"  {result.where}", file=sys.stderr)
    return EXIT_PROBLEM


def session_ring(args: argparse.Namespace, session: Path) -> KeyRing:
    """The people's keys to open sealed tracks with: from standard input (``--keys-stdin``), else the
    file key store (``--keys``, by default ``keys/people/`` beside the recordings directory)."""
    if getattr(args, "keys_stdin", False):
        ring = KeyRing()
        for number, line in enumerate(sys.stdin, 1):
            if line.strip():
                try:
                    ring.put(key_from_dict(json.loads(line)))
                except (KeyError, TypeError, ValueError) as exc:
                    raise UsageError(f"--keys-stdin: line {number} is not a key record") from exc
        return ring
    directory: Path = getattr(args, "keys", None) or default_keys_dir(session.resolve().parent.parent)
    if not directory.is_dir():
        return KeyRing()
    return asyncio.run(load_ring(FileKeyStore(directory)))


def _trusted_key(args: argparse.Namespace, session: Path) -> TrustedKey:
    """The key given (``--public-key``), else this node's own (by default beside the recordings
    directory that holds ``session``: ``<root>/<stage>/<session>``), else none, and why."""
    if args.public_key:
        try:
            return TrustedKey(load_public_key(args.public_key), f"--public-key {args.public_key}")
        except SigningKeyError as exc:
            raise UsageError(str(exc)) from exc
    path: Path = args.signing_key or default_key_path(session.resolve().parent.parent)
    if args.signing_key is not None and not path.is_file():
        raise UsageError(f"no signing key at {path}")
    if path.is_file():
        try:
            return TrustedKey(load_private_key(path).public_key(), f"this node's key, {path}")
        except SigningKeyError as exc:
            public = path.with_name(path.name + ".pub")
            if not public.is_file():
                raise UsageError(str(exc)) from exc
            try:  # the private key is the node's alone; its public half is beside it
                return TrustedKey(load_public_key(str(public)), f"this node's key, {public}")
            except SigningKeyError as exc2:
                raise UsageError(str(exc2)) from exc2
    return TrustedKey(None, f"no --public-key given and no node key at {path}")


def _head(text: str) -> SignedHead:
    """A signed head published elsewhere (the shared log): its JSON, or a file holding it."""
    try:
        data = text if text.lstrip().startswith("{") else Path(text).read_text(encoding="utf-8")
        return SignedHead.from_dict(json.loads(data))
    except (OSError, ValueError) as exc:
        raise UsageError(f"--head: not a signed head ({exc})") from exc


def cmd_repair(args: argparse.Namespace) -> int:
    """Finalize what a crashed recorder wrote: track files (duration, cues), ledger, timeline, manifest."""
    session = resolve_session(args.session, args.root)
    status = EXIT_OK
    ledger = session / FILENAME
    if ledger.is_file():
        dropped = truncate_incomplete(ledger)
        if dropped:
            print(f"ledger: dropped an incomplete last entry ({dropped} bytes)")
    heads = session / HEADS_FILENAME
    if heads.is_file():
        dropped = drop_incomplete_tail(heads)
        if dropped:
            print(f"signed heads: dropped an incomplete last line ({dropped} bytes)")
    ring = session_ring(args, session)
    try:
        for line in repair_session(session, ring):
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
        _mark_repaired(manifest, ring)
    return status


def cmd_export(args: argparse.Namespace) -> int:
    """Export the session's timeline (msgpack) as JSON next to it; with --composite, its video."""
    session = resolve_session(args.session, args.root)
    if args.composite:
        try:
            return composite_cli.run(session, args, session_ring(args, session))
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
    timeline = session / "timeline.msgpack"
    if not timeline.is_file():
        raise UsageError(f"{session} has no timeline (timeline.msgpack)")
    if args.opened is None:
        print(export_json(timeline))  # as stored: what is sealed stays sealed
        return EXIT_OK
    try:
        print(export_json(timeline, args.opened, ring=_people_ring(args, session)))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return EXIT_OK


def _people_ring(args: argparse.Namespace, session: Path) -> KeyRing:
    """The people's live keys of ``--people-keys`` (a file key store), by default ``keys/people/``
    beside the recordings directory when there is one; else none (nothing sealed opens)."""
    given = args.people_keys or getattr(args, "keys", None)  # ``--keys`` of the sealed tracks, if any
    keys_dir: Path = given or default_keys_dir(session.resolve().parent.parent)
    if given is not None and not keys_dir.is_dir():
        raise UsageError(f"no people's key directory at {keys_dir}")
    return asyncio.run(load_ring(FileKeyStore(keys_dir))) if keys_dir.is_dir() else KeyRing()


def cmd_report(args: argparse.Namespace) -> int:
    """Print the session report: attendance, polls and quizzes, questions (JSON, or a CSV table)."""
    session = resolve_session(args.session, args.root)
    try:  # the people's live keys open what the recording sealed of them; without, nobody is named
        report = build(session, ring=_people_ring(args, session))
    except ReportError as exc:
        raise UsageError(str(exc)) from exc
    if args.format == "csv":
        sys.stdout.write(to_csv(report, args.table))
    else:
        print(json.dumps(report, indent=1, ensure_ascii=False))
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    """Delete the media, timeline and exports of sessions whose retention is over (--dry-run: list them)."""
    default_days = (
        args.default_days
        if args.default_days is not None
        else configured_retention_days(args.config, os.environ)
    )
    now = args.at if args.at is not None else time.time()
    key = None
    if not args.dry_run:
        path: Path = args.signing_key or default_key_path(args.root)
        if path.is_file():
            try:
                key = NodeKey(load_private_key(path), path)
            except SigningKeyError as exc:
                raise UsageError(str(exc)) from exc
        elif args.signing_key is not None:
            raise UsageError(f"no signing key at {path}")
    deleted, refused = sweep(args.root, now, default_days, key, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for c in deleted:
        days = f"{c.retention_days} days" if c.retention_days else "?"
        print(f"{verb} {c.stage_id}/{c.session_id} (retention {days}, expired {_iso(c.expires_at)}): "
              f"{', '.join(c.paths) or 'nothing left'}")  # fmt: skip
    for c, why in refused:
        print(f"not deleted {c.stage_id}/{c.session_id}: {why.message}", file=sys.stderr)
    if not deleted and not refused:
        print(f"nothing expired under {args.root}")
    return EXIT_PROBLEM if refused else EXIT_OK


def _iso(at: float | None) -> str:
    return "never" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mark_repaired(manifest: Path, ring: KeyRing) -> None:
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
                track["finalized"] = is_finalized(candidate, ring)
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False))
    tmp.replace(manifest)


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
    session.add_argument(
        "--keys",
        type=Path,
        metavar="DIR",
        help="the people's keys, to open sealed track files (default: keys/people beside the recordings "
        "directory that holds SESSION)",
    )
    session.add_argument(
        "--keys-stdin",
        action="store_true",
        help="read the people's keys from standard input instead (JSON key records, one per line)",
    )
    verify = _add(commands, "verify", cmd_verify, parents=[session])
    verify.add_argument(
        "--public-key",
        metavar="KEY",
        help="the public key to check the signed heads with: a PEM file, or the base64 of the raw key "
        "(default: this node's key)",
    )
    verify.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        help="this node's key file (default: keys/ledger-ed25519.key beside the recordings directory "
        "that holds SESSION); only read when --public-key is not given",
    )
    verify.add_argument(
        "--head",
        action="append",
        default=[],
        metavar="HEAD",
        help="a signed head published elsewhere, e.g. in the shared log (JSON, or a file): checked too",
    )
    _add(commands, "repair", cmd_repair, parents=[session])
    people_keys = argparse.ArgumentParser(add_help=False)
    people_keys.add_argument(
        "--people-keys",
        type=Path,
        metavar="DIR",
        help="the people's key store (a file key store directory) that opens what is sealed of them "
        "(default: keys/people/ beside the recordings directory, if there is one)",
    )
    export = _add(commands, "export", cmd_export, parents=[session, people_keys])
    export.add_argument(
        "--opened",
        type=Path,
        metavar="FILE",
        help="write the timeline with what is sealed opened (--people-keys) to FILE, outside the "
        "session directory; erased items are placeholders",
    )
    composite_cli.add_arguments(export)
    report = _add(commands, "report", cmd_report, parents=[session, people_keys])
    report.add_argument("--format", choices=("json", "csv"), default="json", help="default: json")
    report.add_argument(
        "--table",
        choices=TABLES,
        default="attendees",
        help="with --format csv: which table (default: attendees)",
    )
    sweep_ = _add(commands, "sweep", cmd_sweep)
    sweep_.add_argument(
        "--root", type=Path, help=f"where recordings are kept (default: as for the others, {DEFAULT_ROOT})"
    )
    sweep_.add_argument(
        "--config", help="the node's TOML configuration file (recordings_dir, recording_retention_days)"
    )
    sweep_.add_argument("--dry-run", action="store_true", help="list what would be deleted; change nothing")
    sweep_.add_argument(
        "--default-days",
        type=int,
        metavar="N",
        help="retention of sessions naming none (default: the node's recording_retention_days; 0: forever)",
    )
    sweep_.add_argument(
        "--signing-key",
        type=Path,
        metavar="FILE",
        help="the node's key, to sign the ledger's deletion records (default: keys/ beside --root)",
    )
    sweep_.add_argument(
        "--at",
        type=float,
        metavar="UNIX_TIME",
        help="judge expiry at this time instead of now (e.g. with --dry-run)",
    )
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
