"""Data rights on the node (issue 15): subject access (the archive) and correction (profiles).

Who may: the person (a person-level token), a nominee in force, or the platform, exactly as for the
nominees (server/host/people.py ``may_act_for``); anyone else gets ``not_allowed`` (403).

Access: ``prepare_export`` plans the archive off the loop (recording/access.py) with what only the
node knows (club memberships, the stages it hosts now, the corrected profile) and a ring holding the
person's key alone (nobody else's sealed value can be opened into it); the caller iterates the archive
(``chunks``, in a thread) as it sends it, then ``finish_export`` appends the ``access`` record to the
people ledger and sends ``person.exported``. An archive that was not sent to its end is recorded
nowhere: it was not handed out.

Correction: ``correct`` stores the fields (recording/profiles.py), renames the person live on every
stage of every node (``Node.rename``: ``participant.updated``), appends the ``correction`` record
(field names and hashes, never values) and sends ``person.corrected``. Recordings are not rewritten:
their reports and playback pages read the profile (``Names``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp

from recording.access import Archive, Member, Omitted, plan
from recording.ledger import Entry
from recording.people import HEADS_FILENAME, access_record, correction_record
from recording.profiles import Profile, ProfileError, check_changes, field_hash
from recording.vault import KeyRing
from rooms.clubs import ClubError
from server.auth import Claims
from server.backend import BackendError
from server.host.people import (
    PeopleError,
    _refusal,
    capacity,
    check_identity,
    corrected_payload,
    exported_payload,
)

if TYPE_CHECKING:
    from server.host.node import Node

log = logging.getLogger(__name__)

BATCH = 1 << 20  # bytes handed from the archive's thread to the socket at a time


async def authorize(node: Node, claims: Claims, identity: str) -> str:
    """In what capacity ``claims`` acts for ``identity`` (``person``, ``nominee``, ``platform``)."""
    check_identity(identity)
    if not await node.people.may_act_for(claims, identity):
        raise _refusal(claims, identity)
    return capacity(claims, identity)


# --- access ------------------------------------------------------------------------------------------


async def _ring(node: Node, identity: str) -> KeyRing:
    ring = KeyRing()
    key = node.ring.for_identity(identity)
    if key is None:
        try:
            key = await node.keys.get(identity)
        except (BackendError, OSError) as exc:
            raise PeopleError(503, "unavailable", f"the key store cannot be read: {exc}") from exc
    if key is not None:
        ring.put(key)
    return ring


async def _clubs(node: Node, identity: str) -> list[dict[str, Any]]:
    memberships = []
    try:
        for club_id in await node.clubs.ids():
            try:
                club = await node.clubs.get(club_id)
            except ClubError:
                continue  # deleted meanwhile, or unreadable: it holds nothing we can say
            member = club.members.get(identity)
            if member is not None:
                memberships.append(
                    {"club_id": club.id, "club_name": club.name, "role": str(member.role),
                     "name": member.name, "joined_at": member.joined_at, "via": str(member.via)}
                )  # fmt: skip
    except BackendError as exc:
        raise PeopleError(503, "unavailable", f"the clubs cannot be read: {exc}") from exc
    return memberships


def _live(node: Node, identity: str) -> list[dict[str, Any]]:
    """The person on the stages this node hosts now (participants and moderator consoles), with what
    the stage holds of theirs in memory: their comments, questions, question votes, ballots, score."""
    out = []
    for live in node.stages.values():
        stage = live.stage
        people = [
            p for p in [*stage.participants.values(), *stage.observers.values()] if p.identity == identity
        ]
        comments = [c.view for c in stage.chat.comments.values() if c.identity == identity]
        questions = [q for q in stage.questions.questions.values() if q.identity == identity]
        upvoted = [q.id for q in stage.questions.questions.values() if identity in q.voters]
        ballots = {
            pid: poll.ballots[identity] for pid, poll in stage.polls.polls.items() if identity in poll.ballots
        }
        score = stage.polls.scores.get(identity)
        if not (people or comments or questions or upvoted or ballots or score):
            continue
        out.append(
            {
                "stage_id": stage.id,
                "title": stage.title,
                "club_id": stage.club_id,
                "present": [
                    {"participant_id": p.id, "name": p.name, "role": str(p.role), "joined_at": p.joined_at,
                     "observer": p.observer}
                    for p in people
                ],
                "comments": [
                    {"id": c.id, "at": c.at, "author_name": c.author_name, "text": c.text} for c in comments
                ],
                "questions": [
                    {"id": q.id, "at": q.at, "text": q.text, "status": str(q.status), "votes": len(q.voters)}
                    for q in questions
                ],
                "question_votes": upvoted,
                "ballots": [
                    {"poll_id": pid, "question": stage.polls.polls[pid].spec.question,
                     "options": list(stage.polls.polls[pid].spec.options), "choices": list(b.choices)}
                    for pid, b in ballots.items()
                ],
                "quiz_points": None if score is None else score.points,
            }
        )  # fmt: skip
    return out


NODE_PREFIX = "node:"  # the ``sub`` of a token one node mints to gather another's part of an archive
PEER_TIMEOUT_S = 300.0
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def gathering(claims: Claims) -> bool:
    """A node asking for its part of an archive it hands out (``?scope=node`` with a platform token
    minted by a node): the asking node records the whole; this part is not recorded twice."""
    return claims.admin and claims.identity.startswith(NODE_PREFIX)


async def _peer_parts(node: Node, identity: str, scratch: Path) -> tuple[list[Member], list[Omitted]]:
    """Every other live node's part of the archive (its recordings and live stages), downloaded into
    ``scratch`` as ``nodes/<node id>.tar`` members; a node that cannot give it is listed as omitted."""
    members: list[Member] = []
    omitted: list[Omitted] = []
    try:
        urls = await node.cluster.backend.node_urls()
    except BackendError as exc:
        return [], [Omitted("node", "unreachable", {"error": str(exc)})]
    token = node.auth.mint(NODE_PREFIX + node.cluster.node_id, admin=True, ttl_s=PEER_TIMEOUT_S)
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
    for peer, url in sorted(urls.items()):
        if peer == node.cluster.node_id:
            continue
        name = _SAFE.sub("_", peer)
        target = scratch / f"{name}.tar"
        about = {"node": peer}
        part = f"{url}/api/people/{quote(identity, safe='')}/export?scope=node"
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http, http.get(part, headers=headers) as r:
                if r.status != 200:
                    omitted.append(Omitted("node", f"refused {r.status}", about))
                    continue
                with open(target, "wb") as f:  # noqa: ASYNC230 - each chunk's write is small
                    async for chunk in r.content.iter_chunked(1 << 20):
                        await asyncio.to_thread(f.write, chunk)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("a node's part of an archive is missing", extra={"node": peer, "error": repr(exc)})
            omitted.append(Omitted("node", "unreachable", about))
            continue
        members.append(Member(f"nodes/{name}.tar", "node", path=target, about=about))
    return members, omitted


def discard(archive: Archive) -> None:
    """Remove what the archive's preparation downloaded (other nodes' parts)."""
    if archive.scratch is not None:
        shutil.rmtree(archive.scratch, ignore_errors=True)


async def prepare_export(node: Node, claims: Claims, identity: str, *, everywhere: bool = True) -> Archive:
    """The person's archive, planned (nothing sent, nothing recorded yet); with ``everywhere``, with
    the other nodes' parts too (``discard`` it once sent)."""
    await authorize(node, claims, identity)
    entries = await node.people.entries()
    ring = await _ring(node, identity)
    profiles = await node.fresh_profiles()
    profile = profiles.get(identity)
    extra: dict[str, Any] = {
        "clubs.json": {"memberships": await _clubs(node, identity)},
        "live.json": {"node": node.cluster.node_id, "stages": _live(node, identity)},
        "profile.json": {"profile": None if profile is None else profile.to_dict()},
    }
    members, omitted = await asyncio.to_thread(
        plan,
        identity,
        node.recordings_root,
        ring,
        people_entries=entries,
        people_heads=node.config.people_path / HEADS_FILENAME,
        extra=extra,
    )
    scratch = None
    if everywhere:
        scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="medstage-export-"))
        try:
            parts, missing = await _peer_parts(node, identity, scratch)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        members += parts
        omitted += missing
    export_id = "x-" + secrets.token_hex(8)
    archive = Archive(
        identity, members, omitted, ring, export_id=export_id, now=node.clock(), node=node.cluster.node_id
    )
    archive.scratch = scratch
    return archive


def batches(chunks: Iterator[bytes]) -> bytes:
    """The archive's next bytes, about ``BATCH`` of them (b"" at its end): one thread hop per batch."""
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) >= BATCH:
            break
    return bytes(out)


async def finish_export(node: Node, claims: Claims, archive: Archive) -> Entry:
    """The archive was sent to its end: the ``access`` record and ``person.exported``."""
    identity = archive.identity
    record = access_record(
        identity,
        export_id=archive.export_id,
        index_sha256=archive.index_sha256,
        sha256=archive.sha256,
        size_bytes=archive.size,
        counts=archive.counts,
        by=claims.identity,
        capacity=capacity(claims, identity),
        at=node.clock(),
    )
    entry = await node.people.append(record)
    node.webhooks.emit(
        "person.exported",
        exported_payload(
            identity,
            at=record["at"],
            by=claims.identity,
            export_id=archive.export_id,
            size_bytes=archive.size,
            sha256=archive.sha256,
            entry=entry,
        ),
    )
    return entry


# --- correction --------------------------------------------------------------------------------------


async def _rename_in_clubs(node: Node, identity: str, name: str) -> None:
    """The member's name in every club they belong to (the clubs' admins list it). A club that cannot
    be written now keeps the old name (logged); the profile, which pages read, has the new one."""
    try:
        club_ids = await node.clubs.ids()
    except BackendError as exc:
        log.error("a correction did not reach the clubs", extra={"identity": identity, "error": repr(exc)})
        return
    for club_id in club_ids:
        try:
            await node.clubs.update(club_id, lambda club: club.rename_member(identity, name))
        except ClubError:
            continue  # deleted meanwhile: no member to rename
        except BackendError as exc:
            log.error(
                "a correction did not reach a club",
                extra={"identity": identity, "club": club_id, "error": repr(exc)},
            )


async def correct(
    node: Node, claims: Claims, identity: str, changes: Mapping[str, Any]
) -> tuple[Profile, Entry]:
    """Store the corrected fields, show them live, record the correction, tell the platform."""
    who = await authorize(node, claims, identity)
    try:
        checked = check_changes(changes)
    except ProfileError as exc:
        raise PeopleError(400, exc.code, exc.message) from None
    profile = await node.profiles.put(identity, checked, node.clock())
    if "name" in checked:
        await node.rename(identity, checked["name"])
        await _rename_in_clubs(node, identity, checked["name"])
    hashes = {name: field_hash(identity, name, value) for name, value in checked.items()}
    record = correction_record(identity, hashes, claims.identity, who, node.clock())
    entry = await node.people.append(record)
    node.webhooks.emit(
        "person.corrected",
        corrected_payload(identity, at=record["at"], by=claims.identity, fields=list(checked), entry=entry),
    )
    return profile, entry
