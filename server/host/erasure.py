"""Erasure of a person on the node (issue 15): crypto-shredding, then everything else that held them.

``Erasure.erase`` (``POST /api/people/{identity}/erase``, ``python -m server people erase``), in order:

1. who may: the person (person-level token), a nominee in force, the platform (server/host/people.py);
2. the person's key is destroyed in the key store (shared by every node on Redis), so nothing sealed
   with it opens again, and dropped from this node's ring;
3. here: every recorder stops capturing them at once (``SessionRecorder.forget``) and their sockets
   are closed with 4013 ``erased`` (they leave the stages: presence follows); other nodes are told
   through the relay's node inboxes (``["e", identity]``), and do the same with their own ring,
   recorders and sockets (``Node.erase_here``);
4. their club memberships are deleted (membership and the "removed" mark: nothing of them is left);
5. the recordings under this node's ``recordings_dir`` (recording/erasure.py): sealed track files
   deleted by key id, sessions recorded before encryption rewritten without them, composite exports
   deleted and queued again; a session being recorded is erased once it stops (``session_stopped``);
6. an ``erasure`` record in the people ledger (identities, ids, hashes, counts, times; never content);
7. the proof, ``<people dir>/erasures/<id>.json`` (``GET /api/people/{identity}/erasures/{id}``);
8. the ``person.erased`` webhook.

Each step is idempotent: erasing again (after a crash in the middle, or twice) completes what is left
and changes nothing that is done. The answer is synchronous (200 with the proof): the slow part, the
composite exports, is queued and reported as such.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recording.erasure import (
    ErasureResult,
    SessionErasure,
    erase_person_from_recordings,
)
from recording.keys import KeyStore
from recording.ledger import fsync_dir
from recording.signing import NodeKey, SigningKeyError
from rooms.clubs import Club, ClubError
from server.auth import Claims
from server.backend import BackendError
from server.host.clubs import ClubStore
from server.host.exports import Exporter, ExportQueueFull
from server.host.people import People, PeopleError, capacity, check_identity, erased_payload, person_level

log = logging.getLogger(__name__)

ERASURE_ID = re.compile(r"er-[0-9a-f]{16}")
PROOF_VERSION = 1


@dataclass(frozen=True)
class Here:
    """What the erasure needs of the node (server/host/node.py), as callables: no import cycle."""

    erase_here: Callable[[str], int]  # ring, recorders, sockets on this node: connections closed
    # Other nodes do the same (identity, erasure id, by, as): how many were told.
    tell_others: Callable[[str, str, str, str], Awaitable[int]]
    recording_now: Callable[[], frozenset[str]]  # ``stage/session`` being recorded here
    signing_key: Callable[[], NodeKey]
    # Held while session files are rewritten: the node's deletions (retention) hold it too.
    files_lock: asyncio.Lock
    # Sessions (stage, session) whose consent ledger got new signed heads: their latest goes to the
    # shared backend, like a recorder's (server/routing/ledgerheads.py).
    heads_changed: Callable[[list[tuple[str, str]]], Awaitable[None]]


class Erasure:
    """The node's erasures (see the module docstring)."""

    def __init__(
        self,
        people: People,
        keys: KeyStore,
        clubs: ClubStore,
        exports: Exporter,
        recordings_root: Path,
        directory: Path,
        here: Here,
        emit: Callable[[str, dict[str, Any]], None],
        clock: Callable[[], float],
    ) -> None:
        self.people = people
        self.keys = keys
        self.clubs = clubs
        self.exports = exports
        self.root = recordings_root
        self.directory = directory  # <people dir>/erasures
        self.here = here
        self._emit = emit
        self._clock = clock
        self._lock = asyncio.Lock()  # one erasure at a time on this node
        # Sessions being recorded when someone on them was erased: (stage, session) -> erasures.
        self._pending: dict[tuple[str, str], list[tuple[str, str, list[str]]]] = {}

    # --- asking -----------------------------------------------------------------------------------

    async def authorize(self, claims: Claims, identity: str) -> None:
        check_identity(identity)
        if not await self.people.may_act_for(claims, identity):
            if claims.identity == identity and not person_level(claims):
                raise PeopleError(
                    403,
                    "person_token_required",
                    "this needs a person-level token (no stage, no club) or a platform token",
                )
            raise PeopleError(
                403, "not_allowed", "only the person, a nominee of theirs or the platform may do this"
            )

    async def erase(self, claims: Claims, identity: str) -> dict[str, Any]:
        """Erase ``identity`` (see the module docstring); returns the proof."""
        await self.authorize(claims, identity)
        async with self._lock:
            return await self._erase(identity, claims.identity, capacity(claims, identity))

    async def proof(self, claims: Claims, identity: str, erasure_id: str) -> dict[str, Any]:
        await self.authorize(claims, identity)
        proof = await asyncio.to_thread(self._read, erasure_id)
        if proof is None or proof.get("identity") != identity:
            raise PeopleError(
                404, "erasure_not_found", f"no erasure {erasure_id!r} of {identity!r} on this node"
            )
        if proof.get("ledger") is None:  # this node's part of another node's erasure
            for entry in reversed(await self.people.entries()):
                if entry.record.get("type") == "erasure" and entry.record.get("erasure_id") == erasure_id:
                    proof["ledger"] = {"index": entry.index, "hash": entry.hash, "record": entry.record}
                    break
        return proof

    # --- the steps --------------------------------------------------------------------------------

    async def _erase(self, identity: str, by: str, capacity_: str) -> dict[str, Any]:
        erasure_id = "er-" + secrets.token_hex(8)
        now = self._clock()
        await self._signing_key()  # before anything is destroyed: the rewrites need it
        before = await self.keys.tombstones(identity)
        live_key = await self.keys.get(identity)
        stone = await self.keys.destroy(identity, f"erasure {erasure_id}", now)
        key_ids = sorted({s.key_id for s in [*before, stone] if s.key_id})
        destroyed = [stone.key_id] if live_key is not None and stone.key_id else []
        closed = self.here.erase_here(identity)
        told = await self.here.tell_others(identity, erasure_id, by, capacity_)
        clubs = await self._leave_clubs(identity)
        result, exports = await self._files(identity, erasure_id, key_ids, now)
        pending = [s for s in result.sessions if s.skipped == "recording"]
        sessions = [s for s in result.sessions if s.changed]
        record = {
            "type": "erasure",
            "erasure_id": erasure_id,
            "identity": identity,
            "by": by,
            "as": capacity_,
            "at": now,
            "keys_destroyed": destroyed,
            "key_ids": key_ids,
            "sessions": len(sessions),
            "files_deleted": sum(len(s.files_deleted) for s in sessions),
            "ledger_records": [
                {"stage_id": s.stage_id, "session_id": s.session_id, **s.ledger_record}
                for s in sessions
                if s.ledger_record is not None
            ],
            "pending_sessions": len(pending),
            "connections_closed": closed,
            "clubs_left": len(clubs),
        }
        entry = await self.people.append(record)
        proof = _proof(
            erasure_id,
            identity,
            by,
            capacity_,
            now,
            result,
            exports,
            keys={"destroyed": destroyed, "erased_key_ids": key_ids, "tombstone": stone.to_dict()},
            connections_closed=closed,
            nodes_told=told,
            clubs_left=clubs,
            ledger={"index": entry.index, "hash": entry.hash, "record": record},
        )
        await asyncio.to_thread(self._write, proof)
        self._emit(
            "person.erased",
            erased_payload(
                identity,
                at=now,
                by=by,
                sessions=[{"stage_id": s.stage_id, "session_id": s.session_id} for s in sessions],
                keys_destroyed=destroyed,
                entry=entry,
                report=f"/api/people/{identity}/erasures/{erasure_id}",
            ),
        )
        log.info(
            "person erased",
            extra={
                "erasure": erasure_id,
                "sessions": len(sessions),
                "pending": len(pending),
                "closed": closed,
            },
        )
        return proof

    async def _files(
        self, identity: str, erasure_id: str, key_ids: list[str], now: float
    ) -> tuple[ErasureResult, list[dict[str, Any]]]:
        """The recordings under this node's directory; composite exports queued again."""
        signing_key = await self._signing_key()
        # Sessions being recorded are erased once they stop (registered first: one may stop meanwhile).
        skip: set[tuple[str, str]] = set()
        for name in self.here.recording_now():
            stage_id, _, session_id = name.partition("/")
            skip.add((stage_id, session_id))
            self._pending.setdefault((stage_id, session_id), []).append((identity, erasure_id, key_ids))
        async with self.here.files_lock:
            result: ErasureResult = await asyncio.to_thread(
                erase_person_from_recordings,
                self.root,
                identity,
                key_ids,
                erasure_id=erasure_id,
                now=now,
                signing_key=signing_key,
                skip=skip,
            )
        changed = [(s.stage_id, s.session_id) for s in result.sessions if s.ledger_record is not None]
        await self.here.heads_changed(changed)
        return result, self._queue_exports(result.sessions)

    async def _signing_key(self) -> NodeKey:
        try:
            return await asyncio.to_thread(self.here.signing_key)
        except (OSError, SigningKeyError) as exc:
            raise PeopleError(503, "no_signing_key", f"the node's signing key is unusable: {exc}") from exc

    async def erase_files_here(self, identity: str, erasure_id: str, by: str, capacity_: str) -> None:
        """Another node erased the person (key destroyed in the shared store): this node's recordings
        too. Its part of the proof is this node's ``GET .../erasures/{id}`` (unless the directory is
        shared with the node that erased: then that node's proof says it all)."""
        if not ERASURE_ID.fullmatch(erasure_id):
            return
        async with self._lock:
            now = self._clock()
            key_ids = sorted({s.key_id for s in await self.keys.tombstones(identity) if s.key_id})
            result, exports = await self._files(identity, erasure_id, key_ids, now)
            # This node destroyed no key, closed and told nobody; the ledger record is the erasing
            # node's (``proof`` finds it in the people ledger).
            proof = _proof(
                erasure_id,
                identity,
                by,
                capacity_,
                now,
                result,
                exports,
                keys={"destroyed": [], "erased_key_ids": key_ids, "tombstone": None},
            )
            # Not over the erasing node's proof (a directory both share): that one says it all.
            await asyncio.to_thread(functools.partial(self._write, proof, only_if_absent=True))
        log.info("person erased on another node: recordings here done", extra={"erasure": erasure_id})

    async def _leave_clubs(self, identity: str) -> list[str]:
        """Delete the person from every club (member, and the mark of a removal): the club ids."""

        def forget(club: Club) -> bool:
            had = identity in club.members or identity in club.removed
            club.members.pop(identity, None)
            club.removed.pop(identity, None)
            return had

        left = []
        try:
            ids = await self.clubs.ids()
        except BackendError as exc:
            log.error("clubs unreadable during an erasure", extra={"error": repr(exc)})
            raise PeopleError(503, "unavailable", f"the shared store is unreachable: {exc}") from exc
        for club_id in ids:
            try:
                if await self.clubs.update(club_id, forget):
                    left.append(club_id)
            except ClubError:
                continue  # deleted meanwhile
        return left

    def _queue_exports(self, sessions: list[SessionErasure]) -> list[dict[str, Any]]:
        queued = []
        for s in sessions:
            if not s.needs_export:
                continue
            directory = self.root / s.stage_id / s.session_id
            try:
                self.exports.request(s.stage_id, s.session_id, directory, force=True)
                queued.append({"stage_id": s.stage_id, "session_id": s.session_id, "queued": True})
            except ExportQueueFull:
                queued.append({"stage_id": s.stage_id, "session_id": s.session_id, "queued": False})
        return queued

    async def session_stopped(self, stage_id: str, session_id: str) -> None:
        """A session stopped: erase from it the people erased while it was being recorded."""
        if (stage_id, session_id) not in self._pending:
            return
        signing_key = await asyncio.to_thread(self.here.signing_key)
        async with self._lock:  # an erasure running now registered the session before its files
            waiting = self._pending.pop((stage_id, session_id), [])
            for identity, erasure_id, key_ids in waiting:
                async with self.here.files_lock:
                    result = await asyncio.to_thread(
                        erase_person_from_recordings,
                        self.root,
                        identity,
                        key_ids,
                        erasure_id=erasure_id,
                        now=self._clock(),
                        signing_key=signing_key,
                        only={(stage_id, session_id)},
                    )
                done = next(iter(result.sessions), SessionErasure(stage_id, session_id))
                self._queue_exports([done])
                await asyncio.to_thread(self._complete, erasure_id, done)

    async def resume(self) -> None:
        """At start: the sessions an erasure was waiting on when this node stopped without stopping
        them (a crash) are not being recorded any more: erase them now (a crashed one stays
        ``unfinished`` until ``python -m recording repair``, and the proof says so)."""
        proofs = await asyncio.to_thread(self._pending_proofs)
        for proof in proofs:
            key_ids = list(proof.get("keys", {}).get("erased_key_ids") or [])
            for s in proof.get("sessions", []):
                if s.get("skipped") == "recording":
                    key = (str(s["stage_id"]), str(s["session_id"]))
                    entry = (str(proof["identity"]), str(proof["erasure_id"]), key_ids)
                    self._pending.setdefault(key, []).append(entry)
        for stage_id, session_id in list(self._pending):
            await self.session_stopped(stage_id, session_id)

    def _pending_proofs(self) -> list[dict[str, Any]]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("er-*.json")):
            proof = self._read(path.stem)
            if proof is not None and proof.get("status") == "pending":
                found.append(proof)
        return found

    # --- the proofs -------------------------------------------------------------------------------

    def _path(self, erasure_id: str) -> Path | None:
        return self.directory / f"{erasure_id}.json" if ERASURE_ID.fullmatch(erasure_id) else None

    def _write(self, proof: dict[str, Any], *, only_if_absent: bool = False) -> bool:
        """Write the proof atomically (a temporary file of its own: nodes may share the directory);
        ``only_if_absent``: another node's part never replaces the erasing node's proof. Whether it
        was written."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(proof["erasure_id"])
        assert path is not None
        fd, name = tempfile.mkstemp(dir=self.directory, prefix=".proof-", suffix=".tmp")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(proof, indent=1, ensure_ascii=False).encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            if only_if_absent:
                try:
                    os.link(tmp, path)  # fails when the file exists: the first writer's stays
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
            fsync_dir(self.directory)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self, erasure_id: str) -> dict[str, Any] | None:
        path = self._path(erasure_id)
        if path is None:
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _complete(self, erasure_id: str, done: SessionErasure) -> None:
        """A session erased after its stop goes into the proof (``status`` done when none is left)."""
        proof = self._read(erasure_id)
        if proof is None:
            return
        sessions = [
            s
            for s in proof.get("sessions", [])
            if (s.get("stage_id"), s.get("session_id")) != (done.stage_id, done.session_id)
        ]
        if done.changed or done.skipped:
            sessions.append(done.to_dict())
        proof["sessions"] = sessions
        remains: dict[str, int] = {}
        for s in sessions:
            for name, count in (s.get("remains") or {}).items():
                remains[name] = remains.get(name, 0) + int(count)
        proof["remains"] = {**proof.get("remains", {}), "counts": remains}
        proof["status"] = _status([s.get("skipped") for s in sessions])
        self._write(proof)


def _proof(
    erasure_id: str,
    identity: str,
    by: str,
    capacity_: str,
    now: float,
    result: ErasureResult,
    exports: list[dict[str, Any]],
    *,
    keys: dict[str, Any],
    connections_closed: int = 0,
    nodes_told: int = 0,
    clubs_left: list[str] | None = None,
    ledger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An erasure's proof (docs/data-rights.md): the erasing node's, or another node's part of it."""
    return {
        "version": PROOF_VERSION,
        "erasure_id": erasure_id,
        "identity": identity,
        "by": by,
        "as": capacity_,
        "at": now,
        "status": _status([s.skipped for s in result.sessions]),
        "keys": keys,
        "connections_closed": connections_closed,
        "nodes_told": nodes_told,
        "clubs_left": clubs_left or [],
        "sessions": [s.to_dict() for s in result.sessions if s.changed or s.skipped],
        "exports_queued": exports,
        "ledger": ledger,
        "remains": _remains(result),
    }


def _status(skipped: list[str | None]) -> str:
    """``pending``: a session waits for its recording to stop; ``incomplete``: one could not be
    erased (its ``skipped`` says why: erase again once that is fixed); else ``done``."""
    if "recording" in skipped:
        return "pending"
    return "incomplete" if any(skipped) else "done"


def _remains(result: ErasureResult) -> dict[str, Any]:
    """What is left of the person, said plainly (docs/recording.md, "Erasure")."""
    return {
        "counts": result.remains(),
        "statement": (
            "Their comments, questions and quiz answers are tombstones without text or author; their "
            "ballots stay in the anonymous totals of polls and quizzes (counts), their questions' "
            "votes stay; their consent decisions stay in each session's ledger without identity, name "
            "or participant id (decision, scopes, time, and the entry's former hash); the people "
            "ledger keeps this erasure's record (identity, ids, hashes, counts)."
        ),
    }
