"""The aiohttp application: routes, static client, and the node's lifecycle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from media import peer
from server import loophealth
from server.api import clubs as clubs_api
from server.api import erasures as erasures_api
from server.api import openapi
from server.api import people as people_api
from server.api import playback as playback_api
from server.api import stages as http_api
from server.api.common import bearer, problem
from server.auth import AuthError
from server.closecodes import CloseCode
from server.config import Config
from server.gcpolicy import GcKeeper
from server.host import gauges
from server.host.node import Node
from server.signalling.endpoints import console_handler, websocket_handler
from server.signalling.remote import remote_factory

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


@web.middleware
async def _problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Unhandled HTTP errors become problem documents too (404 on an unknown API path...); a revoked
    identity's token opens no /api call (checked here once, for every route)."""
    try:
        if request.path.startswith("/api/") and "Authorization" in request.headers:
            await _refuse_revoked(request)
        return await handler(request)
    except AuthError as exc:
        response = problem(exc.status, exc.code, exc.message)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", error_description="{exc.code}"'
            )
        return response
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            return problem(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        raise
    except Exception:
        # A bug, not bad input (bad input is a 4xx, tests/server/test_api_walk.py): still a problem
        # document for the API's clients, and a log line with the request for us.
        if not request.path.startswith("/api/"):
            raise
        log.exception("request failed", extra={"method": request.method, "path": request.path[:200]})
        return problem(500, "internal", "the server failed to handle this request")


# What a page of another node of ours may call here: a page whose own node died goes on through this
# one (server/static/session.js) and asks it for a token. Nothing else is offered across origins.
_SIBLING_PATHS = frozenset({"/api/dev/token"})


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@web.middleware
async def _sibling_cors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """CORS for pages loaded from the other nodes of this deployment (any node ever seen in the node
    registry, dead ones included: that is the case it is for), and for no other origin."""
    origin = request.headers.get("Origin")
    if request.path not in _SIBLING_PATHS or origin is None:
        return await handler(request)
    node: Node = request.app["node"]
    allowed = origin.lower() in {_origin(url) for url in node.cluster.known_urls}
    if request.method == "OPTIONS":  # the preflight of a JSON POST
        if not allowed:
            return problem(403, "origin_not_allowed", "this origin is not a node of this deployment")
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "Content-Type, Accept",
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    response = await handler(request)
    if allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response


async def _refuse_revoked(request: web.Request) -> None:
    try:
        claims = bearer(request)
    except AuthError:
        return  # the route refuses it with the precise reason (or does not need a token)
    node: Node = request.app["node"]
    await node.check_not_revoked(claims.identity)


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _stage_page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "stage.html")


def create_app(config: Config) -> web.Application:
    app = web.Application(
        middlewares=[_sibling_cors_middleware, _problem_middleware], client_max_size=config.max_frame_bytes
    )
    node = Node(config)
    node.cluster.open_remote = remote_factory(node)
    app["node"] = node
    app["config"] = config
    gauges.bind(node)
    app.router.add_routes(http_api.routes())
    app.router.add_routes(clubs_api.routes())
    app.router.add_routes(openapi.routes())
    app.router.add_routes(playback_api.routes())
    app.router.add_routes(people_api.routes())
    app.router.add_routes(erasures_api.routes())
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/console", console_handler)
    app.router.add_get("/", _index)
    app.router.add_get("/s/{stage_id}", _stage_page)
    if STATIC.is_dir():
        app.router.add_static("/static/", STATIC)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        addresses = peer.setup(config.media)
        log.info("media ready", extra={"ice_addresses": ",".join(addresses)})
        await node.start()
        log.info(
            "node ready",
            extra={"node": node.cluster.node_id, "backend": "redis" if config.redis_url else "memory"},
        )
        # After start-up (its stalls are not the figure): what is alive now lives until the end.
        loophealth.start(asyncio.get_running_loop(), config.loop_lag_interval_ms / 1000)
        keeper = GcKeeper(config.gc, lambda: sum(len(s.connections) for s in node.stages.values()))
        keeper.start()
        yield
        await keeper.close()
        await node.close()
        loophealth.stop()

    app.cleanup_ctx.append(lifecycle)

    async def on_shutdown(app: web.Application) -> None:
        # Close sockets first (clients see 1001), then cleanup_ctx closes the peers.
        for live in list(node.stages.values()):
            for conn in list(live.connections.values()):
                await conn.close(CloseCode.GOING_AWAY, "node shutting down")
        relay = node.cluster.relay
        if relay is not None:  # clients here of stages hosted elsewhere
            for client in list(relay.fronted.values()):
                await client.close(CloseCode.GOING_AWAY, "node shutting down")

    app.on_shutdown.append(on_shutdown)
    return app
