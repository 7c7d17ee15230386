"""What a stage's host saves so that another node can take the stage over: its durable state.

``durable_state`` turns a stage into builtins only (str, int, float, bool, None, list, dict), so the
shell can store it as msgpack; ``restore`` rebuilds a stage from it with nobody present: people
reconnect and join again, and keep their identity's consent and role (``rooms/remembered.py``).

Kept: the stage itself (title, state, lock, settings), bans, every identity's last consent record and
the record ids in use, the remembered people (everyone present, and everyone who left and may come
back), the chat (comments, pin, deleted ids, slow mode) and the log's last ``seq``. Not kept: polls,
questions, hands, invitations, reactions and rate limits; nor recording: a restored stage is not
recording, its session ended with the node that ran it.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from rooms.consent import ConsentRecord
from rooms.errors import InvalidDurableState
from rooms.events import EventLog
from rooms.remembered import RememberedPerson
from rooms.roles import Role
from rooms.settings import StageSettings
from rooms.stage import Participant, Stage, StageState
from rooms.views import CommentView

__all__ = ["FORMAT", "durable_state", "restore"]

FORMAT = 1  # bump on any change an older node would misread; a node refuses formats it does not know

_ROLE_RANK = {role: rank for rank, role in enumerate(reversed(Role))}  # audience 0 ... host 3


class _Person(msgspec.Struct, frozen=True):
    role: Role
    name: str
    joined_as: Role | None = None


class _Comment(msgspec.Struct, frozen=True):
    comment: CommentView
    identity: str  # of its author: they may still delete it


class _Chat(msgspec.Struct, frozen=True):
    comments: list[_Comment]  # oldest first
    pinned: _Comment | None
    deleted: list[str]  # ids never to reuse
    slow_mode_s: Annotated[int, msgspec.Meta(ge=0, le=3600)]


class _Consent(msgspec.Struct, frozen=True):
    last: dict[str, ConsentRecord]  # identity -> their last record
    record_ids: list[str]  # every id in use (the shell may not reuse one)


class _State(msgspec.Struct, frozen=True, kw_only=True):
    """Format 1. Unknown fields are ignored, so adding one needs no new version."""

    format: int
    id: str
    title: str
    created_at: float
    state: StageState
    locked: bool
    settings: StageSettings
    banned: list[str]
    consent: _Consent
    people: dict[str, _Person]  # identity -> role and name
    chat: _Chat
    last_seq: Annotated[int, msgspec.Meta(ge=0)]
    club_id: str | None = None


def durable_state(stage: Stage) -> dict[str, Any]:
    """The stage as builtins msgpack can encode, for the node that may take it over (see ``restore``)."""
    chat = stage.chat
    pinned = None if chat.pinned is None else _Comment(chat.pinned.view, chat.pinned.identity)
    state = _State(
        format=FORMAT,
        id=stage.id,
        title=stage.title,
        created_at=stage.created_at,
        state=stage.state,
        locked=stage.locked,
        settings=stage.settings,
        banned=sorted(stage.banned_identities),
        consent=_Consent(last=dict(stage.consent.last), record_ids=sorted(stage.consent.record_ids)),
        people=_people(stage),
        chat=_Chat(
            comments=[_Comment(view, identity) for view, identity in chat.stored()],
            pinned=pinned,
            deleted=sorted(chat.deleted),
            slow_mode_s=chat.slow_mode_s,
        ),
        last_seq=stage.log.last_seq,
        club_id=stage.club_id,
    )
    # Through msgpack rather than ``to_builtins``, which keeps tuples (consent scopes): lists only.
    return msgspec.msgpack.decode(msgspec.msgpack.encode(state))  # type: ignore[no-any-return]


def _people(stage: Stage) -> dict[str, _Person]:
    """Everyone remembered, then everyone present with an explicit identity (present wins: it is newer).
    One identity on several connections keeps its highest role, so the host's second tab (as audience)
    does not cost them the stage."""
    people = {
        identity: _Person(p.role, p.name, p.joined_as) for identity, p in stage.remembered.people.items()
    }
    present: list[Participant] = [p for p in stage.participants.values() if p.identity != p.id]
    present.sort(key=lambda p: _ROLE_RANK[p.role])  # stable: among equals, the last joined wins
    people.update({p.identity: _Person(p.role, p.name, p.joined_as) for p in present})
    banned = stage.banned_identities
    return {identity: person for identity, person in people.items() if identity not in banned}


def restore(state: dict[str, Any], *, last_seq: int, now: float) -> Stage:
    """A stage rebuilt from ``durable_state`` on the node taking it over, with nobody present; its log
    continues after ``max(last_seq, state's last_seq)`` (``last_seq``: the shared event log's last).

    ``now`` is when the takeover happens; format 1 stamps nothing with it. Raises
    ``InvalidDurableState`` on input this node cannot read (corrupt, or another format version).
    """
    saved = _decode(state)
    stage = Stage(
        saved.id,
        saved.title,
        saved.created_at,
        settings=saved.settings,
        state=saved.state,
        club_id=saved.club_id,
    )
    stage.locked = saved.locked
    stage.banned_identities = set(saved.banned)
    stage.consent.last = dict(saved.consent.last)
    in_use = {r.record_id for r in saved.consent.last.values()}
    stage.consent.record_ids = set(saved.consent.record_ids) | in_use
    stage.remembered.people = {
        identity: RememberedPerson(p.role, p.name, p.joined_as)
        for identity, p in saved.people.items()
        if identity not in stage.banned_identities
    }
    chat = saved.chat
    stage.chat.restore(
        [(c.comment, c.identity) for c in chat.comments],
        None if chat.pinned is None else (chat.pinned.comment, chat.pinned.identity),
        set(chat.deleted),
        chat.slow_mode_s,
    )
    stage.log = EventLog(max(last_seq, saved.last_seq))
    return stage


def _decode(state: object) -> _State:
    if not isinstance(state, dict):
        raise InvalidDurableState(f"a durable state is a map, not {type(state).__name__}")
    version = state.get("format")
    if version != FORMAT:
        raise InvalidDurableState(f"durable state format {version!r} is not one this node reads ({FORMAT})")
    try:
        saved = msgspec.convert(state, _State)
    except msgspec.ValidationError as error:
        raise InvalidDurableState(f"durable state of stage {state.get('id')!r} is invalid: {error}") from None
    for identity, record in saved.consent.last.items():
        if record.identity != identity:
            raise InvalidDurableState(f"the consent record of {identity!r} is about {record.identity!r}")
    return saved
