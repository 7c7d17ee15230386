"""Clubs in the shared backend: the I/O shell around ``rooms.clubs``.

Each club is one stored document (``Club.to_builtins`` in msgpack) with a version. A change is a
read-modify-write: ``update`` loads the club, applies a pure function to it and saves it only if
nobody saved meanwhile (``Backend.save_club``'s compare-and-set); on a ``Conflict`` it loads again
and applies the function again, a few times. A function that changes nothing saves nothing, so a
member joining again costs one read. Time and invite codes are made here, never in ``rooms``.

Refusals are the domain's errors (``rooms.clubs``: ``ClubNotFound``, ``ClubPrivate``,
``InviteInvalid``...); the store's own failures are ``BackendError``s (``Conflict`` after the last
attempt, ``BackendUnavailable``).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable
from typing import TypeVar

import msgspec

from rooms.clubs import (
    Club,
    ClubError,
    ClubExists,
    ClubNotFound,
    InvalidClubState,
    Invite,
    Member,
    MemberRole,
)
from server.auth import Claims, Forbidden
from server.backend import Backend, Conflict

__all__ = ["ClubStore", "new_club_id", "new_invite_code"]

T = TypeVar("T")

ATTEMPTS = 5  # saves tried on conflicts before giving up (Conflict): contention is rare, bursts short


def new_invite_code() -> str:
    """96 random bits, URL-safe: an invite link cannot be guessed."""
    return secrets.token_urlsafe(12)


def new_club_id() -> str:
    return "club-" + secrets.token_hex(6)


class ClubStore:
    """Clubs shared by every node through ``backend``; ``clock`` stamps joins, invites and expiries."""

    def __init__(
        self,
        backend: Backend,
        clock: Callable[[], float] = time.time,
        *,
        attempts: int = ATTEMPTS,
        new_code: Callable[[], str] = new_invite_code,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, not {attempts}")
        self.backend = backend
        self.clock = clock
        self.attempts = attempts
        self.new_code = new_code

    # --- reading and writing ------------------------------------------------------------------

    async def get(self, club_id: str) -> Club:
        """The club as stored now (ClubNotFound)."""
        club, _ = await self._load(club_id)
        return club

    async def ids(self) -> list[str]:
        """Every club's id, sorted."""
        return await self.backend.list_clubs()

    async def create(
        self, club_id: str | None, name: str, private: bool, recording_retention_days: int | None = None
    ) -> Club:
        """A new club with no members (ClubExists if the id is taken; a random id when None)."""
        club = Club(
            club_id or new_club_id(),
            name,
            private,
            self.clock(),
            recording_retention_days=recording_retention_days,
        )
        try:
            await self.backend.save_club(club.id, _encode(club), expected_version=None)
        except Conflict:
            raise ClubExists(f"club {club.id} exists") from None
        return club

    async def update(self, club_id: str, fn: Callable[[Club], T]) -> T:
        """Apply ``fn`` (pure: it may run once per attempt) to the club and save the result, only if
        nobody saved the club meanwhile; retried on conflicts. ``fn``'s errors propagate, unsaved."""
        for attempt in range(1, self.attempts + 1):
            club, version = await self._load(club_id)
            before = club.to_builtins()
            result = fn(club)
            after = club.to_builtins()
            if after == before:
                return result
            try:
                await self.backend.save_club(club_id, _encode(club), expected_version=version)
            except Conflict:
                if attempt == self.attempts:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))  # desynchronise the writers
                continue
            return result
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _load(self, club_id: str) -> tuple[Club, int]:
        stored = await self.backend.load_club(club_id)
        if stored is None:
            raise ClubNotFound(f"no club {club_id}")
        payload, version = stored
        try:
            data = msgspec.msgpack.decode(payload)
        except msgspec.DecodeError:
            raise InvalidClubState(f"stored club {club_id} is not msgpack") from None
        return Club.from_builtins(data), version

    # --- commands -----------------------------------------------------------------------------

    async def admit(self, club_id: str, identity: str, name: str, invite_code: str | None = None) -> Member:
        """At join time: ``identity`` joins a stage of the club by its link, with the link's
        ``?invite=`` code if any. The member they are (stored); raises ClubNotFound, ClubPrivate or
        InviteInvalid (refuse the join), or a BackendError (the store cannot say: refuse, retry later)."""
        now = self.clock()
        return await self.update(club_id, lambda club: club.admit(identity, name, now, invite_code))

    async def check_join(
        self, club_id: str | None, claims: Claims, name: str, invite_code: str | None
    ) -> Member | None:
        """The join hook: ``admit`` for a stage's club, with refusals as ``Forbidden`` (403, close 4403,
        codes ``club_private``, ``invite_invalid``, ``club_not_found``). None without a club, and for
        platform tokens, which pass without becoming members. BackendErrors propagate."""
        if club_id is None or claims.admin:
            return None
        try:
            return await self.admit(club_id, claims.identity, name, invite_code)
        except ClubError as exc:
            raise Forbidden(exc.code, exc.message) from None

    async def create_invite(
        self, club_id: str, by: str, *, ttl_s: float | None = None, max_uses: int | None = None
    ) -> Invite:
        now = self.clock()
        code = self.new_code()
        return await self.update(
            club_id, lambda club: club.create_invite(by, now, ttl_s, max_uses, code=code)
        )

    async def revoke_invite(self, club_id: str, code: str) -> Invite:
        return await self.update(club_id, lambda club: club.revoke_invite(code))

    async def put_member(
        self, club_id: str, identity: str, name: str | None, role: MemberRole
    ) -> tuple[Member, bool]:
        """Add ``identity`` (``via="added"``) or change their role (and name, when given); True when
        they were not a member before."""
        now = self.clock()

        def put(club: Club) -> tuple[Member, bool]:
            existing = club.members.get(identity)
            new_name = name or (existing.name if existing is not None else identity)
            return club.add_member(identity, new_name, role, now), existing is None

        return await self.update(club_id, put)

    async def remove_member(self, club_id: str, identity: str) -> Member:
        return await self.update(club_id, lambda club: club.remove_member(identity))


def _encode(club: Club) -> bytes:
    return msgspec.msgpack.encode(club.to_builtins())
