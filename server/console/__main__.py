"""The moderator console: ``python -m server.console --url URL --token TOKEN --stage ID [--stage ID ...]``.

A terminal client of ``GET /console`` (docs/console.md): the live feed of the stages it watches,
printed above a prompt (prompt_toolkit), moderator commands with completion and history, and tables
of stages, participants and audit records. One socket per stage, msgpack frames; it reconnects the
way the browser does (1001, 1006, 1011, 1012, 1013, 4010, with backoff; ``retry_after`` honoured).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from server.console.shell import INSTALL_HINT, run, terminal_prompt

HISTORY_FILE = Path("~/.medstage_console_history")


def _usable(path: Path) -> Path | None:
    """The history file, created if need be; None (history in memory only) if it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:
        return None
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.console", description=__doc__.split("\n\n")[1])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the node (default: %(default)s)")
    parser.add_argument("--token", default=os.environ.get("MEDSTAGE_TOKEN"), help="or MEDSTAGE_TOKEN")
    parser.add_argument("--stage", action="append", required=True, help="a stage to watch (repeatable)")
    parser.add_argument("--history", default=str(HISTORY_FILE), help="history file (default: %(default)s)")
    parser.add_argument("--no-history-file", action="store_true", help="keep the history in memory only")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("a moderator token is needed: --token or MEDSTAGE_TOKEN")
    history = None if args.no_history_file else _usable(Path(args.history).expanduser())
    prompt = terminal_prompt() if sys.stdin.isatty() else None  # a pipe needs no prompt
    if sys.stdin.isatty() and prompt is None:
        print(
            "prompt_toolkit is not installed: no prompt, completion or history; commands are read line by"
            f" line. For the full console: {INSTALL_HINT}",
            file=sys.stderr,
            flush=True,
        )
    stage_ids = list(dict.fromkeys(args.stage))
    try:
        return asyncio.run(run(args.url, args.token, stage_ids, history, prompt))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
