"""What operators' tools ask a node, without a token (for load balancers and scrapers on the
operator's network): liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from msgspec import Meta, Struct

from server import metrics
from server.api import spec
from server.api.common import answer
from server.host.node import Node


class Health(Struct, kw_only=True):
    status: Literal["ok"]


class Readiness(Struct, kw_only=True):
    status: Literal["ready", "not_ready"]
    reason: Annotated[str, Meta(examples=["ok", "backend unreachable"])]
    node: str


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and serving (a Redis outage does not make it unhealthy)."""
    return answer(Health(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    """Whether this node can take new work: the backend answers, its relay inbox is open, and no
    events wait to be written. A load balancer sends new clients elsewhere while this is 503."""
    node: Node = request.app["node"]
    ready, reason = await node.cluster.readiness()
    body = Readiness(status="ready" if ready else "not_ready", reason=reason, node=node.cluster.node_id)
    return answer(body, 200 if ready else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    workers = request.app["node"].media_workers
    if workers is not None:  # their counters as of now, not as of their last report
        await workers.refresh_counters()
    return web.Response(
        body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics_handler),
    ]


# --- OpenAPI ------------------------------------------------------------------------------------------

OPENAPI = spec.Paths("operations")
OPENAPI.add(
    "get",
    "/healthz",
    "healthz",
    "Liveness: the process serves (a Redis outage does not change it)",
    {"200": spec.ok(Health, "Alive")},
    public=True,
)
OPENAPI.add(
    "get",
    "/readyz",
    "readyz",
    "Readiness: whether the node should be given new clients",
    {
        "200": spec.ok(Readiness, "Ready"),
        "503": spec.ok(
            Readiness,
            "Not ready: the shared store (Redis) is unreachable, or the relay inbox is not connected",
        ),
    },
    public=True,
)
OPENAPI.add(
    "get",
    "/metrics",
    "metrics",
    "Prometheus metrics (text exposition format 0.0.4; docs/operations.md)",
    {"200": {"description": "The samples", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    public=True,
)
