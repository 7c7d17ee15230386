"""``python -m server``: start a node on uvloop with the embedded (in-process) backend."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvloop
from aiohttp import web

from server import logs
from server.app import create_app
from server.config import Config, ConfigError, load

log = logging.getLogger("server")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Start a medstage node. Options also come from MEDSTAGE_* environment "
        "variables and a TOML file (docs/configuration.md).",
    )
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="HTTP/WebSocket port (default 8080)")
    return parser.parse_args(argv)


async def serve(config: Config) -> None:
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=config.shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"medstage is running: open {config.url}/  (Ctrl+C to stop)", flush=True)
    log.info("listening", extra={"host": config.host, "port": config.port, "url": config.url})
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
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
