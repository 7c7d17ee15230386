"""The backend interface: everything nodes share (see the package docstring for the design).

Every operation but ``send`` is idempotent, so a caller (or the Redis client) may retry one whose reply
was lost: a retried claim, append, rate-limit hit or heartbeat gives the answer the first attempt would
have. ``send`` is at most once: it is never retried, a message is delivered once or lost.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Collection
from dataclasses import dataclass
from types import TracebackType
from typing import Any

DEFAULT_MAX_LOG_ENTRIES = 100_000
# Unread messages an inbox holds before it fails (BackendUnavailable), as Redis drops a subscriber
# past its output buffer limit: a stalled reader costs bounded memory, and learns that it lost some.
DEFAULT_INBOX_LIMIT = 10_000


class BackendError(Exception):
    """Base of the errors a backend raises on purpose (never a driver's own exception type)."""


class BackendUnavailable(BackendError):
    """The shared store cannot be reached right now (Redis down, connection lost); retry later."""


class BackendClosed(BackendError):
    """The backend was closed by its owner."""


class OutOfOrder(BackendError):
    """An append whose ``seq`` is not above the log's last one (and is not a repeat of that entry)."""


class Conflict(BackendError):
    """A compare-and-set (``save_club``) whose expected version is no longer the stored one: someone
    else wrote first. Load again, apply the change again, save again."""


class LeaseLost(BackendError):
    """A fenced write (append, save_state) by a node that no longer holds the stage's lease: it must
    stop writing."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A node's hold on a stage. ``token`` is unique per claim, so an old lease never matches a new one."""

    stage_id: str
    node_id: str
    node_url: str
    token: str
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class Owner:
    """Who hosts a stage's media, and until when (unix seconds, unless renewed)."""

    node_id: str
    node_url: str
    expires_at: float


class Inbox(abc.ABC):
    """The messages sent to one node (``Backend.open_inbox``): an async iterator of ``bytes``.

    Messages from one sender come in the order its sends returned, each at most once. Iteration raises
    BackendUnavailable when the subscription is lost (connection dropped, Redis restarted, or more than
    the backend's ``inbox_limit`` messages left unread): messages sent meanwhile are lost, so the caller
    resynchronises by other means and opens a new inbox; messages received before the loss are yielded
    first. Iteration ends (StopAsyncIteration) once the inbox or its backend is closed, dropping what
    was not read. One task reads an inbox at a time. Close it with ``aclose`` or ``async with``.
    """

    def __aiter__(self) -> Inbox:
        return self

    @abc.abstractmethod
    async def __anext__(self) -> bytes: ...

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Unsubscribe and release the connection; a reader waiting in ``__anext__`` stops. Idempotent."""

    async def __aenter__(self) -> Inbox:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Backend(abc.ABC):
    """Stage registry, presence, event log, stage state, clubs, node messaging, rate limits, bans and
    revocations, shared by all nodes."""

    # --- stage registry ------------------------------------------------------------------------

    @abc.abstractmethod
    async def claim(self, stage_id: str, node_id: str, node_url: str, ttl_ms: int) -> Lease | None:
        """Take the stage for ``ttl_ms`` if nobody holds it (``SET NX PX``); None if someone does,
        this node included: a holder renews, it does not claim again."""

    @abc.abstractmethod
    async def renew(self, lease: Lease) -> bool:
        """Extend the lease by its ``ttl_ms``; False if it was lost (expired, or another claim since)."""

    @abc.abstractmethod
    async def release(self, lease: Lease) -> bool:
        """Give the stage up, only if this lease still holds it (compare-and-delete)."""

    @abc.abstractmethod
    async def owner(self, stage_id: str) -> Owner | None:
        """The node holding the stage's lease, or None."""

    # --- presence ------------------------------------------------------------------------------

    @abc.abstractmethod
    async def heartbeat(self, node_id: str, ttl_ms: int, url: str = "") -> bool:
        """Keep this node's presence entries alive for ``ttl_ms``, and publish its public ``url`` (see
        ``node_urls``). False when the node was not alive (first beat, or it lapsed): its entries may
        have been dropped, so it joins its people again."""

    @abc.abstractmethod
    async def nodes(self) -> set[str]:
        """Every node whose heartbeat is alive now (to tell them all something, e.g. a revocation)."""

    @abc.abstractmethod
    async def node_urls(self) -> dict[str, str]:
        """Every live node's public URL, by node id (a node that beat without one is left out): where
        a client whose node died may go (``joined.nodes``, docs/protocol.md)."""

    @abc.abstractmethod
    async def alive_nodes(self, node_ids: Collection[str]) -> set[str]:
        """Those of ``node_ids`` whose heartbeat is alive now (one round trip)."""

    @abc.abstractmethod
    async def presence_join(
        self, stage_id: str, participant_id: str, node_id: str, info: dict[str, Any]
    ) -> None:
        """Record that ``participant_id`` is on ``node_id`` (replacing any entry for them). The entry
        counts while ``node_id``'s heartbeat is alive: beat before joining."""

    @abc.abstractmethod
    async def presence_leave(self, stage_id: str, participant_id: str, node_id: str) -> bool:
        """Remove the entry if it is still ``node_id``'s (a person who moved to another node stays)."""

    @abc.abstractmethod
    async def presence(self, stage_id: str) -> dict[str, dict[str, Any]]:
        """Everyone present on nodes whose heartbeat is alive: participant id -> info."""

    # --- event log -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def append(self, stage_id: str, seq: int, payload: bytes, *, lease: Lease | None = None) -> None:
        """Add ``(seq, payload)`` to the stage's log. ``seq`` must be above the last one (OutOfOrder);
        repeating an entry still in the log, identically, is accepted and changes nothing (a retry after
        a lost reply). With ``lease``, the append happens only while that lease holds the stage
        (LeaseLost), atomically: a node that lost its lease cannot write even one more event."""

    @abc.abstractmethod
    async def read(self, stage_id: str, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """At most ``limit`` entries with ``seq > after_seq``, in order."""

    @abc.abstractmethod
    async def last_seq(self, stage_id: str) -> int:
        """The highest ``seq`` in the log, 0 when it is empty."""

    @abc.abstractmethod
    def subscribe(self, stage_id: str, after_seq: int = 0) -> AsyncGenerator[tuple[int, bytes], None]:
        """Every entry after ``after_seq``, then live ones as they are appended, for ever.

        Resumes from the last entry it yielded when its connection is lost (retrying for as long as
        the store is unavailable), so nothing is skipped or repeated; ends when the backend closes;
        any other BackendError ends it with that error. A consumer that sees ``seq`` jump by more than one
        missed entries that were trimmed. Close it with ``contextlib.aclosing`` or by cancelling."""

    # --- stage state -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def save_state(self, stage_id: str, payload: bytes, *, lease: Lease) -> None:
        """Replace the stage's snapshot with ``payload``, only while ``lease`` holds the stage (LeaseLost
        otherwise, and nothing is written), atomically like a fenced append. Kept until overwritten."""

    @abc.abstractmethod
    async def load_state(self, stage_id: str) -> bytes | None:
        """The stage's last saved snapshot, or None; it outlives the lease that wrote it."""

    # --- clubs ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def load_club(self, club_id: str) -> tuple[bytes, int] | None:
        """The club's stored payload and its version (1 for the first save), or None."""

    @abc.abstractmethod
    async def save_club(self, club_id: str, payload: bytes, *, expected_version: int | None) -> int:
        """Store ``payload`` if the club's version is still ``expected_version`` (None: the club must
        not exist yet), atomically; returns the new version. Conflict otherwise, and nothing is
        written. Repeating a save that succeeded, identically, returns its version (a retry after a
        lost reply is not a conflict)."""

    @abc.abstractmethod
    async def list_clubs(self) -> list[str]:
        """Every stored club's id, sorted."""

    # --- node messaging ------------------------------------------------------------------------

    @abc.abstractmethod
    async def send(self, node_id: str, payload: bytes) -> None:
        """Deliver ``payload`` to every inbox open for ``node_id`` now, at most once; with none open
        it is dropped. Never retried (a retry could deliver twice)."""

    @abc.abstractmethod
    async def open_inbox(self, node_id: str) -> Inbox:
        """Subscribe to ``node_id``'s messages; returns once the subscription is active, so a message
        sent after this returns is received (see ``Inbox`` for what ends one)."""

    # --- rate limits ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def hit(self, key: str, window_s: float, limit: int) -> tuple[bool, float]:
        """Count one action under ``key``: at most ``limit`` in any ``window_s`` (sliding window).
        Refused hits are not counted; ``retry_after`` (seconds) says when the next one may pass."""

    # --- bans and revocations ------------------------------------------------------------------

    @abc.abstractmethod
    async def ban(self, stage_id: str, identity: str, reason: str) -> None:
        """The identity may not join this stage again."""

    @abc.abstractmethod
    async def is_banned(self, stage_id: str, identity: str) -> bool: ...

    @abc.abstractmethod
    async def revoke(self, identity: str) -> None:
        """The identity's credentials are refused everywhere from now on."""

    @abc.abstractmethod
    async def is_revoked(self, identity: str) -> bool: ...

    # --- recording evidence ----------------------------------------------------------------------

    @abc.abstractmethod
    async def put_ledger_head(self, stage_id: str, session_id: str, payload: bytes) -> None:
        """Store the latest signed head of a session's consent ledger (bytes made by the caller),
        replacing the one before; kept until deleted, outside every node's disk."""

    @abc.abstractmethod
    async def ledger_head(self, stage_id: str, session_id: str) -> bytes | None:
        """The last head stored for that session, or None."""

    # --- people ledger (issue 15) ---------------------------------------------------------------

    @abc.abstractmethod
    async def people_append(self, index: int, payload: bytes) -> bool:
        """Append ``payload`` as entry ``index`` (0-based) of the people ledger if the log holds
        exactly ``index`` entries, atomically: True when it did. False when the log holds another
        number (someone else appended first: read, re-chain, try again). Repeating an append that
        landed, identically, is True again (a retry after a lost reply)."""

    @abc.abstractmethod
    async def people_read(self, start: int = 0, limit: int = 1000) -> list[tuple[int, bytes]]:
        """At most ``limit`` entries of the people ledger from index ``start``, in order."""

    @abc.abstractmethod
    async def people_count(self) -> int:
        """How many entries the people ledger holds."""

    # --- lifecycle -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Whether the shared store answers now (for readiness); never raises."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; subscriptions and inboxes end. Further calls raise BackendClosed."""


# --- argument checks shared by the implementations (one place, so both refuse the same things) ---


def check_ttl(ttl_ms: int) -> None:
    if ttl_ms < 1:
        raise ValueError(f"ttl_ms must be at least 1, not {ttl_ms}")


def check_seq(seq: int) -> None:
    if seq < 1:
        raise ValueError(f"seq starts at 1, not {seq}")


def check_inbox_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"inbox_limit must be at least 1, not {limit}")


def check_rate(window_s: float, limit: int) -> None:
    if window_s <= 0 or limit < 1:
        raise ValueError(f"a rate limit needs window_s > 0 and limit >= 1, not {window_s}, {limit}")


def check_index(index: int) -> None:
    if index < 0:
        raise ValueError(f"people ledger indexes start at 0, not {index}")


def check_version(expected_version: int | None) -> None:
    if expected_version is not None and expected_version < 1:
        raise ValueError(f"versions start at 1 (None: not stored yet), not {expected_version}")
