"""``python -m server people ...``: a person's data rights from the command line, through a running
node's HTTP API (the node does the work: its sockets, its recorders, its ledger), called with a
platform token signed by the first configured API key (as ``python -m server token --admin``).

    python -m server people erase IDENTITY [--url URL] [--config FILE]
    python -m server people erasure IDENTITY ERASURE_ID [--url URL] [--config FILE]

``erase`` prints the erasure's proof (JSON, docs/recording.md "Erasure"); ``erasure`` prints it again.
Exit status: 0 done, 1 refused or the node unreachable (the reason on stderr), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from server.auth import Authenticator, parse_keys


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m server people",
        description=__doc__.split("\n\n")[0],
        epilog="Also: python -m server people export --help (the person's archive), "
        "python -m server people correct --help (their name and profile; server/access_cli.py).",
    )
    commands = top.add_subparsers(dest="command", required=True)
    erase = commands.add_parser("erase", help="erase a person on every node (docs/protocol.md, People)")
    erase.add_argument("identity", help="the person (a token's sub)")
    show = commands.add_parser("erasure", help="print the proof of an erasure made on this node")
    show.add_argument("identity")
    show.add_argument("erasure_id")
    for sub in (erase, show):
        sub.add_argument("--url", help="the node (default: its public_url, or http://HOST:PORT)")
        sub.add_argument("--config", help="TOML configuration file (its api_keys and url)")
        sub.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    return top


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from server.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    base = (args.url or config.url).rstrip("/")
    token = Authenticator(parse_keys(config.api_keys)).mint("platform", admin=True, ttl_s=300)
    who = urllib.parse.quote(args.identity, safe="")
    if args.command == "erase":
        request = urllib.request.Request(f"{base}/api/people/{who}/erase", method="POST", data=b"")
    else:
        erasure = urllib.parse.quote(args.erasure_id, safe="")
        request = urllib.request.Request(f"{base}/api/people/{who}/erasures/{erasure}")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            reason = f"{problem.get('code')}: {problem.get('detail')}"
        except ValueError:
            reason = str(exc)
        print(f"refused ({exc.code}) {reason}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"cannot reach the node at {base}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=1, ensure_ascii=False))
    return 0
