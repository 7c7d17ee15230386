"""``python -m server``: start a node on uvloop with the embedded (in-process) backend.

``python -m server token ...`` mints an access token instead (development and scripts): signed with
the first API key the node would use (``MEDSTAGE_API_KEYS`` or ``--config``), or with the development
key when none is configured. ``python -m server people ...`` exports a person's data or corrects it,
through the running node (server/people_cli.py).

The node's modules (aiohttp, aiortc, through ``server.app`` and ``server.config``) are imported when
they are needed: ``token`` refuses bad arguments in a fifth of the time the media stack takes to load.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
from typing import TYPE_CHECKING

from rooms.text import bad_text_message, find_bad_text
from server.auth import GRANTS, MAX_TTL_S, ROLES, Authenticator, parse_keys

if TYPE_CHECKING:
    from server.config import Config

log = logging.getLogger("server")

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # stage and club ids (wire.StageId)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Start a medstage node. Options also come from MEDSTAGE_* environment "
        "variables and a TOML file (docs/configuration.md).",
        epilog="python -m server token --help: mint an access token (docs/protocol.md, Tokens). "
        "python -m server people --help: a person's data rights through a running node: archive, "
        "correction, erasure (docs/protocol.md, People).",
    )
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument(
        "--host",
        help="address to listen on (default 0.0.0.0, or 127.0.0.1 in development mode: no API keys)",
    )
    parser.add_argument("--port", type=int, help="HTTP/WebSocket port (default 8080)")
    return parser.parse_args(argv)


def token_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m server token",
        description="Print an access token (a JWT, one line) signed with the first configured API key "
        "(MEDSTAGE_API_KEYS or --config), or with the development key when none is configured.",
    )
    parser.add_argument("--identity", required=True, help="who the bearer is (the token's sub)")
    parser.add_argument("--name", help="display name (default: the name the client sends at join)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stage", help="the stage the token opens")
    where.add_argument("--club", help="the club whose stages the token opens")
    where.add_argument(
        "--person",
        action="store_true",
        help="a person-level token: no stage, no club; for the person's own data (docs/protocol.md, People)",
    )
    parser.add_argument("--role", choices=ROLES, help="role on the stage (default audience)")
    parser.add_argument(
        "--grant",
        action="append",
        choices=sorted(GRANTS),
        dest="grants",
        help="repeat for each grant; narrows the role (default: everything the role allows)",
    )
    parser.add_argument("--admin", action="store_true", help="a platform token: the whole HTTP API")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    parser.add_argument("--config", help="TOML configuration file (for its api_keys)")
    return parser


def mint_token(argv: list[str]) -> int:
    """``python -m server token``: the token on stdout, warnings on stderr; bad arguments exit 2."""
    parser = token_parser()
    args = parser.parse_args(argv)  # exits 2 with a message on bad arguments
    # Arguments that are not UTF-8 arrive as lone surrogates (PEP 383): no node would accept them.
    texts = {"identity": args.identity, "name": args.name, "stage": args.stage, "club": args.club}
    where = find_bad_text(texts)
    if where is not None:
        parser.error(bad_text_message(f"--{where}"))
    if not 1 <= len(args.identity) <= 64:
        parser.error("--identity: 1-64 characters")
    if args.name is not None and not 1 <= len(args.name) <= 64:
        parser.error("--name: 1-64 characters")
    for flag in ("stage", "club"):
        value = getattr(args, flag)
        if value is not None and not _ID.fullmatch(value):
            parser.error(f"--{flag}: 1-64 characters of A-Z a-z 0-9 _ -")
    if args.stage is None and args.club is None and not args.person and not args.admin:
        parser.error("one of --stage, --club, --person or --admin is required (the token would open nothing)")
    if not 0 < args.ttl <= MAX_TTL_S:
        parser.error(f"--ttl: 1 to {MAX_TTL_S} seconds")
    from server.config import ConfigError, load

    try:
        config = load(args.config)
    except ConfigError as exc:
        parser.error(f"configuration error: {exc}")
    auth = Authenticator(parse_keys(config.api_keys))
    if auth.dev:
        print(
            "warning: no API keys configured (MEDSTAGE_API_KEYS or api_keys in --config): signed with the "
            "development key, accepted only by nodes in development mode",
            file=sys.stderr,
        )
    token = auth.mint(
        args.identity,
        name=args.name,
        role=args.role,
        stage=args.stage,
        club=args.club,
        grants=args.grants,
        admin=args.admin,
        ttl_s=args.ttl,
    )
    print(token)
    return 0


def listening(config: Config) -> str:
    """Where the node listens, for the start-up line: in development mode, whether the network can
    reach it (anyone who can may mint tokens for any role) and how to change that."""
    host = config.listen_host
    if not config.dev_mode:
        return f"listening on {host}"
    if not config.host:
        return f"development mode: listening on {host} only; --host 0.0.0.0 opens it to the network"
    if host.startswith("127.") or host in ("::1", "localhost"):
        return f"development mode: listening on {host}"
    return f"development mode on {host}: anyone who reaches it can mint tokens; set MEDSTAGE_API_KEYS"


async def serve(config: Config) -> None:
    from aiohttp import web

    from server.app import create_app

    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.port, backlog=config.listen_backlog)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"medstage is running: open {config.url}/  ({listening(config)}; Ctrl+C to stop)", flush=True)
    log.info("listening", extra={"host": config.listen_host, "port": config.port, "url": config.url})
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["token"]:
        return mint_token(argv[1:])
    if argv[:1] == ["people"]:
        from server import people_cli

        return people_cli.main(argv[1:])
    return run_node(argv)


def run_node(argv: list[str]) -> int:
    import uvloop

    from server import logs
    from server.config import ConfigError, load

    args = parse_args(argv)
    try:
        config = load(args.config, overrides={"host": args.host, "port": args.port})
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_format, config.log_level)
    uvloop.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
