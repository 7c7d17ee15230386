"""Who may join which stage over a socket, and what the ``joined`` frame tells them.

``admit`` runs a ``join`` request's checks in order, each refusal a typed error (docs/protocol.md,
``join``): the token, the stage it opens (a host's token creates its stage), revocation, the
console's role, the club's admission, the person's corrected name and their key (a recording seals
what it keeps of them from their first event on). ``joined_frame`` builds the reply once the stage
accepted the join. The socket that asked (server/signalling/connection.py) keeps the I/O: waiting
its turn in a join wave, the host's older socket, relaying to the node that hosts the stage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from rooms.errors import StageNotFound
from rooms.roles import Role
from rooms.roles import is_moderator as role_is_moderator
from server import wire, wire_out
from server.auth import Claims, Forbidden
from server.backend import Owner
from server.host.live import LiveStage
from server.host.node import Node


@dataclass(frozen=True, slots=True)
class Admission:
    """A join the stage may now take: who, as what, under which name."""

    live: LiveStage
    claims: Claims
    role: Role
    name: str
    observer: bool


async def admit(
    node: Node, request: wire.Join, query_token: str | None, observer: bool, gone: Callable[[], bool]
) -> Admission | Owner | None:
    """The checks of a join, in order; an ``Owner`` when another node hosts the stage (the socket
    relays to it), None when the client went away meanwhile (``gone``). Raises the refusal."""
    claims = node.auth.verify(request.token or query_token)
    if not claims.admin and claims.stage is None and claims.club is None:
        raise Forbidden("token_wrong_stage", "this token opens no stage")
    if not claims.admin and claims.stage is not None and claims.stage != request.stage:
        claims.require_stage(request.stage, None)  # refused before anything is looked up
    await node.check_not_revoked(claims.identity)
    observer = observer or request.observer
    role = observer_role(claims) if observer else Role(claims.role or "audience")
    # A host's join creates its stage, with a token for that stage; a club token opens the club's
    # existing stages only (a club is the platform's to fill).
    create = role is Role.HOST and not observer and (claims.admin or claims.stage == request.stage)
    try:
        found = await node.locate(request.stage, create=create)
    except StageNotFound:
        if claims.stage is None and claims.club is not None:
            raise Forbidden(
                "token_wrong_stage", f"stage {request.stage} is not a stage of club {claims.club}"
            ) from None
        raise
    if isinstance(found, Owner):
        return found
    live = found
    claims.require_stage(live.stage.id, live.stage.club_id)
    if gone():
        return None  # the client went away while the stage was being found
    # A corrected name (the person's data rights, issue 15) wins over the token's and the client's.
    corrected = (await node.fresh_profiles()).get_name(claims.identity)
    name = corrected or claims.name or request.name or claims.identity
    await node.clubs.check_join(live.stage.club_id, claims, name, request.invite)
    if gone():
        return None
    # The person's key is in the ring before they are in the stage: a recording running there
    # seals what it keeps of them from their first event on (issue 15).
    await node.person_key(claims.identity)
    if gone():
        return None
    return Admission(live, claims, role, name, observer)


def joined_frame(node: Node, live: LiveStage, pid: str, moderator_view: bool) -> wire_out.Joined:
    """The reply to an accepted join: the participant, the stage and its state as they may see it,
    the ICE servers with this participant's TURN credentials, the consent policy."""
    stage = live.stage
    me = stage.get(pid)
    # Consoles, apart: a client that knows nothing of them keeps an accurate participant list.
    consoles = [o.snapshot() for o in stage.observers.values() if o.id != pid]
    others = [p.snapshot() for p in stage.participants.values() if p.id != pid]
    # TURN credentials of this participant, fresh at every join (a rejoin gets new ones); named by
    # the participant id, so coturn's logs hold no identity.
    ice_servers = [wire_out.ice_server(s.to_browser()) for s in node.config.ice_servers]
    ice_servers += [wire_out.ice_server(s) for s in node.config.turn.browser_servers(pid, time.time())]
    relay = node.config.ice_transport_policy == "relay"
    policy = wire_out.Policy(
        version=stage.settings.consent_policy_version, text=node.config.consent_policy_text
    )
    return wire_out.Joined(
        participant=wire_out.participant(me.snapshot()),
        stage=wire_out.stage_info(stage.snapshot()),
        participants=[wire_out.participant(p) for p in others],
        observers=[wire_out.participant(o) for o in consoles] if moderator_view else msgspec.UNSET,
        ice_servers=ice_servers,
        ice_transport_policy="relay" if relay else "all",
        nodes=node.cluster.node_urls,
        state=wire_out.stage_state(stage.snapshot_for(pid)),
        policy=policy,
    )


def on_stage(live: LiveStage, pid: str) -> bool:
    """Host, moderators and speakers keep their receiving connection in the node's process: a media
    worker that dies must not bounce the people the stage is about (their socket carries their
    publication too). The audience, the many, is spread over the workers."""
    person = live.stage.participants.get(pid)
    return person is not None and person.role is not Role.AUDIENCE


def observer_role(claims: Claims) -> Role:
    """A console's role: its token's, which must be host or moderator with the ``moderate`` grant (a
    platform token watches as a moderator). Anything else is refused at the door (4403)."""
    claims.require("moderate")
    role = Role(claims.role or ("moderator" if claims.admin else "audience"))
    if not role_is_moderator(role):
        raise Forbidden("console_not_allowed", f"a console needs a host or moderator token, not {role}")
    return role
