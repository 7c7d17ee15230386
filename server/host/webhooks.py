"""Signed webhooks: stage and participant events, and finished recordings, POSTed to receivers.

The rules are plain functions (``sign``, ``verify``, ``encode_event``, ``classify``, ``backoff_delay``,
``parse_retry_after``); ``Webhooks`` is the asyncio shell: one bounded queue and one worker task per
receiver. See docs/webhooks.md for what receivers get and how they check it.

Policy
    Per receiver, in emit order, head of line: an event that fails is retried (timeouts, connection
    errors, 408, 429, 5xx; with exponential backoff and jitter, or the receiver's Retry-After) before
    the events behind it are sent, so a receiver never sees ``participant.left`` before its
    ``participant.joined``. Other statuses (4xx, 3xx) are a receiver refusing the event: not retried.
    After ``max_attempts`` the event is given up. Delivery is at least once (a receiver that timed out
    may have processed the event): receivers dedupe on ``Medstage-Delivery``.
    A receiver's queue holds ``queue_limit`` events behind the one being delivered; beyond it the
    oldest is dropped. Receivers never wait on each other, and ``emit`` never waits on any of them.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import msgspec
from prometheus_client import Counter

from media.tasks import OwnedTasks
from server.config import Config
from server.metrics import REGISTRY

log = logging.getLogger(__name__)

EVENT_TYPES = frozenset(
    {
        "stage.started",
        "stage.ended",
        "participant.joined",
        "participant.left",
        "recording.ready",
        "recording.exported",
        "recording.deleted",
        # Data rights (issue 15; payloads built in server/host/people.py): only nominee_changed is sent
        # yet, the others by the erasure, correction and access export to come.
        "person.erased",
        "person.corrected",
        "person.exported",
        "person.nominee_changed",
    }
)
SIGNATURE_TOLERANCE_S = 300.0  # what docs/webhooks.md tells receivers to accept
USER_AGENT = "medstage-webhooks/1"
_LOG_BODY_BYTES = 200  # of a failed response, in the log: receivers often say why they refused
_LOG_DROPS_EVERY = 1000

delivered = Counter(
    "medstage_webhooks_delivered", "Webhook events a receiver accepted (2xx)", registry=REGISTRY
)
failed_attempts = Counter(
    "medstage_webhooks_failed_attempts",
    "Webhook POSTs that failed, by reason (timeout, connection, status)",
    ["reason"],
    registry=REGISTRY,
)
dropped = Counter(
    "medstage_webhooks_dropped",
    "Webhook events not delivered, by reason (queue_full, rejected, gave_up, closed, invalid, error)",
    ["reason"],
    registry=REGISTRY,
)


# --- the rules -----------------------------------------------------------------------------------


def sign(secret: str, body: bytes, t: int) -> str:
    """The ``Medstage-Signature`` header: ``t=<t>,v1=<hex HMAC-SHA256 of "<t>." + body>``."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def verify(
    secret: str, header: str, body: bytes, now: float, tolerance_s: float = SIGNATURE_TOLERANCE_S
) -> bool:
    """True if ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_s`` of ``now``
    (an old timestamp is a replay). Several ``v1=`` are accepted, any one matching."""
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            t = int(value)
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates or abs(now - t) > tolerance_s:
        return False
    expected = sign(secret, body, t).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected.encode(), c.encode()) for c in candidates)


def encode_event(event_id: str, event: str, created_at: float, node: str, data: dict[str, Any]) -> bytes:
    """The body every receiver gets for one event (raises TypeError if ``data`` is not JSON)."""
    return msgspec.json.encode(
        {"id": event_id, "type": event, "created_at": created_at, "node": node, "data": data}
    )


Verdict = Literal["delivered", "retry", "rejected"]


def classify(status: int) -> Verdict:
    """2xx delivered; 408, 429 and 5xx worth retrying; anything else is the receiver saying no."""
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 429) or status >= 500:
        return "retry"
    return "rejected"


def backoff_delay(attempt: int, base_s: float, max_s: float, jitter: float) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): ``base_s`` doubling per attempt up to
    ``max_s``, then a random half of it taken off (``jitter`` in [0, 1)) so receivers that come back
    are not hit by every node at once."""
    nominal = min(max_s, base_s * 2.0 ** min(attempt - 1, 62))
    return nominal * (0.5 + 0.5 * jitter)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a Retry-After header (RFC 9110 §10.2.3: delay-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, said without a zone
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def redact(url: str) -> str:
    """A receiver's URL as logged: without credentials or query (either may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


# --- the shell -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    """One event on its way: the body is encoded once and shared by every receiver."""

    id: str
    type: str
    body: bytes


@dataclass(eq=False)
class _Receiver:
    url: str
    label: str
    queue: deque[Pending] = field(default_factory=deque)
    current: Pending | None = None  # being delivered (or waiting to be retried)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # nothing queued nor in flight
    drops: int = 0


class Webhooks:
    """Delivers events to every receiver URL, signed with ``secret``; see the module docstring for
    the policy. ``emit`` may be called before ``start``: events wait in the queues."""

    def __init__(
        self,
        urls: Sequence[str],
        secret: str,
        *,
        node_id: str = "",
        timeout_s: float = 5.0,
        max_attempts: int = 8,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        queue_limit: int = 10_000,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if urls and not secret:
            raise ValueError("webhooks need a secret to sign with")
        if timeout_s <= 0 or max_attempts < 1 or backoff_base_s < 0 or backoff_max_s < backoff_base_s:
            raise ValueError("timeout_s > 0, max_attempts >= 1, 0 <= backoff_base_s <= backoff_max_s")
        if queue_limit < 1:
            raise ValueError("queue_limit >= 1")
        self.secret = secret
        self.node_id = node_id
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.queue_limit = queue_limit
        self.clock = clock
        self.jitter = jitter
        self._receivers = [_Receiver(url, redact(url)) for url in urls]
        for receiver in self._receivers:
            receiver.idle.set()
        self._tasks = OwnedTasks(log, "webhooks")
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @classmethod
    def from_config(cls, config: Config, node_id: str) -> Webhooks:
        return cls(
            config.webhook_urls,
            config.webhook_secret,
            node_id=node_id,
            timeout_s=config.webhook_timeout_s,
            max_attempts=config.webhook_max_attempts,
        )

    def backlog(self) -> int:
        """Events not yet delivered, summed over receivers (each receiver counts its own copy)."""
        return sum(len(r.queue) + (r.current is not None) for r in self._receivers)

    # --- producing -------------------------------------------------------------------------------

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queue ``event`` for every receiver. Never blocks, never raises: an unknown type or data
        that is not JSON is logged and counted (``invalid``), a full queue drops its oldest event."""
        if not self._receivers or self._closed:
            return
        try:
            if event not in EVENT_TYPES:
                raise ValueError(f"unknown webhook event type {event!r}")
            event_id = "evt-" + secrets.token_hex(12)
            body = encode_event(event_id, event, self.clock(), self.node_id, data)
        except (TypeError, ValueError, msgspec.EncodeError) as exc:
            log.error("webhook event not sent", extra={"event_type": event, "error": str(exc)})
            dropped.labels("invalid").inc(len(self._receivers))
            return
        pending = Pending(event_id, event, body)
        for receiver in self._receivers:
            if len(receiver.queue) >= self.queue_limit:
                self._drop_oldest(receiver)
            receiver.queue.append(pending)
            receiver.idle.clear()
            receiver.wake.set()

    def _drop_oldest(self, receiver: _Receiver) -> None:
        lost = receiver.queue.popleft()
        dropped.labels("queue_full").inc()
        receiver.drops += 1
        if receiver.drops % _LOG_DROPS_EVERY == 1:  # the first, then every thousandth
            log.warning(
                "webhook queue full, oldest event dropped",
                extra={
                    "receiver": receiver.label,
                    "event_id": lost.id,
                    "event_type": lost.type,
                    "dropped": receiver.drops,
                    "queue_limit": self.queue_limit,
                },
            )

    # --- lifetime --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP client and start one worker per receiver."""
        if self._session is not None or not self._receivers or self._closed:
            return
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT},
            cookie_jar=aiohttp.DummyCookieJar(),
            connector=aiohttp.TCPConnector(limit=0),  # one request in flight per receiver anyway
        )
        for receiver in self._receivers:
            self._tasks.supervise(f"worker for {receiver.label}", functools.partial(self._work, receiver))

    async def close(self, drain_s: float = 0.0) -> None:
        """Stop: wait at most ``drain_s`` for the queues to empty, then cancel what is left (counted
        as dropped, ``closed``) and close the HTTP client. Returns promptly even mid-retry."""
        if drain_s > 0 and len(self._tasks):
            try:
                async with asyncio.timeout(drain_s):
                    for receiver in self._receivers:
                        await receiver.idle.wait()
            except TimeoutError:
                pass
        self._closed = True
        await self._tasks.cancel_all()
        for receiver in self._receivers:
            left = len(receiver.queue) + (receiver.current is not None)
            if left:
                dropped.labels("closed").inc(left)
                log.warning(
                    "webhooks closed with events undelivered",
                    extra={"receiver": receiver.label, "undelivered": left},
                )
            receiver.queue.clear()
            receiver.current = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- delivering ------------------------------------------------------------------------------

    async def _work(self, receiver: _Receiver) -> None:
        while True:
            if not receiver.queue:
                receiver.idle.set()
                receiver.wake.clear()
                await receiver.wake.wait()
                continue
            pending = receiver.current = receiver.queue.popleft()
            try:
                await self._deliver(receiver, pending)
            except Exception:
                log.exception(
                    "webhook delivery failed", extra={"receiver": receiver.label, "event_id": pending.id}
                )
                dropped.labels("error").inc()
            receiver.current = None

    async def _deliver(self, receiver: _Receiver, pending: Pending) -> None:
        for attempt in range(1, self.max_attempts + 1):
            verdict, reason, retry_after = await self._attempt(receiver, pending)
            if verdict == "delivered":
                delivered.inc()
                return
            context = {
                "receiver": receiver.label,
                "event_id": pending.id,
                "event_type": pending.type,
                "attempt": attempt,
                "max_attempts": self.max_attempts,
                "reason": reason,
            }
            if verdict == "rejected":
                log.warning("webhook refused by receiver, not retried", extra=context)
                dropped.labels("rejected").inc()
                return
            if attempt == self.max_attempts:
                log.error("webhook given up", extra=context)
                dropped.labels("gave_up").inc()
                return
            if retry_after is not None:
                delay = min(retry_after, self.backoff_max_s)
            else:
                delay = backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s, self.jitter())
            log.warning("webhook attempt failed", extra={**context, "retry_in_s": round(delay, 3)})
            await asyncio.sleep(delay)

    async def _attempt(self, receiver: _Receiver, pending: Pending) -> tuple[Verdict, str, float | None]:
        """One POST: its verdict, the reason it failed (for the log) and the receiver's Retry-After."""
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            "Medstage-Event": pending.type,
            "Medstage-Delivery": pending.id,
            # Signed per attempt, so a retry minutes later is still within the receiver's tolerance.
            "Medstage-Signature": sign(self.secret, pending.body, int(self.clock())),
        }
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._session.post(
                    receiver.url, data=pending.body, headers=headers, allow_redirects=False
                ) as response:
                    verdict = classify(response.status)
                    if verdict == "delivered":
                        return verdict, "", None
                    failed_attempts.labels("status").inc()
                    reason = f"HTTP {response.status}"
                    said = await response.content.read(_LOG_BODY_BYTES)
                    if said:
                        reason += ": " + said.decode("utf-8", "replace")
                    retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock())
                    return verdict, reason, retry_after
        except TimeoutError:
            failed_attempts.labels("timeout").inc()
            return "retry", f"no answer within {self.timeout_s:g} s", None
        except aiohttp.ClientError as exc:
            failed_attempts.labels("connection").inc()
            return "retry", f"{type(exc).__name__}: {exc}", None
