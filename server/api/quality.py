"""The troubleshooting report of one participant's connection: what was negotiated, the chosen ICE
candidate pair (types and families, never addresses), the DTLS/ICE states, the figures of each
direction and slot as last sampled (server/host/quality.py), and the quality timeline.

Readable by the platform, a moderator of the stage (the ``moderate`` grant, or a present moderator of
that identity) and the person themselves (the token's identity); anyone else with a token for the
stage gets ``403 missing_grant``."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from msgspec import Meta, Struct

from media.figures import ConnectionDirection
from media.quality import THRESHOLDS, QualitySample
from server.api import spec
from server.api.common import answer, problem, stage_caller
from server.host.node import Node
from server.host.quality import SAMPLE_S

QualityLevel = Literal["excellent", "good", "poor", "lost"]


class QualityThresholds(Struct, kw_only=True):
    """The limits the level is judged by (docs/operations.md, Connection quality)."""

    excellent_loss: float
    excellent_rtt_ms: float
    excellent_jitter_ms: float
    good_loss: float
    good_rtt_ms: float
    good_jitter_ms: float
    lost_s: float


class ConnectionReport(Struct, kw_only=True):
    """One participant's connection as the node measures it: `down` is node → participant (their
    viewing connection, one entry per slot), `up` is participant → node (their publishing connection,
    when they publish)."""

    stage_id: str
    participant_id: str
    quality: QualityLevel | None
    sampled_at: Annotated[float, Meta(description="Unix time of the figures, seconds")] | None
    sample_interval_s: float
    thresholds: QualityThresholds
    down: ConnectionDirection | None
    up: ConnectionDirection | None
    timeline: Annotated[
        list[QualitySample], Meta(description="Oldest first, one sample every 5 s, 30 minutes")
    ]


_LIMITS = QualityThresholds(
    excellent_loss=THRESHOLDS.excellent_loss,
    excellent_rtt_ms=THRESHOLDS.excellent_rtt_ms,
    excellent_jitter_ms=THRESHOLDS.excellent_jitter_ms,
    good_loss=THRESHOLDS.good_loss,
    good_rtt_ms=THRESHOLDS.good_rtt_ms,
    good_jitter_ms=THRESHOLDS.good_jitter_ms,
    lost_s=THRESHOLDS.lost_s,
)


async def get_connection(request: web.Request) -> web.Response:
    node: Node = request.app["node"]
    live = node.stages.get(request.match_info["stage_id"])
    if live is None:
        raise web.HTTPNotFound(reason="Stage not hosted by this node")
    claims = stage_caller(request, live)
    pid = request.match_info["participant_id"]
    person = live.stage.participants.get(pid)
    if person is None:
        return problem(404, "participant_not_found", f"no participant {pid} on stage {live.stage.id}")
    moderator = any(
        live.stage.is_moderator(p.id)
        for p in live.stage.participants.values()
        if p.identity == claims.identity
    )
    if not (claims.admin or claims.has("moderate") or moderator or claims.identity == person.identity):
        return problem(
            403, "missing_grant", "only the person, a moderator of the stage or the platform may read this"
        )
    conn = live.quality.people.get(pid)
    return answer(
        ConnectionReport(
            stage_id=live.stage.id,
            participant_id=pid,
            quality=person.quality,  # type: ignore[arg-type]  # one of the levels (rooms/quality.py)
            sampled_at=conn.sampled_at if conn else None,
            sample_interval_s=SAMPLE_S,
            thresholds=_LIMITS,
            down=conn.down if conn else None,
            up=conn.up if conn else None,
            timeline=conn.timeline.samples() if conn else [],
        )
    )


def routes() -> list[web.RouteDef]:
    return [web.get("/api/stages/{stage_id}/participants/{participant_id}/connection", get_connection)]


# --- OpenAPI ------------------------------------------------------------------------------------------

OPENAPI = spec.Paths("stages")
OPENAPI.add(
    "get",
    "/api/stages/{stage_id}/participants/{participant_id}/connection",
    "getConnectionReport",
    "A participant's connection: negotiation, candidate types, figures per direction and slot, timeline",
    {
        "200": spec.ok(ConnectionReport, "The report"),
        "401": spec.UNAUTHORIZED,
        "403": spec.FORBIDDEN_GRANT,
        "404": spec.refused(
            "This node does not host the stage, or the participant is not on it",
            "stage_not_hosted_by_this_node",
            "participant_not_found",
        ),
    },
    params=[
        spec.STAGE_ID,
        spec.path_param("participant_id", "A participant of the stage", maxLength=64),
    ],
    description="The platform, a moderator of the stage, or the person themselves (`403 missing_grant` "
    "for anyone else). Addresses are never shown: only each end's candidate type, family and transport.",
)
