"""Data rights, the foundation (issue 15): the people ledger shared by every node, nominees, who may act
for a person, their keys, and the ``person.*`` webhooks' payloads.

One order for all nodes
    The backend's people log (``Backend.people_append``: compare-and-append at an index) decides which
    entry comes next: a node chains its record on the last entry it knows, and appends it at the next
    index only if nobody did first; otherwise it mirrors what the others appended and chains again.
    Every node mirrors the log into its own ``<data dir>/people/ledger.jsonl`` (recording/people.py),
    entry by entry, checking that each remote entry is the one its own chain computes, and signs the
    heads it writes with its key. Before answering anything, a node brings its file up to date with the
    log (``sync``), so an answer (e.g. "this nominee was withdrawn") is never older than the last
    append on any node. When the log holds fewer entries than the file (the embedded backend after a
    restart, a new Redis) the node uploads its entries first, through the same compare-and-append.
    A file and a log that disagree (another deployment's Redis, a file restored from elsewhere) stop
    the people endpoints (``people_diverged``) rather than mixing two histories.

Who may act for a person (``may_act_for``)
    The platform (``admin``); the person, with a person-level token; a nominee in force, with theirs.
    A person-level token is one whose ``sub`` is the identity and that names no stage and no club:
    a stage token is handed to a page, may ride in links (``?access_token=``) and lives as long as a
    session; it opens that stage, not the person's data. Nobody else: not a moderator of a stage the
    person was on, not a stranger.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from recording.keys import KeyStore
from recording.ledger import Entry
from recording.people import Nomination, PeopleLedger, nomination_record, nominations
from recording.signing import NodeKey
from rooms.text import find_bad_text
from server.auth import Claims
from server.backend import Backend

log = logging.getLogger(__name__)

MAX_IDENTITY = 128  # as a token's ``sub`` (server/auth.py)
_APPEND_ATTEMPTS = 16  # compare-and-append races lost in a row before giving up (503)
_READ_BATCH = 1000


class PeopleError(Exception):
    """A refusal of the people endpoints, with an HTTP status and a stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def check_identity(identity: str, what: str = "identity") -> None:
    """An identity as a token's ``sub`` may be: 1-128 characters of valid Unicode, no control ones."""
    if not 0 < len(identity) <= MAX_IDENTITY:
        raise PeopleError(400, "bad_identity", f"the {what} must be 1-{MAX_IDENTITY} characters")
    if find_bad_text(identity) is not None or any(ord(c) < 32 or ord(c) == 127 for c in identity):
        raise PeopleError(400, "bad_identity", f"the {what} holds characters no identity may hold")


def person_level(claims: Claims) -> bool:
    """A token for the person as such: it names no stage and no club (see the module docstring)."""
    return claims.stage is None and claims.club is None


def may_act_for(claims: Claims, identity: str, nominees: Collection[str]) -> bool:
    """Whether ``claims`` may exercise ``identity``'s data rights, given their nominees in force."""
    if claims.admin:
        return True
    if not person_level(claims):
        return False
    return claims.identity == identity or claims.identity in nominees


def capacity(claims: Claims, identity: str) -> str:
    """In what capacity a caller acts, for the ledger's ``as``."""
    if claims.admin:
        return "platform"
    return "person" if claims.identity == identity else "nominee"


# --- the person.* webhooks' payloads (docs/webhooks.md) ---------------------------------------------


def nominee_changed_payload(entry: Entry) -> dict[str, Any]:
    """``person.nominee_changed``, from the ledger entry that made the change."""
    record = entry.record
    return {
        "identity": record["identity"],
        "nominee": record["nominee"],
        "change": "granted" if record["type"] == "nomination.granted" else "withdrawn",
        "by": record["by"],
        "as": record["as"],
        "at": record["at"],
        "ledger_index": entry.index,
        "ledger_hash": entry.hash,
    }


def erased_payload(
    identity: str,
    *,
    at: float,
    by: str,
    sessions: list[dict[str, str]],
    keys_destroyed: list[str],
    entry: Entry,
    report: str,
) -> dict[str, Any]:
    """``person.erased``: the person's data is gone (sessions touched, keys destroyed, the erasure's
    ledger entry and where its proof report is), so the platform erases its copies too."""
    return {
        "identity": identity,
        "at": at,
        "by": by,
        "sessions": [{"stage_id": s["stage_id"], "session_id": s["session_id"]} for s in sessions],
        "keys_destroyed": list(keys_destroyed),
        "ledger_index": entry.index,
        "ledger_hash": entry.hash,
        "report": report,
    }


def corrected_payload(
    identity: str, *, at: float, by: str, fields: list[str], entry: Entry
) -> dict[str, Any]:
    """``person.corrected``: which fields were corrected (names, not values: receivers fetch the
    current values from their own records or the platform), and the ledger entry."""
    return {
        "identity": identity,
        "at": at,
        "by": by,
        "fields": sorted(fields),
        "ledger_index": entry.index,
        "ledger_hash": entry.hash,
    }


def exported_payload(
    identity: str, *, at: float, by: str, export_id: str, size_bytes: int, sha256: str, entry: Entry
) -> dict[str, Any]:
    """``person.exported``: an access export was handed out (to whom, how big, its digest)."""
    return {
        "identity": identity,
        "at": at,
        "by": by,
        "export_id": export_id,
        "size_bytes": size_bytes,
        "sha256": sha256,
        "ledger_index": entry.index,
        "ledger_hash": entry.hash,
    }


# --- the shell -------------------------------------------------------------------------------------


class People:
    """The node's side of the people ledger (see the module docstring), and the people's key store."""

    def __init__(
        self,
        backend: Backend,
        directory: Path,
        signing_key: Callable[[], NodeKey],
        keys: KeyStore,
        emit: Callable[[str, dict[str, Any]], None],
        clock: Callable[[], float],
    ) -> None:
        self.backend = backend
        self.directory = directory
        self.keys = keys
        self._signing_key = signing_key
        self._emit = emit
        self._clock = clock
        self._ledger: PeopleLedger | None = None
        self._lock = asyncio.Lock()  # one sync or append at a time in this process

    async def _open(self) -> PeopleLedger:
        if self._ledger is None:
            self._ledger = await asyncio.to_thread(PeopleLedger, self.directory, self._signing_key())
        return self._ledger

    async def _sync(self, ledger: PeopleLedger) -> None:
        """Bring the file and the backend's log to the same entries (under ``_lock`` and the file lock)."""
        for _ in range(_APPEND_ATTEMPTS):
            await asyncio.to_thread(ledger.refresh)
            local = ledger.count
            remote = await self.backend.people_count()
            common = min(local, remote)
            if common:
                ((_, payload),) = await self.backend.people_read(common - 1, 1)
                if _hash(payload) != ledger.entries[common - 1].hash:
                    raise PeopleError(
                        503,
                        "people_diverged",
                        f"the people ledger on this node and the shared one differ at entry {common - 1}",
                    )
            if remote < local:  # the log is behind this file (an embedded backend after a restart)
                if not await self._upload(ledger, remote):
                    continue  # someone appended meanwhile: look again
            elif remote > local:
                await self._mirror(ledger, local)
            return
        raise PeopleError(503, "people_busy", "the people ledger is being appended to by many nodes")

    async def _upload(self, ledger: PeopleLedger, start: int) -> bool:
        for entry in ledger.entries[start:]:
            if not await self.backend.people_append(entry.index, entry.line().encode("utf-8")):
                return False
        return True

    async def _mirror(self, ledger: PeopleLedger, start: int) -> None:
        while True:
            batch = await self.backend.people_read(start, _READ_BATCH)
            if not batch:
                return
            saved = ledger.count, ledger.head
            prepared = []
            for _, payload in batch:
                try:
                    remote = _parse(payload)
                    entry = ledger.prepare(remote.record)
                except (ValueError, KeyError, TypeError):
                    ledger.rollback(*saved)
                    raise PeopleError(
                        503,
                        "people_diverged",
                        "the shared people ledger holds an entry this node cannot read",
                    ) from None
                if entry.hash != remote.hash:
                    ledger.rollback(*saved)
                    raise PeopleError(
                        503,
                        "people_diverged",
                        f"the shared people ledger's entry {remote.index} does not chain",
                    )
                prepared.append(entry)
            await asyncio.to_thread(ledger.write, prepared, self._clock())
            start += len(batch)

    async def entries(self) -> list[Entry]:
        """Every entry, the file brought up to date with every node's appends first."""
        async with self._lock:
            ledger = await self._open()
            fd = await asyncio.to_thread(ledger.acquire)
            try:
                await self._sync(ledger)
                return list(ledger.entries)
            finally:
                await asyncio.to_thread(ledger.release, fd)

    async def append(
        self, record: dict[str, Any], check: Callable[[list[Entry]], None] | None = None
    ) -> Entry:
        """Append ``record`` once, in the one order of all nodes; returns its entry once it is in the
        shared log and fsynced in this node's file. ``check`` sees every entry before it, each time the
        append is tried, and may refuse (raise): a condition such as "not nominated yet" then holds
        at the record's place in the order, whichever node appends what meanwhile."""
        async with self._lock:
            ledger = await self._open()
            fd = await asyncio.to_thread(ledger.acquire)
            try:
                for _ in range(_APPEND_ATTEMPTS):
                    await self._sync(ledger)
                    if check is not None:
                        check(ledger.entries)
                    saved = ledger.count, ledger.head
                    entry = ledger.prepare(record)
                    try:
                        landed = await self.backend.people_append(entry.index, entry.line().encode("utf-8"))
                    except BaseException:
                        ledger.rollback(*saved)
                        raise
                    if landed:
                        await asyncio.to_thread(ledger.write, [entry], self._clock())
                        return entry
                    ledger.rollback(*saved)
            finally:
                await asyncio.to_thread(ledger.release, fd)
        raise PeopleError(503, "people_busy", "the people ledger is being appended to by many nodes")

    async def nominees(self, identity: str) -> dict[str, Nomination]:
        return nominations(await self.entries()).get(identity, {})

    async def may_act_for(self, claims: Claims, identity: str) -> bool:
        """``may_act_for`` with the nominees in force now (the platform and the person need no read)."""
        if claims.admin or (person_level(claims) and claims.identity == identity):
            return True
        if not person_level(claims):
            return False
        return claims.identity in await self.nominees(identity)

    async def nominate(self, claims: Claims, identity: str, nominee: str) -> Entry:
        check_identity(identity)
        check_identity(nominee, "nominee")
        self._require_person_or_platform(claims, identity)
        if nominee == identity:
            raise PeopleError(400, "self_nomination", "a person cannot nominate themselves")

        def not_yet(entries: list[Entry]) -> None:
            if nominee in nominations(entries).get(identity, {}):
                raise PeopleError(
                    409, "already_nominated", f"{nominee!r} is already a nominee of {identity!r}"
                )

        who = capacity(claims, identity)
        record = nomination_record(
            "nomination.granted", identity, nominee, claims.identity, who, self._clock()
        )
        entry = await self.append(record, not_yet)
        self._emit("person.nominee_changed", nominee_changed_payload(entry))
        return entry

    async def withdraw(self, claims: Claims, identity: str, nominee: str) -> Entry:
        """Withdraw a nomination: the person, the platform, or the nominee themselves (stepping down)."""
        check_identity(identity)
        check_identity(nominee, "nominee")
        stepping_down = person_level(claims) and claims.identity == nominee and not claims.admin
        if not stepping_down:
            self._require_person_or_platform(claims, identity)

        def in_force(entries: list[Entry]) -> None:
            if nominee not in nominations(entries).get(identity, {}):
                raise PeopleError(404, "not_nominated", f"{nominee!r} is not a nominee of {identity!r}")

        who = "nominee" if stepping_down else capacity(claims, identity)
        record = nomination_record(
            "nomination.withdrawn", identity, nominee, claims.identity, who, self._clock()
        )
        entry = await self.append(record, in_force)
        self._emit("person.nominee_changed", nominee_changed_payload(entry))
        return entry

    async def list_nominees(self, claims: Claims, identity: str) -> dict[str, Nomination]:
        check_identity(identity)
        if not await self.may_act_for(claims, identity):
            raise _refusal(claims, identity)
        return await self.nominees(identity)

    @staticmethod
    def _require_person_or_platform(claims: Claims, identity: str) -> None:
        if claims.admin or (person_level(claims) and claims.identity == identity):
            return
        raise _refusal(claims, identity, nominees_may=False)


def _refusal(claims: Claims, identity: str, *, nominees_may: bool = True) -> PeopleError:
    if claims.identity == identity and not person_level(claims):
        return PeopleError(
            403,
            "person_token_required",
            "this needs a person-level token (no stage, no club) or a platform token",
        )
    who = "the person, a nominee of theirs or the platform" if nominees_may else "the person or the platform"
    return PeopleError(403, "not_allowed", f"only {who} may do this")


def _hash(payload: bytes) -> str | None:
    """The hash a shared entry claims (None when it is no entry: then it matches nothing)."""
    try:
        return _parse(payload).hash
    except (ValueError, KeyError, TypeError):
        return None


def _parse(payload: bytes) -> Entry:
    data = json.loads(payload)
    return Entry(int(data["index"]), str(data["prev"]), dict(data["record"]), str(data["hash"]))


__all__ = [
    "People",
    "PeopleError",
    "capacity",
    "check_identity",
    "corrected_payload",
    "erased_payload",
    "exported_payload",
    "may_act_for",
    "nominee_changed_payload",
    "person_level",
]
